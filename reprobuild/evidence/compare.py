"""Compare two build outputs and explain every difference.

`compare_outputs(A, B)` is the library entry (`reprobuild compare` and `verify` call it). A side is
an output directory (`manifest.json` and/or `SHA256SUMS` plus the files) or a bare `manifest.json`
(or `SHA256SUMS`) file. The run is a few small steps:

    load both sides → pair artifacts by path → hash-compare → explain the differing pairs → report

Explaining needs the bytes of both files; with a bare manifest on either side only the hashes,
sizes and modes are compared, and the report says the bytes were not available.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprobuild import proc
from reprobuild.errors import EnvironmentFailure
from reprobuild.evidence import comparators
from reprobuild.evidence.comparators import Cause
from reprobuild.evidence.comparators.base import cut
from reprobuild.evidence.sides import ArtifactRecord, Side, load_side

IDENTICAL = "identical"
DIFFERS = "differs"
ONLY_IN_A = "only-in-a"
ONLY_IN_B = "only-in-b"
STATUSES = (IDENTICAL, DIFFERS, ONLY_IN_A, ONLY_IN_B)

MAX_CAUSES = 10
"""Causes kept per artifact; the rest are counted in `Difference.omitted`."""
DIFFOSCOPE_TIMEOUT = 120.0
DIFFOSCOPE_MAX_BYTES = 64 << 10
@dataclass(frozen=True)
class Difference:
    """One artifact that is not identical: `status` is one of `differs`, `only-in-a`, `only-in-b`."""

    artifact: str
    status: str
    causes: tuple[Cause, ...] = ()
    a: ArtifactRecord | None = None
    b: ArtifactRecord | None = None
    omitted: int = 0
    """Causes found beyond MAX_CAUSES and left out of the report."""
    diffoscope: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"artifact": self.artifact, "status": self.status,
                                "causes": [c.to_json() for c in self.causes],
                                "a": self.a.to_json() if self.a else None,
                                "b": self.b.to_json() if self.b else None}
        if self.omitted:
            data["omitted_causes"] = self.omitted
        if self.diffoscope is not None:
            data["diffoscope"] = self.diffoscope
        return data


@dataclass(frozen=True)
class CompareReport:
    """The outcome of `compare_outputs`: identical when `differences` is empty."""

    a: str
    b: str
    artifacts: int
    """How many distinct artifact paths the two sides hold together."""
    differences: tuple[Difference, ...]
    bytes_available: bool
    """False when either side is a bare manifest: hashes were compared, nothing was explained."""
    warnings: tuple[str, ...] = field(default=())

    @property
    def identical(self) -> bool:
        return not self.differences

    def count(self, status: str) -> int:
        if status == IDENTICAL:
            return self.artifacts - len(self.differences)
        return sum(1 for d in self.differences if d.status == status)

    @property
    def kinds(self) -> list[str]:
        """Every cause kind found, in first-seen order."""
        seen: dict[str, None] = {}
        for d in self.differences:
            for c in d.causes:
                seen.setdefault(c.kind, None)
        return list(seen)

    def to_json(self) -> dict[str, Any]:
        """The CONTRACT.md report (`identical` and `differences`), plus counts and warnings."""
        return {"identical": self.identical, "a": self.a, "b": self.b, "bytes_available": self.bytes_available,
                "artifacts": self.artifacts, "counts": {s: self.count(s) for s in STATUSES},
                "kinds": self.kinds, "differences": [d.to_json() for d in self.differences],
                "warnings": list(self.warnings)}


# -- comparing ---------------------------------------------------------------------------------------

def compare_outputs(a: Path, b: Path, *, go: Path | None = None, diffoscope: bool = False,
                    diffoscope_timeout: float = DIFFOSCOPE_TIMEOUT) -> CompareReport:
    """Compare two output dirs (or manifests) artifact by artifact and explain each difference.

    `go` is a Go binary for `go version -m` when the built-in build-info reader cannot read a binary
    (default: a `go` on PATH, if any). `diffoscope=True` also runs diffoscope on each differing pair,
    with a time limit and a size cap. Raises BadInput when a side is not an output dir or manifest.
    """
    side_a, side_b = load_side(a, "A"), load_side(b, "B")
    return compare_sides(side_a, side_b, go=go, diffoscope=diffoscope, diffoscope_timeout=diffoscope_timeout)


def compare_sides(side_a: Side, side_b: Side, *, go: Path | None = None, diffoscope: bool = False,
                  diffoscope_timeout: float = DIFFOSCOPE_TIMEOUT) -> CompareReport:
    names = sorted(set(side_a.artifacts) | set(side_b.artifacts))
    bytes_available = side_a.root is not None and side_b.root is not None
    differences = []
    for name in names:
        ra, rb = side_a.artifacts.get(name), side_b.artifacts.get(name)
        if ra is None:
            differences.append(Difference(name, ONLY_IN_B, (Cause("missing", "only in B"),), None, rb))
        elif rb is None:
            differences.append(Difference(name, ONLY_IN_A, (Cause("missing", "only in A"),), ra, None))
        elif ra.note is not None or rb.note is not None:
            differences.append(Difference(name, DIFFERS, tuple(
                Cause("content", f"{side}: {r.note}") for side, r in (("A", ra), ("B", rb)) if r.note), ra, rb))
        elif (differ := _may_differ(ra, rb)) or _modes_differ(ra, rb):
            found = _explain(name, ra, rb, side_a, side_b, go, diffoscope, diffoscope_timeout, differ)
            if found.causes:  # none: unhashed files that one streaming pass found equal
                differences.append(found)
    return CompareReport(side_a.label, side_b.label, len(names), tuple(differences), bytes_available,
                         side_a.warnings + side_b.warnings)


def _may_differ(ra: ArtifactRecord, rb: ArtifactRecord) -> bool:
    """Whether the contents may differ: by hash, or for files too large to hash by size (else explaining
    them, one streaming pass, settles it)."""
    return ra.sha256 != rb.sha256 if ra.hashed and rb.hashed else True


def _modes_differ(ra: ArtifactRecord, rb: ArtifactRecord) -> bool:
    return ra.mode is not None and rb.mode is not None and ra.mode != rb.mode


def _explain(name: str, ra: ArtifactRecord, rb: ArtifactRecord, side_a: Side, side_b: Side, go: Path | None,
             diffoscope: bool, diffoscope_timeout: float, differ: bool) -> Difference:
    causes: list[Cause] = []
    if _modes_differ(ra, rb):
        assert ra.mode is not None and rb.mode is not None
        causes.append(Cause("file-mode", f"mode {ra.mode:04o} (A) vs {rb.mode:04o} (B)"))
    report_of_diffoscope = None
    if ra.link is not None or rb.link is not None:
        causes.append(Cause("content", "symbolic links (not followed): "
                                       f"{_as_link(ra)} (A) vs {_as_link(rb)} (B)"))
    elif differ:
        if side_a.root is None or side_b.root is None:
            sizes = f"{ra.size} vs {rb.size} bytes; " if ra.size != rb.size else ""
            causes.append(Cause("content", f"{sizes}sha256 {ra.sha256[:12]}… (A) vs {rb.sha256[:12]}… (B); the bytes "
                                           "are not available (manifest only), so no explanation"))
        else:
            pa, pb = side_a.root / name, side_b.root / name
            causes += explain_pair(pa, pb, go=go)
            if diffoscope:
                report_of_diffoscope = run_diffoscope(pa, pb, timeout=diffoscope_timeout)
    kept = tuple(_dedupe(causes))
    return Difference(name, DIFFERS, kept[:MAX_CAUSES], ra, rb, max(0, len(kept) - MAX_CAUSES), report_of_diffoscope)


def _as_link(r: ArtifactRecord) -> str:
    return f"-> {cut(repr(r.link), 120)}" if r.link is not None else "a regular file"


def explain_pair(a: Path, b: Path, *, go: Path | None = None) -> list[Cause]:
    """Why two files differ, by the first comparator that recognizes them (empty if identical)."""
    return comparators.explain_files(a, b, go=go)


def _dedupe(causes: Iterable[Cause]) -> list[Cause]:
    return list(dict.fromkeys(causes))


def run_diffoscope(a: Path, b: Path, *, timeout: float = DIFFOSCOPE_TIMEOUT,
                   max_bytes: int = DIFFOSCOPE_MAX_BYTES) -> str:
    """diffoscope's text report on one pair, cut to `max_bytes`; a one-line note when it cannot run."""
    try:
        exe = proc.which("diffoscope", "diffoscope-minimal")
    except EnvironmentFailure:
        return "diffoscope is not installed (Debian package diffoscope-minimal)"
    try:
        done = proc.run([exe, "--no-progress", "--text", "-", "--max-text-report-size", str(max_bytes), a, b],
                        check=False, timeout=timeout)
    except EnvironmentFailure as exc:
        return f"diffoscope did not finish: {exc}"
    if done.returncode not in (0, 1):
        return f"diffoscope failed (exit code {done.returncode}): {done.stderr.strip()[-500:]}"
    out = done.stdout
    if len(out) > max_bytes:
        out = out[:max_bytes] + f"\n… diffoscope output cut at {max_bytes} bytes\n"
    return out


# -- rendering ---------------------------------------------------------------------------------------

_STATUS_TEXT = {DIFFERS: "differs", ONLY_IN_A: "only in A", ONLY_IN_B: "only in B"}


def summary_line(report: CompareReport) -> str:
    parts = [f"{report.count(IDENTICAL)} identical"]
    parts += [f"{report.count(s)} {_STATUS_TEXT[s]}" for s in (DIFFERS, ONLY_IN_A, ONLY_IN_B) if report.count(s)]
    verdict = "identical" if report.identical else "NOT identical"
    return f"{report.artifacts} artifacts: {', '.join(parts)} — {verdict}"


def render_text(report: CompareReport) -> str:
    """Terse human text: one line per differing artifact, one per cause, then the verdict."""
    lines = [f"A: {report.a}", f"B: {report.b}"]
    for d in report.differences:
        lines.append(f"{_STATUS_TEXT[d.status]:<10} {d.artifact}")
        if d.status != DIFFERS:
            continue
        for c in d.causes:
            first, *rest = c.detail.splitlines() or [""]
            lines.append(f"  {c.kind:<14} {first}")
            lines += [f"    {line}" for line in rest]
        if d.omitted:
            lines.append(f"  … {d.omitted} more causes (see --json)")
        if d.diffoscope:
            lines.append("  diffoscope:")
            lines += [f"    {line}" for line in d.diffoscope.rstrip().splitlines()]
    if not report.bytes_available and not report.identical:
        lines.append("note: a side is a bare manifest, so differing files were compared by hash only")
    lines += [f"warning: {w}" for w in report.warnings]
    lines.append(summary_line(report))
    return "\n".join(lines)


def render_markdown(report: CompareReport) -> str:
    """Markdown for `$GITHUB_STEP_SUMMARY`: a verdict, a table of differing artifacts, details folded."""
    icon = "✅" if report.identical else "❌"
    lines = [f"### {icon} reprobuild compare: {summary_line(report)}", "",
             f"A: `{report.a}` · B: `{report.b}`", ""]
    if report.differences:
        lines += ["| artifact | status | causes |", "|---|---|---|"]
        for d in report.differences:
            kinds = ", ".join(dict.fromkeys(f"`{c.kind}`" for c in d.causes))
            lines.append(f"| `{_cell(d.artifact)}` | {_STATUS_TEXT[d.status]} | {kinds} |")
        lines.append("")
        for d in report.differences:
            if d.status != DIFFERS or not d.causes:
                continue
            lines += [f"<details><summary><code>{_html(d.artifact)}</code></summary>", ""]
            for c in d.causes:
                first, *rest = c.detail.splitlines() or [""]
                if rest:
                    lines += [f"- **{c.kind}**", "", "  ```diff", *(f"  {x}" for x in [first, *rest]), "  ```"]
                else:
                    lines.append(f"- **{c.kind}**: {_cell(first)}")
            if d.omitted:
                lines.append(f"- … {d.omitted} more causes")
            if d.diffoscope:
                lines += ["", "  ```", *(f"  {x}" for x in d.diffoscope.rstrip().splitlines()[:200]), "  ```"]
            lines += ["", "</details>", ""]
    lines += [f"> warning: {w}" for w in report.warnings]
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
