"""Go build information (what `go version -m` prints), read straight from a binary.

Follows `debug/buildinfo`: a 32-byte header starting with the magic `\\xff Go buildinf:`, then
either the Go version and module info inline as varint-prefixed strings (Go 1.18+), or two
pointers to Go string headers (older Go). The module info is framed by 16-byte sentinels.
No Go toolchain is needed; `go version -m` is the fallback (see `from_go_version`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reprobuild import proc
from reprobuild.formats.elf import ElfError, ElfFile

MAGIC = b"\xff Go buildinf:"
FLAGS_ENDIAN_BIG = 0x1
FLAGS_VERSION_INLINE = 0x2


@dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str = ""
    replaced_by: Module | None = None

    def __str__(self) -> str:
        text = f"{self.version} {self.sum}".strip()
        if self.replaced_by:
            text += f" => {self.replaced_by.path} {self.replaced_by.version} {self.replaced_by.sum}".rstrip()
        return text


@dataclass(frozen=True)
class BuildInfo:
    go_version: str
    path: str = ""
    main: Module | None = None
    deps: dict[str, Module] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


def read_build_info(elf: ElfFile) -> BuildInfo | None:
    """The binary's build info, or None when it is not a Go binary (or carries none)."""
    section = elf.section(".go.buildinfo")
    if section is not None:
        blob = elf.raw(section)
        start = blob.find(MAGIC)
    else:
        blob, start = elf.data, _find_aligned(elf.data)
    if start < 0:
        return None
    header = blob[start:start + 32]
    if len(header) < 32:
        return None
    ptr_size, flags = header[14], header[15]
    if flags & FLAGS_VERSION_INLINE:
        version, pos = _varint_string(blob, start + 32)
        modinfo, _ = _varint_string(blob, pos)
    else:
        if ptr_size not in (4, 8):
            return None
        big = bool(flags & FLAGS_ENDIAN_BIG)
        version = _pointed_string(elf, elf.uint(header[16:], ptr_size, big), ptr_size, big)
        modinfo = _pointed_string(elf, elf.uint(header[16 + ptr_size:], ptr_size, big), ptr_size, big)
    if not version:
        return None
    modinfo = modinfo[16:-16] if len(modinfo) >= 33 and modinfo[-17] == "\n" else ""
    return parse_modinfo(version, modinfo)


def _find_aligned(data: bytes) -> int:
    pos = data.find(MAGIC)
    while pos >= 0 and pos % 16:
        pos = data.find(MAGIC, pos + 1)
    return pos


def _varint_string(data: bytes, pos: int) -> tuple[str, int]:
    length, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return data[pos:pos + length].decode("utf-8", "replace"), pos + length


def _pointed_string(elf: ElfFile, addr: int, ptr_size: int, big: bool) -> str:
    try:
        header = elf.read_vaddr(addr, 2 * ptr_size)
        data_addr = elf.uint(header, ptr_size, big)
        length = elf.uint(header[ptr_size:], ptr_size, big)
        if length > 1 << 20:
            return ""
        return elf.read_vaddr(data_addr, length).decode("utf-8", "replace")
    except (ElfError, IndexError, ValueError):
        return ""


def parse_modinfo(go_version: str, text: str) -> BuildInfo:
    """Parse the tab-separated module info (`path`, `mod`, `dep`, `=>`, `build` lines)."""
    path = ""
    main: Module | None = None
    deps: dict[str, Module] = {}
    settings: dict[str, str] = {}
    last_dep: str | None = None
    for line in text.splitlines():
        parts = line.split("\t")
        key = parts[0]
        if key == "path" and len(parts) >= 2:
            path = parts[1]
        elif key == "mod" and len(parts) >= 3:
            main = Module(parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        elif key == "dep" and len(parts) >= 3:
            deps[parts[1]] = Module(parts[1], parts[2], parts[3] if len(parts) > 3 else "")
            last_dep = parts[1]
        elif key == "=>" and len(parts) >= 3 and last_dep:
            old = deps[last_dep]
            repl = Module(parts[1], parts[2], parts[3] if len(parts) > 3 else "")
            deps[last_dep] = Module(old.path, old.version, old.sum, repl)
        elif key == "build" and len(parts) >= 2:
            name, _, value = "\t".join(parts[1:]).partition("=")
            settings[name] = value
    return BuildInfo(go_version, path, main, deps, settings)


def from_go_version(go: Path, binary: Path) -> BuildInfo | None:
    """`go version -m BINARY`, parsed (the fallback when the built-in reader finds nothing)."""
    done = proc.run([go, "version", "-m", binary], check=False, timeout=60,
                    env={"PATH": "/usr/bin:/bin", "GOTOOLCHAIN": "local", "HOME": "/nonexistent"})
    if done.returncode != 0 or not done.stdout:
        return None
    lines = done.stdout.splitlines()
    version = lines[0].split(":", 1)[1].strip() if ":" in lines[0] else ""
    body = "\n".join(line[1:] if line.startswith("\t") else line for line in lines[1:])
    return parse_modinfo(version, body)
