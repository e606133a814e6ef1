"""What to do about a pinned toolchain that is not installed (for `doctor`): no promise the machine cannot keep."""

from __future__ import annotations

from reprobuild.config.model import PlatformPin, Toolchain
from reprobuild.toolchains.cache import ToolchainCache


def imported(cache: ToolchainCache, pin: PlatformPin) -> bool:
    return all((cache.root / "archives" / f.sha256).exists() for f in pin.files)


def missing_hint(cache: ToolchainCache, tc: Toolchain, pin: PlatformPin) -> str:
    """What a build will do about a toolchain that is not installed: no promise the machine cannot keep."""
    files = ", ".join(f.name for f in pin.files)
    if imported(cache, pin):
        return f"imported ({files}): installed by the next build or `reprobuild toolchain fetch {tc.name}`"
    if cache.offline:
        return f"offline: get {files} on a connected machine and run `reprobuild toolchain import FILE`"
    source = {"url": "its URL and mirrors", "wheel": "pip's index", "deb": "apt's sources"}.get(tc.source, tc.source)
    return (f"`reprobuild toolchain fetch {tc.name}` tries {source} now; a build that needs it fetches it before "
            "any unit builds and stops at once (exit 3) if it cannot; or "
            f"`reprobuild toolchain import {pin.files[0].name}`")
