"""What Go's plugin loader compares, read from an ELF file alone (no `go` process, nothing loaded).

`plugin.Open` (runtime/plugin.go, `plugin_lastmoduleinit`) accepts a plugin when, for every package the
plugin was linked with (`moduledata.pkghashes`, in the linker's library order), the package's link-time
hash equals the hash the running process resolves for it. Both sides carry those hashes as ELF symbols
(cmd/link/internal/ld/symtab.go): `go:link.pkghashbytes.<package>` holds the 8-byte fingerprint of the
package's export data, and `go:link.pkghash.<package>` a Go string pointing at it. A plugin, and a host that
imports package `plugin`, export both in their dynamic symbol table; the plugin's reference to each
`go:link.pkghash.<package>` is bound by the dynamic linker to the first definition in the process: the
host's, else an earlier plugin's (plugins are opened RTLD_GLOBAL), else its own. The plugin's own order of
packages is its local symbols `go:link.pkgname.<i>`, and its plugin path `go:link.thispluginpath`.

There is no separate check of the Go release: a different release changes the runtime packages' hashes.
The Go version, build settings and module versions come from the build info (`formats.gobuildinfo`) and
serve to explain a mismatch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild.formats.elf import ElfError, ElfFile, Section
from reprobuild.formats.gobuildinfo import BuildInfo, read_build_info

HASH_PREFIX = b"go:link.pkghashbytes."
NAME_PREFIX = b"go:link.pkgname."
PLUGINPATH = b"go:link.thispluginpath"
ET_DYN = 3
SHT_SYMTAB = 2
SHT_DYNSYM = 11


@dataclass(frozen=True)
class GoLinkInfo:
    """One Go executable or plugin, as the plugin loader sees it."""

    path: Path
    machine: int  # ELF e_machine: the loader cannot even map a plugin of another architecture
    shared_object: bool  # ET_DYN
    build: BuildInfo
    exported: dict[str, bytes] = field(default_factory=dict)  # package -> fingerprint, in .dynsym
    packages: tuple[str, ...] = ()  # a plugin's pkghashes, in the loader's order
    ordered: bool = True  # False: no .symtab (stripped), `packages` is sorted by name instead
    pluginpath: str = ""
    # Links package plugin: only then does the linker export the hashes (`ctxt.CanUsePlugins()`).
    imports_plugin: bool = False

    @property
    def go_version(self) -> str:
        return self.build.go_version

    @property
    def build_mode(self) -> str:
        return self.build.settings.get("-buildmode", "exe" if not self.shared_object else "")

    def module_of(self, package: str) -> tuple[str, str] | None:
        """(module path, version) of the module providing `package`, from the build info."""
        best: tuple[str, str] | None = None
        candidates = [(m.path, m.replaced_by.version if m.replaced_by else m.version) for m in self.build.deps.values()]
        if self.build.main is not None:
            candidates.append((self.build.main.path, self.build.main.version))
        for mod, version in candidates:
            if (package == mod or package.startswith(mod + "/")) and (best is None or len(mod) > len(best[0])):
                best = (mod, version)
        return best


class NotGoBinary(ElfError):
    """An ELF file without Go build information."""


def read_link_info(path: Path) -> GoLinkInfo:
    """Read `path`; raises ElfError when it is not ELF, NotGoBinary when it carries no Go build info."""
    elf = ElfFile.open(path)
    build = read_build_info(elf)
    if build is None:
        raise NotGoBinary(f"{path}: not a Go binary (no Go build information)")
    machine, = struct.unpack_from(elf.endian + "H", elf.data, 18)
    etype, = struct.unpack_from(elf.endian + "H", elf.data, 16)
    dyn = _symbols(elf, SHT_DYNSYM, (HASH_PREFIX,), ())
    exported = {name[len(HASH_PREFIX):].decode(): _read(elf, value, size)
                for name, (value, size) in dyn.items() if name.startswith(HASH_PREFIX)}
    local = _symbols(elf, SHT_SYMTAB, (NAME_PREFIX,), (PLUGINPATH,))
    names: list[tuple[int, str]] = []
    for name, (value, size) in local.items():
        if name.startswith(NAME_PREFIX):
            suffix = name[len(NAME_PREFIX):]
            if suffix.isdigit():
                names.append((int(suffix), _read(elf, value, size).decode("utf-8", "replace")))
    pluginpath = ""
    if PLUGINPATH in local:
        pluginpath = _read(elf, *local[PLUGINPATH]).decode("utf-8", "replace")
    packages = tuple(n for _, n in sorted(names)) if names else tuple(sorted(exported))
    return GoLinkInfo(path=path, machine=machine, shared_object=etype == ET_DYN, build=build, exported=exported,
                      packages=packages, ordered=bool(names), pluginpath=pluginpath,
                      imports_plugin="plugin" in exported)


def _symbols(elf: ElfFile, kind: int, prefixes: tuple[bytes, ...],
             exact: tuple[bytes, ...]) -> dict[bytes, tuple[int, int]]:
    """Name -> (value, size) of the symbols of the first section of type `kind` whose names start with one of
    `prefixes` or equal one of `exact`. The string table is searched first, so only those entries are decoded."""
    table = next((s for s in elf.sections if s.type == kind), None)
    if table is None:
        return {}
    link = _link(elf, table)
    if link is None:
        return {}
    strtab = elf.raw(link)
    wanted: dict[int, bytes] = {}
    for prefix in prefixes:
        pos = strtab.find(prefix)
        while pos >= 0:
            if pos == 0 or strtab[pos - 1] == 0:
                end = strtab.find(b"\0", pos)
                wanted[pos] = strtab[pos:end]
            pos = strtab.find(prefix, pos + 1)
    for name in exact:
        pos = strtab.find(b"\0" + name + b"\0")
        if pos >= 0:
            wanted[pos + 1] = name
    if not wanted:
        return {}
    raw = elf.raw(table)
    if elf.bits == 64:
        fmt, entsize, name_i, value_i, size_i = elf.endian + "IBBHQQ", 24, 0, 4, 5
    else:
        fmt, entsize, name_i, value_i, size_i = elf.endian + "IIIBBH", 16, 0, 1, 2
    found: dict[bytes, tuple[int, int]] = {}
    usable = len(raw) - len(raw) % entsize
    for entry in struct.iter_unpack(fmt, raw[:usable]):
        hit = wanted.get(entry[name_i])
        if hit is not None and entry[value_i] and hit not in found:
            found[hit] = (entry[value_i], entry[size_i])
    return found


def _link(elf: ElfFile, table: Section) -> Section | None:
    """The string table of a symbol table (its sh_link, found again from the section header)."""
    index = elf.sections.index(table)
    if elf.bits == 64:
        shoff, = struct.unpack_from(elf.endian + "Q", elf.data, 0x28)
        shentsize, = struct.unpack_from(elf.endian + "H", elf.data, 0x3A)
        link, = struct.unpack_from(elf.endian + "I", elf.data, shoff + index * shentsize + 40)
    else:
        shoff, = struct.unpack_from(elf.endian + "I", elf.data, 0x20)
        shentsize, = struct.unpack_from(elf.endian + "H", elf.data, 0x2E)
        link, = struct.unpack_from(elf.endian + "I", elf.data, shoff + index * shentsize + 24)
    return elf.sections[link] if 0 < link < len(elf.sections) else None


def _read(elf: ElfFile, addr: int, size: int) -> bytes:
    try:
        return elf.read_vaddr(addr, size)
    except ElfError:
        return b""
