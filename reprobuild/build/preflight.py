"""Before any unit builds, every toolchain the selected pipelines need is had: in the cache, imported, or
fetched now, and its tree checked (the hash it confirms keys the action cache, so restored units need it
too). So is the wheelhouse of every Paddle pipeline that will build (unless its environment is installed
already). What cannot be had ends the build at once (exit 3) with the ways out, instead of after the
units that did not need it have built (a Paddle pipeline's minute, then a Go SDK that cannot be downloaded;
Go binaries, then Paddle wheels offline).
With a backend that builds images (docker, sandbox), every debootstrap image they run in must be pinned by
the lock, and not stale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from reprobuild.config.model import Lock, Toolchain, host_platform
from reprobuild.config.pipeline import Pipeline
from reprobuild.errors import EnvironmentFailure
from reprobuild.toolchains.cache import ToolchainCache


class ToolchainUnavailable(EnvironmentFailure):
    """A toolchain a selected pipeline needs can be neither found, imported nor fetched."""

    def __init__(self, needed_by: Sequence[str], asked: str, entry: str, cause: EnvironmentFailure,
                 alternatives: Sequence[str]) -> None:
        ways = [cause.hint] if cause.hint else []
        ways += [f"or build with another lock entry: `--toolchain {asked}={alt}`" for alt in alternatives[:2]]
        super().__init__(f"{', '.join(needed_by)} need{'s' if len(needed_by) == 1 else ''} toolchain `{entry}`, "
                         f"which cannot be had (nothing was built): {cause.message}", "; ".join(ways) or None)


def needed(pipelines: Sequence[Pipeline], lock: Lock, overrides: dict[str, str]) -> dict[str, tuple[str, list[str]]]:
    """Lock entry -> (the name pipelines ask for, the pipelines that need it), after `--toolchain` substitution."""
    found: dict[str, tuple[str, list[str]]] = {}
    for p in pipelines:
        if p.toolchain is None:
            continue
        entry = overrides.get(p.toolchain, p.toolchain)
        users = found.setdefault(entry, (p.toolchain, []))[1]
        if p.name not in users:  # a Go pipeline's targets are units of their own, each with its pipeline
            users.append(p.name)
    return found


def alternatives(lock: Lock, entry: str, cache: ToolchainCache, platform: str) -> list[str]:
    """Other entries of the same kind this platform can use, installed ones first."""
    tc = lock.toolchain(entry)
    others = [t for n, t in sorted(lock.toolchains.items()) if n != entry and t.kind == tc.kind and t.pin(platform)]

    def installed(t: Toolchain) -> bool:
        pin = t.pin(platform)
        return pin is not None and cache.state(t, pin) == "installed"

    return [t.name for t in sorted(others, key=lambda t: not installed(t))]


def ensure_toolchains(pipelines: Sequence[Pipeline], lock: Lock, overrides: dict[str, str], cache: ToolchainCache,
                      say: Callable[[str], None]) -> dict[str, str]:
    """Install (fetching if needed) and check every toolchain the pipelines need; raise ToolchainUnavailable
    at once. Returns lock entry -> the tree hash the check confirmed (what the action cache keys by)."""
    platform = host_platform()
    verified: dict[str, str] = {}
    for entry, (asked, users) in sorted(needed(pipelines, lock, overrides).items()):
        tc = lock.toolchain(entry)
        try:
            verified[entry] = cache.ensure(tc).tree_sha256
        except EnvironmentFailure as exc:
            raise ToolchainUnavailable(users, asked, entry, exc, alternatives(lock, entry, cache, platform)) from None
    return verified


class WheelhouseUnavailable(EnvironmentFailure):
    """The wheels of a Python environment a selected Paddle pipeline needs can be neither found nor fetched."""

    def __init__(self, needed_by: Sequence[str], env: str, cause: EnvironmentFailure) -> None:
        super().__init__(f"{', '.join(needed_by)} need{'s' if len(needed_by) == 1 else ''} the locked `{env}` Python "
                         f"environment, whose wheels cannot be had (nothing was built): {cause.message}", cause.hint)


def ensure_wheelhouses(pipelines: Sequence[Pipeline], lock: Lock, repo_root: Path, cache: ToolchainCache,
                       backend: str) -> None:
    """Every Paddle pipeline's environment is installed for this backend, or its wheelhouse is complete (checked,
    or downloaded now unless offline); raise WheelhouseUnavailable at once naming the missing wheels."""
    from reprobuild.kinds.paddle import builder as paddle
    from reprobuild.toolchains.wheelhouse import default_wheelhouse, ensure_wheelhouse

    envs: dict[str, tuple[Path, str, list[str]]] = {}
    for p in pipelines:
        if p.builder != "paddle":
            continue
        spec = paddle.parse_spec(p)
        lock_file, lock_sha = paddle.locked_env(p, spec, lock, repo_root)
        users = envs.setdefault(spec.requirements, (lock_file, lock_sha, []))[2]
        if p.name not in users:
            users.append(p.name)
    for name, (lock_file, lock_sha, users) in sorted(envs.items()):
        if paddle.env_installed(cache.root, lock_sha, backend):
            continue
        try:
            ensure_wheelhouse(lock_file, default_wheelhouse(cache.root, name, lock_sha), cache.offline)
        except EnvironmentFailure as exc:
            raise WheelhouseUnavailable(users, name, exc) from None


def images_needed(pipeline: Pipeline) -> set[str]:
    """The builder images a pipeline's steps run in (with a backend that builds images: docker, sandbox)."""
    if pipeline.builder == "go":
        return {"debian" if t.cgo else "go" for t in pipeline.targets}
    if pipeline.builder == "paddle":
        from reprobuild.kinds.paddle.builder import IMAGE

        return {IMAGE}
    return {pipeline.image}


def check_image_pins(pipelines: Sequence[Pipeline], lock: Lock, builders_dir: Path) -> None:
    """Every debootstrap image the pipelines need has an up-to-date lock entry (BadInput/CheckFailed if not)."""
    from reprobuild.backends.images.spec import load_spec
    from reprobuild.backends.images.store import ImageStore

    for name in sorted(set().union(*(images_needed(p) for p in pipelines))):
        spec = load_spec(builders_dir, name)
        if spec.base == "debootstrap":
            ImageStore.locked_entry(spec, lock)
