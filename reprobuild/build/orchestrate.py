"""`reprobuild build`: load → plan → run each pipeline in the backend → hash → publish atomically.

The output directory is written as a sibling staging directory and renamed into place only when
every artifact, `SHA256SUMS` and `manifest.json` are complete: a failed or interrupted build leaves
no `SHA256SUMS` claiming artifacts that are not there.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reprobuild import __version__
from reprobuild.backends import Backend, Perturbation, select_backend
from reprobuild.build import preflight, provenance
from reprobuild.build.actioncache import ActionCache, KeyInputs, load_costs, unit_key
from reprobuild.build.manifest import Artifact, check_out, hash_artifacts, list_files, publish, write_outputs
from reprobuild.build.outlock import OutLock
from reprobuild.build.parallel import default_jobs, map_ordered
from reprobuild.build.shard import Unit, assign, plan_digest, plan_units
from reprobuild.build.treedigest import TreeDigests
from reprobuild.config import policy
from reprobuild.config.lock import load_lock
from reprobuild.config.model import Lock, host_platform
from reprobuild.config.pipeline import Pipeline, load_pipelines, source_date_epoch
from reprobuild.errors import BadInput, CheckFailed
from reprobuild.formats.archives import normalize_modes
from reprobuild.fsutil import remove_tree
from reprobuild.kinds import BuildContext, kind_for
from reprobuild.kinds.go import pluginset
from reprobuild.progress import say
from reprobuild.toolchains.cache import ToolchainCache


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    lock_path: Path
    repo_root: Path
    pipelines: tuple[Path, ...] = ()
    backend: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    offline: bool = False
    shard: tuple[int, int] | None = None  # (i, n): build only shard i of n (1-based)
    action_cache: Path | None = None  # None: no action cache (verify's runs, library callers by default)
    read_cache: bool = True  # False (`--no-cache`): build every unit, still recording the fresh results
    costs: Path | None = None  # unit durations for balancing shards (default: the action cache's costs.json)
    jobs: int | None = None  # units (and a Go target's platforms) built at once; None: the core count


@dataclass(frozen=True)
class BuildResult:
    out: Path
    artifacts: tuple[Artifact, ...]
    manifest: dict[str, Any]
    # Variations of `perturb` some step could not apply: variation -> step label -> why.
    unapplied: dict[str, dict[str, str]] = field(default_factory=dict)


def check_overrides(lock: Lock, overrides: dict[str, str]) -> None:
    for name, entry in overrides.items():
        if entry not in lock.toolchains:
            raise BadInput(f"--toolchain {name}={entry}: {lock.path} has no entry `{entry}` "
                           f"(entries: {', '.join(sorted(lock.toolchains))})")


def build(opts: BuildOptions, backend: Backend | None = None, perturb: Perturbation | None = None) -> BuildResult:
    lock = load_lock(opts.lock_path)
    pipelines = load_pipelines(list(opts.pipelines) or None, opts.repo_root)
    overrides = dict(opts.overrides)
    check_overrides(lock, overrides)
    policy.enforce(policy.evaluate(lock, overrides, pipelines), say)  # refuses (exit 2) before building
    units = plan_units(pipelines)
    shards = assign(units, opts.shard[1], plan_costs(opts)) if opts.shard else None
    if shards is not None and opts.shard is not None:
        units = shards[opts.shard[0] - 1]
        say(f"shard {opts.shard[0]}/{opts.shard[1]}: {len(units)} unit(s): {', '.join(u.id for u in units) or 'none'}")
    backend = backend or select_backend(opts.backend, say, lock=lock, builders_dir=builders_dir_for(opts))
    for gone in backend.remove_leftovers():  # of builds killed outright (their owner is dead on this host)
        say(f"removed a leftover of a killed build: {gone.describe()}")
    cache = ToolchainCache(offline=opts.offline)
    # Builds that `verify` perturbs never read or write the action cache: they must really build.
    actions = ActionCache(opts.action_cache) if opts.action_cache is not None and perturb is None else None
    out = opts.out.resolve()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    held = OutLock(out)  # one writer per --out: the dirs removed below are a dead build's, never a running one's
    for stale in [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.coldcache-*")]:
        remove_tree(stale)  # left by a build that was killed outright
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(staging, 0o755)  # an unprivileged build user must reach its output dir
    perturb = perturb or Perturbation()
    cold = Path(tempfile.mkdtemp(prefix=f".{out.name}.coldcache-", dir=out.parent)) if perturb.cold_cache else None
    builders = _builders_dir(opts, backend)
    ctx = BuildContext(lock, overrides, backend, cache, staging, opts.repo_root, perturb=perturb,
                       jobs=opts.jobs or default_jobs(), cold_cache=cold,
                       cleanup=[cold] if cold is not None else [], builders_dir=builders)
    trees = TreeDigests.for_build()  # each source tree hashed once: for the action cache and the provenance
    try:
        # Fail fast: every toolchain the units use is had and its tree checked before any unit builds; a
        # unit's key holds the tree hash this check confirmed, so restoring needs it too.
        verified = preflight.ensure_toolchains([u.pipeline for u in units], lock, overrides, cache, say)
        inputs = KeyInputs(lock, overrides, backend.name, backend.hermetic, opts.repo_root, builders,
                           host_platform(), verified, trees=trees)
        to_build = [u for u in units if actions is None or not opts.read_cache or actions.lookup(unit_key(u, inputs))
                    is None]
        preflight.ensure_wheelhouses([u.pipeline for u in to_build], lock, opts.repo_root, cache, backend.name)
        if builders is not None:  # a backend that runs steps on the builder images' pinned content
            preflight.check_image_pins([u.pipeline for u in to_build], lock, builders)
        seconds: dict[str, float] = {}
        moving = threading.Lock()
        done = map_ordered(lambda unit: _build_unit(unit, ctx, actions, inputs, opts.read_cache, moving),
                           units, ctx.jobs, backend.cancel)
        hashed: dict[str, Artifact] = {}
        for unit, (elapsed, toolchains, images, made) in zip(units, done, strict=True):  # merged in unit order
            ctx.toolchains.update(toolchains)
            ctx.images.update(images)
            hashed.update((a.path, a) for a in made)
            if elapsed is not None:
                seconds[unit.id] = elapsed
        # A shard planned from the cache's own costs must not change them: the next shard on this machine
        # would plan differently. With `--costs FILE` the plan does not depend on them.
        if actions is not None and (opts.shard is None or opts.costs is not None):
            actions.record_costs(seconds)
        normalize_modes(staging)
        artifacts = _artifacts(staging, hashed)
        manifest = _manifest(pipelines, ctx, backend, overrides)
        sets = pluginset.plan(pipelines)
        pluginset.check(sets, pluginset.in_dir(staging))  # Go plugin sets: plugin.Open would accept them (exit 1)
        if sets:
            manifest["plugin_sets"] = sets
        if shards is not None and opts.shard is not None:
            manifest.update({"shard": f"{opts.shard[0]}/{opts.shard[1]}", "shard_plan": plan_digest(shards),
                             "shard_units": [u.id for u in units]})
        write_outputs(staging, artifacts, manifest)
        statement = provenance.build_statement(
            artifacts, manifest, manifest["pipelines"], opts.lock_path, opts.repo_root,
            {p.name: p.source for p in pipelines}, trees)
        provenance.write_statement(staging / provenance.FILE, statement)
        publish(staging, out)
    finally:
        if staging.exists():
            remove_tree(staging)
        for extra in ctx.cleanup:
            remove_tree(extra)
        held.release()
    say(f"wrote {len(artifacts)} artifacts, SHA256SUMS and manifest.json to {out}")
    return BuildResult(out, tuple(artifacts), manifest, dict(ctx.unapplied))


def shard_plan(opts: BuildOptions, n: int) -> list[list[Unit]]:
    """The units each of n shards would build (pure: nothing is fetched or built)."""
    pipelines = load_pipelines(list(opts.pipelines) or None, opts.repo_root)
    return assign(plan_units(pipelines), n, plan_costs(opts))


def plan_costs(opts: BuildOptions) -> dict[str, float]:
    """The recorded unit durations that balance shards: `--costs FILE`, else the action cache's."""
    if opts.costs is not None:
        return load_costs(opts.costs)
    return ActionCache(opts.action_cache).load_costs() if opts.action_cache is not None else {}


def _builders_dir(opts: BuildOptions, backend: Backend) -> Path | None:
    """The builder image descriptions, when the backend makes its images from them (the local backend's
    image is the host)."""
    if not backend.builds_images:
        return None
    return builders_dir_for(opts)


def builders_dir_for(opts: BuildOptions) -> Path:
    """The repository root's `builders/` (`--root`), wherever the lock is; else the one beside the lock."""
    from reprobuild.backends.images.spec import default_builders_dir

    at_root = opts.repo_root / "builders"
    return at_root if at_root.is_dir() else default_builders_dir(opts.lock_path)


# seconds (None: restored), toolchains, images, the unit's artifacts (hashed once, when made or recorded)
UnitResult = tuple[float | None, dict[str, dict[str, Any]], dict[str, str], tuple[Artifact, ...]]


def _artifacts(staging: Path, hashed: dict[str, Artifact]) -> list[Artifact]:
    """The output dir's artifacts: the units' digests, and a hash of any file no unit accounted for."""
    files = list_files(staging)
    rest = hash_artifacts(staging, [rel for rel in files if rel not in hashed])
    return sorted([*(hashed[rel] for rel in files if rel in hashed), *rest], key=lambda a: a.path)


def _build_unit(unit: Unit, ctx: BuildContext, actions: ActionCache | None, inputs: KeyInputs,
                read_cache: bool, moving: threading.Lock) -> UnitResult:
    """Restore the unit from the action cache, or build it in a directory of its own and record it.

    Returns the build time (None when it was restored) and the toolchains and images it used. Units
    run on threads of their own: each writes only its own directory until its files move into place.
    """
    key = unit_key(unit, inputs) if actions is not None else ""
    if actions is not None and read_cache:
        entry = actions.lookup(key)
        if entry is not None:
            if actions.restore(entry, ctx.staging):
                say(f"{unit.id}: restored from the action cache ({len(entry.artifacts)} artifact(s))")
                return None, entry.toolchains, entry.images, entry.artifacts
            say(f"{unit.id}: the action cache entry does not match its recorded hashes; rebuilding")
    unit_dir = Path(tempfile.mkdtemp(prefix=f"{ctx.staging.name}.unit-", dir=ctx.staging.parent))
    os.chmod(unit_dir, 0o755)
    unit_ctx = replace(ctx, staging=unit_dir, toolchains={}, images={})
    try:
        start = time.monotonic()
        kind_for(unit.pipeline.builder).build(unit.as_pipeline(), unit_ctx)
        elapsed = time.monotonic() - start
        normalize_modes(unit_dir)
        made = tuple(hash_artifacts(unit_dir))  # for the action cache and the output dir's manifest
        if actions is not None:
            actions.store(key, unit.id, unit_dir, unit_ctx.toolchains, unit_ctx.images, elapsed, made)
        with moving:
            for rel in list_files(unit_dir):
                dest = ctx.staging / rel
                if os.path.lexists(dest):
                    raise CheckFailed(f"{unit.id}: writes {rel}, which another unit of the build wrote too")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(unit_dir / rel, dest)
    finally:
        remove_tree(unit_dir)
    return elapsed, unit_ctx.toolchains, unit_ctx.images, made


def _manifest(pipelines: list[Pipeline], ctx: BuildContext, backend: Backend,
              overrides: dict[str, str]) -> dict[str, Any]:
    return {
        "reprobuild_version": __version__,
        "backend": backend.name,
        "hermetic": backend.hermetic,
        "toolchains": ctx.toolchains,
        "substitutions": dict(sorted(overrides.items())),
        "images": ctx.images,
        "pipelines": [{"name": p.name, "builder": p.builder, "source_date_epoch": source_date_epoch(
            p.source_date_epoch)} for p in pipelines],
    }
