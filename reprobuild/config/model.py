"""The frozen data model: what the lock pins and what pipelines ask for."""

from __future__ import annotations

import platform as _platform
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reprobuild.config.yamlload import Node

SOURCE_KINDS = ("url", "wheel", "deb")
# go: a Go distribution; base: pinned Debian packages an image is based on (config/image.py)
TOOLCHAIN_KINDS = ("go", "base")
KNOWN_PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")


def host_platform() -> str:
    """This machine as `os-arch` (Go's names)."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = "darwin" if sys.platform == "darwin" else "linux" if sys.platform.startswith("linux") else sys.platform
    return f"{system}-{arch}"


@dataclass(frozen=True)
class PinnedFile:
    """One archive a toolchain is made from, pinned by sha256 (and size when known)."""

    name: str
    sha256: str
    size: int | None = None
    url: str | None = None  # url sources only; wheels and .debs come through pip's / apt's own configuration
    mirrors: tuple[str, ...] = ()
    package: str | None = None  # wheel / deb: the package the file belongs to
    version: str | None = None  # wheel / deb: the package version

    @property
    def urls(self) -> tuple[str, ...]:
        return ((self.url,) if self.url else ()) + self.mirrors


@dataclass(frozen=True)
class PlatformPin:
    platform: str
    files: tuple[PinnedFile, ...]
    root: str  # the directory inside the unpacked tree that is GOROOT (or the toolchain's root)


@dataclass(frozen=True)
class Toolchain:
    name: str
    kind: str  # "go"
    version: str
    source: str  # one of SOURCE_KINDS
    platforms: tuple[PlatformPin, ...]
    inputs: str  # sha256 of the inputs this entry was resolved from (for `lock --check`)

    def pin(self, platform: str) -> PlatformPin | None:
        for pin in self.platforms:
            if pin.platform == platform:
                return pin
        return None


@dataclass(frozen=True)
class Lock:
    path: str
    toolchains: dict[str, Toolchain] = field(default_factory=dict)
    sections: dict[str, object] = field(default_factory=dict)  # later sections (images, python), kept verbatim
    # The same sections as loaded, with their file:line marks (for the errors of the modules that validate them).
    marked: dict[str, Node] = field(default_factory=dict, compare=False, repr=False)

    def section_node(self, name: str) -> Node | None:
        """The section with its line marks, when the lock was loaded from a file and the section is unchanged."""
        node = self.marked.get(name)
        return node if node is not None and node.plain() == self.sections.get(name) else None

    def toolchain(self, name: str) -> Toolchain:
        from reprobuild.errors import BadInput

        try:
            return self.toolchains[name]
        except KeyError:
            known = ", ".join(sorted(self.toolchains)) or "none"
            raise BadInput(f"{self.path}: no toolchain entry `{name}` (entries: {known})") from None
