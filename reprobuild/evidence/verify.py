"""`reprobuild verify`: build N times under varied conditions, compare, and name the culprit variations.

load → plan the runs (pure) → build them in parallel → compare each experiment with the control →
when they differ, rebuild with one variation at a time (and once with none) to find the culprits →
explain the differing artifacts with `compare`.

A varied build that fails while the control succeeds is a result, not an error: the report says which
run failed, under which variations, with the failing step's last lines, and the culprit search names
the variation that alone makes it fail. Only a failing control is an error (the build itself is broken).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprobuild.backends import Backend, Perturbation, leftovers, select_backend
from reprobuild.build.orchestrate import BuildOptions, BuildResult, build, builders_dir_for
from reprobuild.build.parallel import default_jobs, map_ordered
from reprobuild.config.lock import load_lock
from reprobuild.errors import BadInput, ReprobuildError
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
VARIED_HOME = "/rb/varied-home"
FAILURE_TAIL_LINES = 40


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
            # Another path, still an empty and writable home (tools such as Paddle write under $HOME).
            p = replace(p, home=VARIED_HOME)
            env["HOME"] = VARIED_HOME
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


@dataclass(frozen=True)
class RunFailure:
    """A varied build that failed: which run, under which variations, the error and its last lines."""

    run: str
    variations: tuple[str, ...]
    error: str
    output_tail: tuple[str, ...]

    @classmethod
    def of(cls, run: str, variations: tuple[str, ...], exc: ReprobuildError) -> RunFailure:
        first, *rest = str(exc).splitlines() or [""]
        tail = tuple(line.strip() for line in rest if line.strip())[-FAILURE_TAIL_LINES:]
        return cls(run, variations, first, tail)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "variations": list(self.variations), "error": self.error,
                "output_tail": list(self.output_tail)}


@dataclass
class VerifyReport:
    reproducible: bool
    runs: int
    variations: list[str]  # applied to every step of every varied build
    skipped: dict[str, str]  # variation -> why it was not applied (everywhere, or in some steps)
    culprits: list[str]
    differences: list[dict[str, Any]]
    digests: dict[str, str]  # artifact -> sha256 of the control run
    backend: str
    hermetic: bool
    run_digests: list[dict[str, str]] = field(default_factory=list)
    not_applied: dict[str, dict[str, str]] = field(default_factory=dict)  # variation -> step -> why
    failures: list[RunFailure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"reproducible": self.reproducible, "runs": self.runs, "variations": self.variations,
                "skipped_variations": self.skipped, "not_applied": self.not_applied,
                "differences": self.differences, "culprits": self.culprits,
                "failures": [f.to_json() for f in self.failures],
                "backend": self.backend, "hermetic": self.hermetic,
                "artifacts": [{"path": p, "sha256": d} for p, d in sorted(self.digests.items())]}


Plan = tuple[str, Perturbation, tuple[str, ...]]
"""One build of verify to run: its label, its Perturbation and the variations it applies."""


@dataclass(frozen=True)
class _Run:
    """One build of verify: its result, or the error that ended it."""

    label: str
    perturb: Perturbation
    variations: tuple[str, ...]
    result: BuildResult | None
    error: ReprobuildError | None = None


def _digests(result: BuildResult) -> dict[str, str]:
    return {a.path: a.sha256 for a in result.artifacts}


def _differing(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def verify(opts: VerifyOptions, backend: Backend | None = None) -> VerifyReport:
    if opts.runs < 2:
        raise BadInput(f"--runs {opts.runs}: verify needs at least 2 runs (a control and an experiment)")
    backend = backend or select_backend(opts.build.backend, say, lock=load_lock(opts.build.lock_path),
                                        builders_dir=builders_dir_for(opts.build))
    varied = tuple(v for v in opts.vary if backend.supports(v))
    skipped = {v: f"not supported by the {backend.name} backend on this host" for v in opts.vary if v not in varied}
    for name, why in skipped.items():
        say(f"verify: not varying {name}: {why}")
    # Kept (--keep DIR) it is the user's; else it is private, and a later run removes it if this one is killed.
    work = Path(tempfile.mkdtemp(prefix="reprobuild-verify-", dir=opts.keep)) if opts.keep is not None \
        else leftovers.private_dir("reprobuild-verify-")
    os.chmod(work, 0o755)
    try:
        return _verify_in(work, opts, backend, varied, skipped)
    finally:
        if opts.keep is None:
            remove_tree(work)


def _verify_in(work: Path, opts: VerifyOptions, backend: Backend, varied: tuple[str, ...],
               skipped: dict[str, str]) -> VerifyReport:
    def run(plan: Plan) -> _Run:
        label, p, names = plan
        try:
            return _Run(label, p, names, build(replace(opts.build, out=work / label), backend=backend, perturb=p))
        except ReprobuildError as exc:
            return _Run(label, p, names, None, exc)

    plans: list[Plan] = [("run-1-control", control_perturbation(varied), ())]
    plans += [(f"run-{i}-varied", perturbation(varied, "varied", varied), varied) for i in range(2, opts.runs + 1)]
    say(f"verify: {opts.runs} builds ({backend.name} backend), varying: {', '.join(varied) or 'nothing'}")
    runs = _parallel(plans, run, backend)
    control_run = runs[0]
    if control_run.result is None:
        assert control_run.error is not None
        raise control_run.error  # the build fails with nothing varied: not a verify result
    control = _digests(control_run.result)
    not_applied = _not_applied(runs[1:])
    for name, steps in not_applied.items():
        if name not in skipped:
            say(f"verify: {name} was not applied in {len(steps)} step(s): {_first(steps)}")
            skipped[name] = f"not applied in {len(steps)} step(s): {_first(steps)}"
    failures = [RunFailure.of(r.label, r.variations, r.error) for r in runs[1:] if r.error is not None]
    for failure in failures:
        say(f"verify: {failure.run} failed (varying {', '.join(failure.variations)}): {failure.error}")
    differing: set[str] = set()
    pair_dir = None
    for r in runs[1:]:
        if r.result is None:
            continue
        diff = _differing(control, _digests(r.result))
        if diff and pair_dir is None:
            pair_dir = work / r.label
        differing |= diff
    culprits: list[str] = []
    differences: list[dict[str, Any]] = []
    if differing or failures:
        what = f"{len(differing)} artifact(s) differ" if differing else "a varied build failed"
        say(f"verify: {what}; rebuilding with one variation at a time")
        culprits, more_failures = _culprits(run, control, varied, backend)
        failures += more_failures
        if pair_dir is not None:
            report: CompareReport = compare_outputs(work / "run-1-control", pair_dir)
            differences = [d.to_json() for d in report.differences]
    applied = [v for v in varied if v not in not_applied]
    return VerifyReport(reproducible=not differing and not failures, runs=opts.runs, variations=applied,
                        skipped=skipped, culprits=culprits, differences=differences, digests=control,
                        backend=backend.name, hermetic=backend.hermetic,
                        run_digests=[_digests(r.result) if r.result else {} for r in runs],
                        not_applied=not_applied, failures=failures)


def _culprits(run: Any, control: dict[str, str], varied: tuple[str, ...],
              backend: Backend) -> tuple[list[str], list[RunFailure]]:
    """Rebuild once with nothing varied and once per variation: the variations that alone make the
    build differ or fail (`unexplained` when none does), and the failures of those rebuilds."""
    singles: list[Plan] = [("rerun-nothing-varied", control_perturbation(varied), ())]
    singles += [(f"only-{v}", perturbation((v,), v, varied), (v,)) for v in varied]
    reruns = _parallel(singles, run, backend)
    culprits: list[str] = []
    failures = [RunFailure.of(r.label, r.variations, r.error) for r in reruns if r.error is not None]
    baseline = reruns[0]
    unexplained = _differing(control, _digests(baseline.result)) if baseline.result else set()
    if unexplained or baseline.error is not None:
        culprits.append(UNEXPLAINED)
    for r in reruns[1:]:
        if r.error is not None or _differing(control, _digests(r.result) if r.result else {}) - unexplained:
            culprits.append(r.perturb.name)
    if not culprits:
        culprits.append(UNEXPLAINED)  # only the combination of variations reproduces it
    return culprits, failures


def _not_applied(runs: list[_Run]) -> dict[str, dict[str, str]]:
    """variation -> step -> why, over the varied builds (sorted, so the report does not depend on timing)."""
    found: dict[str, dict[str, str]] = {}
    for r in runs:
        for name, steps in (r.result.unapplied if r.result else {}).items():
            found.setdefault(name, {}).update(steps)
    return {name: dict(sorted(steps.items())) for name, steps in sorted(found.items())}


def _first(steps: dict[str, str]) -> str:
    first = next(iter(steps.values()))
    return first + (f" (and {len(steps) - 1} more)" if len(steps) > 1 else "")


def _parallel(plans: list[Plan], run: Any, backend: Backend) -> list[_Run]:
    """Build in parallel up to the core count (no backend makes runs wait for each other)."""
    return map_ordered(run, plans, default_jobs(), backend.cancel)


def applied_lines(report: VerifyReport) -> list[str]:
    """What was varied, exactly: the variations applied everywhere, then per step the ones that were not."""
    lines = [f"varied: {', '.join(report.variations) or 'nothing'}"]
    for name, steps in report.not_applied.items():
        shown = list(steps.values())[:3]
        more = f"; and {len(steps) - 3} more step(s)" if len(steps) > 3 else ""
        lines.append(f"{name}: applied except in {len(steps)} step(s): {'; '.join(shown)}{more}")
    whole = {n: why for n, why in report.skipped.items() if n not in report.not_applied}
    if whole:
        lines.append("not varied: " + ", ".join(f"{n} ({why})" for n, why in sorted(whole.items())))
    return lines


def render_markdown(report: VerifyReport) -> str:
    verdict = "✅ reproducible" if report.reproducible else "❌ not reproducible"
    lines = [f"### reprobuild verify: {verdict}", "",
             f"{report.runs} builds on the `{report.backend}` backend{'' if report.hermetic else ' (not hermetic)'}.",
             ""]
    lines += [f"- {line}" for line in applied_lines(report)]
    if not report.reproducible:
        lines += ["", f"**Culprits:** {', '.join(report.culprits)}"]
        for f in report.failures:
            lines += ["", f"**{f.run}** failed (varying {', '.join(f.variations)}): {f.error}", "", "```",
                      *f.output_tail[-20:], "```"]
        if report.differences:
            lines += ["", "| artifact | causes |", "|---|---|"]
        for d in report.differences:
            causes = "; ".join(f"{c['kind']}: {c['detail']}" for c in d["causes"][:3]) or d["status"]
            escaped = causes.replace("|", "\\|")
            lines.append(f"| `{d['artifact']}` | {escaped} |")
    return "\n".join(lines) + "\n"


def render_text(report: VerifyReport) -> str:
    summary = [f"  {line}" for line in applied_lines(report)]
    if report.reproducible:
        return "\n".join([f"reproducible: {len(report.digests)} artifacts identical over {report.runs} builds",
                          *summary])
    what = []
    if report.differences:
        what.append(f"{len(report.differences)} artifact(s) differ")
    if report.failures:
        what.append(f"{len(report.failures)} varied build(s) failed")
    lines = [f"NOT reproducible: {', '.join(what) or 'builds differ'}; culprits: {', '.join(report.culprits)}",
             *summary]
    for f in report.failures:
        lines.append(f"  {f.run} failed (varying {', '.join(f.variations)}): {f.error}")
        lines += [f"    | {line}" for line in f.output_tail[-10:]]
    for d in report.differences:
        lines.append(f"  {d['artifact']}: {d['status']}")
        for c in d["causes"][:5]:
            lines.append(f"    {c['kind']}: {c['detail']}")
    return "\n".join(lines)
