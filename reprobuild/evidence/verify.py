"""`reprobuild verify`: build N times under varied conditions, compare, and name the culprit variations.

load → plan the runs (pure) → build them in parallel → compare each experiment with the control →
when they differ, rebuild with one variation at a time (and once with none) to find the culprits →
explain the differing artifacts with `compare`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprobuild.backends import Backend, Perturbation, select_backend
from reprobuild.build.orchestrate import BuildOptions, BuildResult, build
from reprobuild.build.parallel import default_jobs, map_ordered
from reprobuild.config.lock import load_lock
from reprobuild.errors import BadInput
from reprobuild.evidence.compare import CompareReport, compare_outputs
from reprobuild.fsutil import remove_tree
from reprobuild.progress import say

# reprotest's names where they overlap, in reprotest's order; `cache` is ours.
ALL_VARIATIONS = ("environment", "build_path", "exec_path", "fileordering", "home", "kernel", "locales", "time",
                  "timezone", "umask", "user_group", "domain_host", "aslr", "num_cpus", "cache")
# The variations that `all` means when nothing else is said.
DEFAULT_VARIATIONS = ("build_path", "time", "timezone", "locales", "umask", "domain_host", "user_group",
                      "environment", "num_cpus", "home", "cache", "exec_path", "fileordering")
UNEXPLAINED = "unexplained"


def parse_vary(spec: str) -> tuple[str, ...]:
    """reprotest's `--vary` syntax: comma-separated `all`, `-all`, `+x`, `-x` or `x`, applied in order."""
    chosen: list[str] = list(DEFAULT_VARIATIONS)
    for raw in [s.strip() for s in spec.split(",") if s.strip()]:
        sign, name = (raw[0], raw[1:]) if raw[0] in "+-@" else ("+", raw)
        if name == "all":
            chosen = [] if sign == "-" else list(DEFAULT_VARIATIONS)
            continue
        if name not in ALL_VARIATIONS:
            import difflib

            guess = difflib.get_close_matches(name, ALL_VARIATIONS, n=1)
            raise BadInput(f"--vary: unknown variation `{name}`" + (f"; did you mean `{guess[0]}`?" if guess else ""),
                           f"variations: {', '.join(ALL_VARIATIONS)}")
        if sign == "-":
            chosen = [v for v in chosen if v != name]
        elif name not in chosen:
            chosen.append(name)
    return tuple(v for v in ALL_VARIATIONS if v in chosen)


def control_perturbation(varied: tuple[str, ...]) -> Perturbation:
    """The control build: the normal build, except that when `num_cpus` is varied it runs on one CPU and
    the varied builds on all of them (as reprotest's control does): the varied build, which may also be
    the cold-cache one, is the expensive one and gets the cores."""
    return Perturbation(name="control", cpus=1 if "num_cpus" in varied else None)


def perturbation(names: tuple[str, ...], label: str, varied: tuple[str, ...] = ()) -> Perturbation:
    """One Perturbation applying every named variation at once, on top of the control of `varied`."""
    p = replace(control_perturbation(varied), name=label)
    env: dict[str, str] = {}
    for name in names:
        if name == "build_path":
            p = replace(p, src="/rb/varied-build-path/with/more/depth/src")
        elif name == "time":
            p = replace(p, faketime="+398d")
        elif name == "timezone":
            env["TZ"] = "RBT-14:45"  # POSIX TZ: UTC+14:45, needs no tzdata
        elif name == "locales":
            p = replace(p, locale="fr_CH.UTF-8")
        elif name == "umask":
            p = replace(p, umask=0o002)
        elif name == "domain_host":
            p = replace(p, hostname="reprobuild-varied-host", domainname="varied.invalid")
        elif name == "user_group":
            p = replace(p, uid=1234, gid=1234)
        elif name == "environment":
            env.update({"REPROBUILD_VARIED": "1", "CAPTURE_ENVIRONMENT": "i_capture_the_environment"})
        elif name == "num_cpus":
            p = replace(p, cpus=None if p.cpus else 1)
        elif name == "home":
            env["HOME"] = "/rb/varied-home"
        elif name == "cache":
            p = replace(p, cold_cache=True)
        elif name == "exec_path":
            p = replace(p, exec_path="/rb/i_capture_the_path")  # appended to each step's own PATH
        elif name == "fileordering":
            p = replace(p, fileordering=True)
    return replace(p, env=env)


@dataclass(frozen=True)
class VerifyOptions:
    build: BuildOptions  # `out` is ignored: runs go to a work dir
    runs: int = 2
    vary: tuple[str, ...] = DEFAULT_VARIATIONS
    keep: Path | None = None  # keep the runs' output dirs here


@dataclass
class VerifyReport:
    reproducible: bool
    runs: int
    variations: list[str]
    skipped: dict[str, str]
    culprits: list[str]
    differences: list[dict[str, Any]]
    digests: dict[str, str]  # artifact -> sha256 of the control run
    backend: str
    hermetic: bool
    run_digests: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"reproducible": self.reproducible, "runs": self.runs, "variations": self.variations,
                "skipped_variations": self.skipped, "differences": self.differences, "culprits": self.culprits,
                "backend": self.backend, "hermetic": self.hermetic,
                "artifacts": [{"path": p, "sha256": d} for p, d in sorted(self.digests.items())]}


def _digests(result: BuildResult) -> dict[str, str]:
    return {a.path: a.sha256 for a in result.artifacts}


def _differing(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def verify(opts: VerifyOptions, backend: Backend | None = None) -> VerifyReport:
    if opts.runs < 2:
        raise BadInput(f"--runs {opts.runs}: verify needs at least 2 runs (a control and an experiment)")
    backend = backend or select_backend(opts.build.backend, say, lock=load_lock(opts.build.lock_path))
    varied = tuple(v for v in opts.vary if backend.supports(v))
    skipped = {v: f"not supported by the {backend.name} backend on this host" for v in opts.vary if v not in varied}
    for name, why in skipped.items():
        say(f"verify: not varying {name}: {why}")
    work = Path(tempfile.mkdtemp(prefix="reprobuild-verify-", dir=opts.keep))
    os.chmod(work, 0o755)
    try:
        return _verify_in(work, opts, backend, varied, skipped)
    finally:
        if opts.keep is None:
            remove_tree(work)


def _verify_in(work: Path, opts: VerifyOptions, backend: Backend, varied: tuple[str, ...],
               skipped: dict[str, str]) -> VerifyReport:
    def run(label: str, p: Perturbation) -> BuildResult:
        return build(replace(opts.build, out=work / label), backend=backend, perturb=p)

    plans = [("run-1-control", control_perturbation(varied))]
    plans += [(f"run-{i}-varied", perturbation(varied, "varied", varied)) for i in range(2, opts.runs + 1)]
    say(f"verify: {opts.runs} builds ({backend.name} backend), varying: {', '.join(varied) or 'nothing'}")
    results = _parallel(plans, run, backend)
    for result in results[1:]:
        for name, why in result.unapplied.items():
            if name not in skipped:
                say(f"verify: {name} was not applied to every step: {why}")
                skipped[name] = f"not applied to every step: {why}"
    control = _digests(results[0])
    differing: set[str] = set()
    pair_dir = None
    for (label, _), result in zip(plans[1:], results[1:], strict=True):
        diff = _differing(control, _digests(result))
        if diff and pair_dir is None:
            pair_dir = work / label
        differing |= diff
    culprits: list[str] = []
    differences: list[dict[str, Any]] = []
    if differing:
        say(f"verify: {len(differing)} artifact(s) differ; rebuilding with one variation at a time")
        singles = [("rerun-nothing-varied", control_perturbation(varied))]
        singles += [(f"only-{v}", perturbation((v,), v, varied)) for v in varied]
        reruns = _parallel(singles, run, backend)
        unexplained = _differing(control, _digests(reruns[0]))
        if unexplained:
            culprits.append(UNEXPLAINED)
        for (_, p), result in zip(singles[1:], reruns[1:], strict=True):
            if _differing(control, _digests(result)) - unexplained:
                culprits.append(p.name)
        if not culprits:
            culprits.append(UNEXPLAINED)  # only the combination of variations reproduces it
        assert pair_dir is not None
        report: CompareReport = compare_outputs(work / "run-1-control", pair_dir)
        differences = [d.to_json() for d in report.differences]
    return VerifyReport(reproducible=not differing, runs=opts.runs, variations=list(varied), skipped=skipped,
                        culprits=culprits, differences=differences, digests=control, backend=backend.name,
                        hermetic=backend.hermetic, run_digests=[_digests(r) for r in results])


def _parallel(plans: list[tuple[str, Perturbation]], run: Any, backend: Backend) -> list[BuildResult]:
    """Build in parallel up to the core count (no backend makes runs wait for each other)."""
    return map_ordered(lambda plan: run(*plan), plans, default_jobs(), backend.cancel)


def render_markdown(report: VerifyReport) -> str:
    verdict = "✅ reproducible" if report.reproducible else "❌ not reproducible"
    lines = [f"### reprobuild verify: {verdict}", "",
             f"{report.runs} builds on the `{report.backend}` backend"
             f"{'' if report.hermetic else ' (not hermetic)'}; varied: {', '.join(report.variations) or 'nothing'}."]
    if report.skipped:
        lines.append(f"Not varied here: {', '.join(sorted(report.skipped))}.")
    if not report.reproducible:
        lines += ["", f"**Culprits:** {', '.join(report.culprits)}", "", "| artifact | causes |", "|---|---|"]
        for d in report.differences:
            causes = "; ".join(f"{c['kind']}: {c['detail']}" for c in d["causes"][:3]) or d["status"]
            escaped = causes.replace("|", "\\|")
            lines.append(f"| `{d['artifact']}` | {escaped} |")
    return "\n".join(lines) + "\n"


def render_text(report: VerifyReport) -> str:
    if report.reproducible:
        return (f"reproducible: {len(report.digests)} artifacts identical over {report.runs} builds "
                f"(varied: {', '.join(report.variations) or 'nothing'})")
    lines = [f"NOT reproducible: {len(report.differences)} artifact(s) differ; culprits: {', '.join(report.culprits)}"]
    for d in report.differences:
        lines.append(f"  {d['artifact']}: {d['status']}")
        for c in d["causes"][:5]:
            lines.append(f"    {c['kind']}: {c['detail']}")
    return "\n".join(lines)

