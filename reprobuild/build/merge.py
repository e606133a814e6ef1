"""`reprobuild merge`: shard outputs → one output dir, and N-of-M agreement between independent rebuilds.

Two questions, one module, because both read sets of output dirs the same way:

* `merge(dirs, out)`: the dirs are the shards of *one* build. Their artifacts are combined; an
  artifact two shards both wrote must be identical (else exit 1, naming it and both digests); every
  shard of the same plan must be present; the manifest and provenance are rewritten for the merged
  subjects, without shard information, so a merged build equals an unsharded one byte for byte.
* `agree(dirs, quorum)`: the dirs are complete outputs of *independent* rebuilds (each one merged
  first). Every artifact must have the same digest in at least `quorum` of them (default: all),
  like an independent rebuilder's N-of-M; otherwise exit 1 naming each disagreeing artifact.

load every dir (checking files against their manifest) → check → combine → write → publish atomically
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reprobuild.build import provenance
from reprobuild.build.manifest import (
    MANIFEST,
    SUMS,
    Artifact,
    check_out,
    publish,
    read_manifest,
    render_sums,
    write_outputs,
)
from reprobuild.build.mergepaths import check_artifact_file, check_artifact_paths, write_artifact
from reprobuild.build.outlock import OutLock
from reprobuild.errors import BadInput, CheckFailed
from reprobuild.fsutil import remove_tree
from reprobuild.kinds.go import pluginset

SHARD_KEYS = ("shard", "shard_plan", "shard_units")
UNION_KEYS = ("toolchains", "images", "oci_images")  # each shard records only what its own units used
MISSING = "missing"


@dataclass(frozen=True)
class Output:
    """One output dir as read from disk (its files checked against its manifest)."""

    root: Path
    manifest: dict[str, Any]
    artifacts: dict[str, Artifact]
    statement: dict[str, Any] | None

    @property
    def shard(self) -> str | None:
        value = self.manifest.get("shard")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class MergeResult:
    out: Path
    artifacts: tuple[Artifact, ...]
    shards: tuple[str, ...]


@dataclass
class Disagreement:
    artifact: str
    digests: dict[str, str]  # dir -> sha256 (or "missing")

    def describe(self) -> str:
        return f"{self.artifact}: " + "; ".join(f"{d}: {h}" for d, h in self.digests.items())


@dataclass
class AgreementReport:
    agreed: bool
    rebuilds: list[str]
    quorum: int
    artifacts: dict[str, str]  # artifact -> the digest a quorum agrees on
    disagreements: list[Disagreement] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"agreed": self.agreed, "rebuilds": self.rebuilds, "quorum": self.quorum,
                "artifacts": [{"path": p, "sha256": d} for p, d in sorted(self.artifacts.items())],
                "disagreements": [{"artifact": d.artifact, "digests": d.digests} for d in self.disagreements]}


class MergeConflict(CheckFailed):
    """Two outputs hold different bytes for the same artifact (exit 1)."""


def load_output(root: Path) -> Output:
    """Read an output dir's manifest, check SHA256SUMS agrees with it and every file with its digest."""
    if not root.is_dir():
        raise BadInput(f"{root}: not a directory (expected an output dir of `reprobuild build`)")
    manifest = read_manifest(root / MANIFEST)
    try:
        artifacts = {a["path"]: Artifact(a["path"], a["sha256"], int(a["size"]), a["mode"], a.get("link"))
                     for a in manifest["artifacts"]}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInput(f"{root / MANIFEST}: `artifacts` is not a list of {{path, sha256, size, mode}}") from None
    check_artifact_paths(root / MANIFEST, list(artifacts.values()))
    sums = root / SUMS
    if sums.exists() and sums.read_text() != render_sums(list(artifacts.values())):
        raise CheckFailed(f"{sums}: does not match {root / MANIFEST}; the output dir was modified after the build")
    for a in artifacts.values():
        check_artifact_file(root, a)
    statement = None
    if (root / provenance.FILE).is_file():
        try:
            statement = json.loads((root / provenance.FILE).read_text())
        except ValueError:
            raise BadInput(f"{root / provenance.FILE}: not valid JSON") from None
    return Output(root, {k: v for k, v in manifest.items() if k != "artifacts"}, artifacts, statement)


# --- shards of one build -------------------------------------------------------------------------

def merge(dirs: list[Path], out: Path) -> MergeResult:
    """Combine the shard outputs `dirs` into `out` (see the module docstring)."""
    if not dirs:
        raise BadInput("merge needs at least one output dir")
    outputs = [load_output(d) for d in dirs]
    shards = _check_shards(outputs)
    artifacts = _combine_artifacts(outputs)
    manifest = _combine_manifests(outputs)
    statement = _combine_statements([o.statement for o in outputs if o.statement], list(artifacts.values()),
                                     manifest.get("oci_images"), manifest.get("plugin_sets", []))
    sources = {path: next(o.root for o in outputs if path in o.artifacts) for path in artifacts}
    pluginset.check(manifest.get("plugin_sets", []), lambda rel: sources[rel] / rel if rel in sources else None)
    _write(out, sorted(artifacts.values(), key=lambda a: a.path), sources, manifest, statement)
    return MergeResult(out.resolve(), tuple(sorted(artifacts.values(), key=lambda a: a.path)), shards)


def _check_shards(outputs: list[Output]) -> tuple[str, ...]:
    sharded = [o for o in outputs if o.shard is not None]
    if not sharded:
        return ()
    plans = {(o.manifest.get("shard_plan"), o.shard.split("/")[1]) for o in sharded if o.shard}
    if len(plans) > 1:
        raise BadInput("the shard outputs come from different shard plans (different pipelines, shard counts or "
                       "recorded costs): " + ", ".join(f"{o.root} is {o.shard}" for o in sharded),
                       "build every shard from the same commit with the same --shard N and the same costs")
    n = int(next(iter(plans))[1])
    have = {int(o.shard.split("/")[0]) for o in sharded if o.shard}
    missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in have]
    if missing:
        raise BadInput(f"shard(s) {', '.join(missing)} missing: a merged output would lack their artifacts",
                       "pass every shard's output dir")
    return tuple(sorted({o.shard for o in sharded if o.shard}))


def _combine_artifacts(outputs: list[Output]) -> dict[str, Artifact]:
    combined: dict[str, Artifact] = {}
    owner: dict[str, Path] = {}
    for o in outputs:
        for path, a in sorted(o.artifacts.items()):
            seen = combined.get(path)
            if seen is None:
                combined[path], owner[path] = a, o.root
            elif (seen.sha256, seen.mode) != (a.sha256, a.mode):
                raise MergeConflict(f"{path}: {owner[path]} has sha256 {seen.sha256} (mode {seen.mode}), "
                                    f"{o.root} has sha256 {a.sha256} (mode {a.mode}); refusing to merge")
    return combined


def _combine_manifests(outputs: list[Output]) -> dict[str, Any]:
    first = outputs[0]
    merged: dict[str, Any] = {k: copy.deepcopy(v) for k, v in first.manifest.items() if k not in SHARD_KEYS}
    for o in outputs[1:]:
        keys = (set(o.manifest) | set(merged)) - set(SHARD_KEYS)
        for key in sorted(keys):
            mine, theirs = merged.get(key), o.manifest.get(key)
            if key in UNION_KEYS and isinstance(mine or {}, dict) and isinstance(theirs or {}, dict):
                for name, value in (theirs or {}).items():
                    if name in (mine or {}) and mine[name] != value:  # type: ignore[index]
                        raise BadInput(f"manifest `{key}.{name}` differs between {first.root} and {o.root}: "
                                       "the outputs were not built with the same inputs")
                merged[key] = dict(sorted({**(mine or {}), **(theirs or {})}.items()))
            elif mine != theirs:
                raise BadInput(f"manifest `{key}` differs between {first.root} and {o.root} "
                               f"({json.dumps(mine)} vs {json.dumps(theirs)}): not shards of one build")
    return merged


def _dep_order(dep: dict[str, Any], index: int) -> tuple[int, str, int]:
    """The order `provenance.build_statement` writes dependencies in, so a merge reproduces it."""
    name = str(dep.get("name", ""))
    if name == "toolchains.lock":
        return (0, "", 0)
    if name.startswith("toolchain:"):
        return (1, str(dep.get("annotations", {}).get("requestedAs", "")), index)
    if name.startswith("image:"):
        return (2, name, 0)
    if name.startswith(("vendor:", "source:")):
        kind, _, pipeline = name.partition(":")
        return (3, pipeline, 0 if kind == "vendor" else 1)
    return (4, "", index)


def _combine_statements(statements: list[dict[str, Any]], artifacts: list[Artifact],
                        images: dict[str, dict[str, Any]] | None = None,
                        plugin_sets: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    if not statements:
        return None
    merged = copy.deepcopy(statements[0])
    keyed: dict[str, tuple[tuple[int, str, int], dict[str, Any]]] = {}
    offset = 0
    for st in statements:
        deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        for i, dep in enumerate(deps):
            ident = json.dumps([dep.get("name"), dep.get("annotations", {}).get("requestedAs")])
            if ident in keyed and keyed[ident][1] != dep:
                raise BadInput(f"provenance dependency `{dep.get('name')}` differs between the outputs: "
                               "not shards of one build")
            keyed.setdefault(ident, (_dep_order(dep, offset + i), dep))
        offset += len(deps)
    deps = [dep for _, dep in sorted(keyed.values(), key=lambda item: item[0])]
    merged["subject"] = provenance.link_plugins(provenance.subjects(artifacts, images), plugin_sets or [])
    merged["predicate"]["buildDefinition"]["resolvedDependencies"] = deps
    merged["predicate"]["runDetails"]["metadata"]["invocationId"] = provenance.invocation_id(
        sorted(artifacts, key=lambda a: a.path), deps)
    return merged


def _write(out: Path, artifacts: list[Artifact], sources: dict[str, Path], manifest: dict[str, Any],
           statement: dict[str, Any] | None) -> None:
    out = out.resolve()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    held = OutLock(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(staging, 0o755)
        for a in artifacts:
            write_artifact(sources[a.path], staging, a)
        write_outputs(staging, artifacts, manifest)
        if statement is not None:
            provenance.write_statement(staging / provenance.FILE, statement)
        publish(staging, out)
    finally:
        if staging.exists():
            remove_tree(staging)
        held.release()


# --- independent rebuilds ------------------------------------------------------------------------

def agree(dirs: list[Path], quorum: int | None = None, out: Path | None = None) -> AgreementReport:
    """N-of-M: every artifact must have one digest in at least `quorum` rebuilds (default: all of them).

    With `out`, a rebuild that matches the agreed digests everywhere is written there (only on success).
    """
    if len(dirs) < 2:
        raise BadInput("--require-agreement needs at least two rebuilds' output dirs")
    need = len(dirs) if quorum is None else quorum
    if not 1 <= need <= len(dirs):
        raise BadInput(f"--quorum {need}: must be between 1 and the number of rebuilds ({len(dirs)})")
    outputs = [load_output(d) for d in dirs]
    for o in outputs:
        if o.shard is not None:
            raise BadInput(f"{o.root} is shard {o.shard}, not a whole rebuild",
                           "merge each rebuild's shards first (`reprobuild merge SHARD... --out DIR`)")
    labels = [str(d) for d in dirs]
    agreed: dict[str, str] = {}
    disagreements: list[Disagreement] = []
    short = False
    for path in sorted({p for o in outputs for p in o.artifacts}):
        digests = {label: o.artifacts[path].sha256 if path in o.artifacts else MISSING
                   for label, o in zip(labels, outputs, strict=True)}
        (top, count), *rest = Counter(digests.values()).most_common()
        tied = bool(rest) and rest[0][1] == count
        if len(set(digests.values())) > 1:
            disagreements.append(Disagreement(path, digests))
        if count >= need and not tied and top != MISSING:
            agreed[path] = top
        else:
            short = True
    report = AgreementReport(not short, labels, need, agreed, disagreements)
    if report.agreed and out is not None:
        full = next((o for o in outputs if {p: a.sha256 for p, a in o.artifacts.items()} == agreed), None)
        if full is None:
            raise CheckFailed("no single rebuild matches every agreed digest; nothing written to --out")
        merge([full.root], out)
    return report


def render_markdown(report: AgreementReport) -> str:
    verdict = "✅ rebuilds agree" if report.agreed else "❌ rebuilds disagree"
    lines = [f"### reprobuild merge: {verdict}", "",
             f"{len(report.rebuilds)} independent rebuilds; quorum {report.quorum} of {len(report.rebuilds)}; "
             f"{len(report.artifacts)} artifact(s) agreed."]
    if report.disagreements:
        lines += ["", "| artifact | " + " | ".join(f"`{r}`" for r in report.rebuilds) + " |",
                  "|---|" + "---|" * len(report.rebuilds)]
        for d in report.disagreements:
            lines.append(f"| `{d.artifact}` | " + " | ".join(f"`{d.digests[r][:16]}`" for r in report.rebuilds)
                         + " |")
    return "\n".join(lines) + "\n"


def render_text(report: AgreementReport) -> str:
    if report.agreed and not report.disagreements:
        return f"{len(report.rebuilds)} rebuilds agree on all {len(report.artifacts)} artifacts"
    head = (f"rebuilds agree ({report.quorum} of {len(report.rebuilds)} needed), with dissent:" if report.agreed
            else f"rebuilds DISAGREE ({report.quorum} of {len(report.rebuilds)} needed):")
    return "\n".join([head, *("  " + d.describe() for d in report.disagreements)])


def result_json(result: MergeResult) -> dict[str, Any]:
    return {"ok": True, "out": str(result.out), "shards": list(result.shards),
            "artifacts": [asdict(a) for a in result.artifacts]}
