"""What to do about a pinned toolchain that is not installed (for `doctor`): no promise the machine cannot keep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reprobuild.config.model import Lock, PlatformPin, Toolchain
from reprobuild.toolchains.cache import ToolchainCache
from reprobuild.toolchains.probe import FETCHABLE, UNFETCHABLE, SourceCheck, imported_files


def imported(cache: ToolchainCache, pin: PlatformPin) -> bool:
    return len(imported_files(cache, pin)) == len(pin.files)


def judge_missing(cache: ToolchainCache, lock: Lock, name: str, platform: str,
                  sources: Mapping[str, SourceCheck]) -> tuple[str, str, str]:
    """(severity, what is true, what to do) about toolchain `name` of the lock, not in the cache, given what
    its sources said (`sources[name]`; absent offline or when not asked)."""
    tc = lock.toolchains[name]
    pin = tc.pin(platform)
    assert pin is not None
    check = sources.get(name)
    alternatives: list[str] = []
    if imported(cache, pin):
        severity, state = "info", "imported"
    elif cache.offline:  # nothing can fetch it here: a build that needs it stops at once (exit 3)
        severity, state = "warning", "its sources were not asked (offline: no network used)"
    elif check is not None and check.status == FETCHABLE:
        severity, state = "info", f"fetchable from {check.where}"
    elif check is not None and check.status == UNFETCHABLE:  # a build that needs it stops at once (exit 3)
        severity, state = "error", f"cannot be fetched: {check.why}"
        alternatives = usable_alternatives(cache, lock, name, platform, sources)
    else:
        severity, state = "info", "its sources were not asked"
    return severity, state, missing_hint(cache, tc, pin, check, alternatives)


def usable_alternatives(cache: ToolchainCache, lock: Lock, name: str, platform: str,
                        sources: Mapping[str, SourceCheck]) -> list[str]:
    """Other lock entries of the same kind that are installed, imported or fetchable here (installed first)."""
    kind = lock.toolchains[name].kind
    ranked = []
    for other, tc in sorted(lock.toolchains.items()):
        pin = tc.pin(platform)
        if other == name or tc.kind != kind or pin is None:
            continue
        if cache.state(tc, pin) == "installed":
            ranked.append((0, other))
        elif imported(cache, pin) or getattr(sources.get(other), "status", None) == FETCHABLE:
            ranked.append((1, other))
    return [other for _, other in sorted(ranked)]


def missing_hint(cache: ToolchainCache, tc: Toolchain, pin: PlatformPin, check: SourceCheck | None = None,
                 alternatives: Sequence[str] = ()) -> str:
    """What to do about a toolchain that is not installed, given what its sources said (`check`)."""
    files = ", ".join(f.name for f in pin.files)
    if imported(cache, pin):
        return f"imported ({files}): installed by the next build or `reprobuild toolchain fetch {tc.name}`"
    import_it = f"`reprobuild toolchain import {pin.files[0].name}`"
    if cache.offline:
        return f"offline: get {files} on a connected machine and run {import_it}"
    if check is not None and check.status == FETCHABLE:
        return (f"`reprobuild toolchain fetch {tc.name}` installs it now; a build that needs it fetches it before "
                "any unit builds")
    if check is not None and check.status == UNFETCHABLE:
        other = " or ".join(f"`--toolchain {tc.name}={alt}`" for alt in alternatives[:2])
        return f"get {files} on a machine that can and run {import_it}" + (
            f"; or build with another lock entry: {other}" if other else "")
    source = {"url": "its URL and mirrors", "wheel": "pip's index", "deb": "apt's sources"}.get(tc.source, tc.source)
    return (f"`reprobuild toolchain fetch {tc.name}` tries {source} now; a build that needs it fetches it before "
            f"any unit builds and stops at once (exit 3) if it cannot; or {import_it}")
