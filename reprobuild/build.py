"""`reprobuild build`: load → plan → run each pipeline in the backend → hash → publish atomically.

The output directory is written as a sibling staging directory and renamed into place only when
every artifact, `SHA256SUMS` and `manifest.json` are complete: a failed or interrupted build leaves
no `SHA256SUMS` claiming artifacts that are not there.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild import __version__
from reprobuild.backends import Backend, Perturbation, select_backend
from reprobuild.errors import BadInput
from reprobuild.fsutil import remove_tree
from reprobuild.kinds import BuildContext, kind_for
from reprobuild.lockfile import load_lock
from reprobuild.manifest import MANIFEST, Artifact, hash_artifacts, write_outputs
from reprobuild.model import Lock
from reprobuild.pipeline import Pipeline, load_pipelines, source_date_epoch
from reprobuild.progress import say
from reprobuild.toolchains import ToolchainCache


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    lock_path: Path
    repo_root: Path
    pipelines: tuple[Path, ...] = ()
    backend: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    offline: bool = False


@dataclass(frozen=True)
class BuildResult:
    out: Path
    artifacts: tuple[Artifact, ...]
    manifest: dict[str, Any]


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
    backend = backend or select_backend(opts.backend, say)
    cache = ToolchainCache(offline=opts.offline)
    out = opts.out.resolve()
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        remove_tree(stale)  # left by a build that was killed outright
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(staging, 0o755)  # an unprivileged build user must reach its output dir
    ctx = BuildContext(lock, overrides, backend, cache, staging, opts.repo_root, perturb=perturb or Perturbation())
    try:
        for pipeline in pipelines:
            kind_for(pipeline.builder).build(pipeline, ctx)
        _normalize_modes(staging)
        artifacts = hash_artifacts(staging)
        manifest = _manifest(pipelines, ctx, backend, overrides)
        write_outputs(staging, artifacts, manifest)
        _publish(staging, out)
    finally:
        if staging.exists():
            remove_tree(staging)
        for extra in ctx.cleanup:
            remove_tree(extra)
    say(f"wrote {len(artifacts)} artifacts, SHA256SUMS and manifest.json to {out}")
    return BuildResult(out, tuple(artifacts), manifest)


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


def _normalize_modes(root: Path) -> None:
    """0755 for directories and executables, 0644 for the rest: the umask must not show in the output."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise BadInput(f"--out {out}: exists and is not a reprobuild output directory; not overwriting it",
                       "choose another directory or remove it")


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "out")
        os.replace(staging, out)
        remove_tree(old)
    else:
        os.replace(staging, out)
