"""The one ELF reader: section headers, notes, compressed debug sections, virtual-address reads.

What the post-build assertions (build-ID notes, embedded paths in compressed DWARF) and the ELF
comparator need, in pure Python (no pyelftools, no binutils): 32/64-bit, either byte order.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

SHT_NOBITS = 8
SHT_NOTE = 7
SHT_SYMTAB = 2
STT_OBJECT = 1
SHF_ALLOC = 0x2
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
ELFCOMPRESS_ZSTD = 2
MAX_DECOMPRESSED = 256 << 20


class ElfError(ValueError):
    """Not an ELF file, or one this reader cannot follow."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & SHF_COMPRESSED) or self.name.startswith(".zdebug")


@dataclass(frozen=True)
class Symbol:
    """A `.symtab` entry: its name, value (a virtual address for data), size, type and section index."""

    name: str
    value: int
    size: int
    type: int
    section_index: int


@dataclass(frozen=True)
class Note:
    owner: bytes
    type: int
    desc: bytes


@dataclass(frozen=True)
class Hit:
    """Where a string was found: the section (`file` outside any), the offset in it (in the decompressed bytes of
    a compressed section), and the printable string around it, so a reader can judge what it is."""

    section: str
    offset: int
    context: str

    def describe(self) -> str:
        return f"{self.section} at offset {self.offset:#x}: \"{self.context}\""


# Bytes that continue a path: a match must not be glued to them (`/root` in `/proc/%d/root/%s` is not the path).
_PATH_BYTES = rb"A-Za-z0-9._~+@%-"
CONTEXT = 60  # printable bytes shown on each side of a hit


def _printable_around(data: bytes, start: int, end: int) -> str:
    lo = start
    while lo > max(0, start - CONTEXT) and 0x20 <= data[lo - 1] < 0x7F:
        lo -= 1
    hi = end
    while hi < min(len(data), end + CONTEXT) and 0x20 <= data[hi] < 0x7F:
        hi += 1
    return data[lo:hi].decode("ascii")


class ElfFile:
    """An ELF image held in memory (`data`), parsed lazily."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or len(data) < 52:
            raise ElfError("not an ELF file")
        if data[4] not in (1, 2) or data[5] not in (1, 2):
            raise ElfError("unknown ELF class or byte order")
        self.data = data
        self.bits = 64 if data[4] == 2 else 32
        self.endian = "<" if data[5] == 1 else ">"
        self.sections = self._read_sections()
        self._inflated: dict[str, bytes] = {}

    @classmethod
    def open(cls, path: Path) -> ElfFile:
        return cls(path.read_bytes())

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        try:
            return struct.unpack_from(self.endian + fmt, self.data, offset)
        except struct.error:
            raise ElfError(f"truncated ELF structure at offset {offset:#x}") from None

    def _read_sections(self) -> tuple[Section, ...]:
        if self.bits == 64:
            shoff, = self._unpack("Q", 0x28)
            shentsize, shnum, shstrndx = self._unpack("HHH", 0x3A)
            fmt = "IIQQQQIIQQ"
        else:
            shoff, = self._unpack("I", 0x20)
            shentsize, shnum, shstrndx = self._unpack("HHH", 0x2E)
            fmt = "IIIIIIIIII"
        if shoff == 0:
            return ()
        raw = []
        for i in range(shnum):
            name, typ, flags, addr, offset, size, *_ = self._unpack(fmt, shoff + i * shentsize)
            raw.append((name, typ, flags, addr, offset, size))
        if not raw or shstrndx >= len(raw):
            return ()
        strtab_off, strtab_size = raw[shstrndx][4], raw[shstrndx][5]
        strtab = self.data[strtab_off:strtab_off + strtab_size]
        sections = []
        for name_off, typ, flags, addr, offset, size in raw:
            end = strtab.find(b"\0", name_off)
            label = strtab[name_off:end if end >= 0 else None].decode("utf-8", "replace")
            sections.append(Section(label, typ, flags, addr, offset, size))
        return tuple(sections)

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def raw(self, section: Section) -> bytes:
        """The section's bytes as stored in the file (empty for .bss-like sections)."""
        if section.type == SHT_NOBITS:
            return b""
        return self.data[section.offset:section.offset + section.size]

    def contents(self, section: Section) -> bytes:
        """The section's bytes, decompressed when it is an SHF_COMPRESSED or `.zdebug` section.

        Raises ElfError for a compression this reader lacks (zstd): the caller can fall back to
        `objcopy --decompress-debug-sections`.
        """
        if section.name in self._inflated:
            return self._inflated[section.name]
        data = self._decompress(section)
        if section.compressed:
            self._inflated[section.name] = data
        return data

    def _decompress(self, section: Section) -> bytes:
        raw = self.raw(section)
        if section.flags & SHF_COMPRESSED:
            if self.bits == 64:
                ch_type, _, ch_size, _ = struct.unpack_from(self.endian + "IIQQ", raw, 0)
                body = raw[24:]
            else:
                ch_type, ch_size, _ = struct.unpack_from(self.endian + "III", raw, 0)
                body = raw[12:]
            _check_size(section.name, ch_size)
            if ch_type == ELFCOMPRESS_ZSTD:
                return _unzstd(body, ch_size, section.name)
            if ch_type != ELFCOMPRESS_ZLIB:
                raise ElfError(f"section {section.name} is compressed with type {ch_type}")
            return _inflate(body, ch_size, section.name)
        if section.name.startswith(".zdebug") and raw[:4] == b"ZLIB":
            size, = struct.unpack_from(">Q", raw, 4)
            _check_size(section.name, size)
            return _inflate(raw[12:], size, section.name)
        return raw

    def notes(self, section: Section) -> list[Note]:
        data = self.raw(section)
        notes: list[Note] = []
        pos = 0
        while pos + 12 <= len(data):
            namesz, descsz, typ = struct.unpack_from(self.endian + "III", data, pos)
            pos += 12
            owner = data[pos:pos + namesz].rstrip(b"\0")
            pos += (namesz + 3) & ~3
            desc = data[pos:pos + descsz]
            pos += (descsz + 3) & ~3
            notes.append(Note(owner, typ, desc))
        return notes

    def note_descriptor(self, name: str) -> bytes | None:
        """The descriptor of the first note in section `name` (b"" when it holds none), None when it is absent."""
        section = self.section(name)
        if section is None:
            return None
        notes = self.notes(section)
        return notes[0].desc if notes else b""

    def find(self, needle: bytes) -> list[str]:
        """Where `needle` occurs: section names (compressed debug sections searched decompressed), or `file`."""
        places = []
        in_file = needle in self.data  # a stored section holds it only if the file does: one pass, no copies
        for s in self.sections:
            if not s.size or s.type == SHT_NOBITS:
                continue
            if not s.compressed:
                if in_file and self.data.find(needle, s.offset, s.offset + s.size) >= 0:
                    places.append(s.name or "(unnamed)")
                continue
            body = self.contents(s)  # ElfError when it cannot be decompressed: never search unseen bytes
            if needle in body:
                places.append(s.name or "(unnamed)")
        if not places and in_file:
            places.append("file")
        return places

    def find_path(self, path: str, limit: int = 5) -> list[Hit]:
        """Where `path` occurs as a whole path prefix: ending where a path component ends, and not continuing
        a longer path (`/root` matches `/root/.cache/x` and `"/root"`, not `/proc/%d/root/%s` nor `/rootfs`).
        Go packs string literals without separators, so a match glued to a word that holds no `/` still counts.
        At most `limit` hits, each with its offset and surrounding printable string."""
        needle = path.rstrip("/").encode() or b"/"
        pattern = re.compile(re.escape(needle) + rb"(?![" + _PATH_BYTES + rb"])")
        return self.find_pattern(pattern, needle, limit, whole=True)

    def find_string(self, text: str, limit: int = 5) -> list[Hit]:
        """Where `text` occurs anywhere (a pipeline's extra forbidden string)."""
        needle = text.encode()
        return self.find_pattern(re.compile(re.escape(needle)), needle, limit)

    def find_pattern(self, pattern: re.Pattern[bytes], needle: bytes, limit: int = 5, whole: bool = False) -> list[Hit]:
        """Hits of `pattern` (which matches `needle`), section by section; `whole`: not those continuing a path."""
        hits: list[Hit] = []
        in_file = needle in self.data  # a stored section holds it only if the file does
        covered: list[tuple[int, int]] = []
        for s in self.sections:
            if not s.size or s.type == SHT_NOBITS or len(hits) >= limit:
                continue
            if not s.compressed:
                covered.append((s.offset, s.offset + s.size))
                if in_file:
                    hits += [Hit(s.name or "(unnamed)", m.start() - s.offset,
                                 _printable_around(self.data, m.start(), m.end()))
                             for m in _limited(pattern.finditer(self.data, s.offset, s.offset + s.size), limit,
                                               self.data if whole else None)]
                continue
            body = self.contents(s)  # ElfError when it cannot be decompressed: never search unseen bytes
            if needle in body:
                hits += [Hit(f"{s.name} (decompressed)", m.start(), _printable_around(body, m.start(), m.end()))
                         for m in _limited(pattern.finditer(body), limit, body if whole else None)]
        if in_file and not hits:  # outside every section (headers, padding)
            hits += [Hit("file", m.start(), _printable_around(self.data, m.start(), m.end()))
                     for m in _limited(pattern.finditer(self.data), limit, self.data if whole else None)
                     if not any(a <= m.start() < b for a, b in covered)]
        return hits[:limit]

    @cached_property
    def _loaded(self) -> list[Section]:
        return [s for s in self.sections if s.flags & SHF_ALLOC and s.type != SHT_NOBITS and s.addr]

    def read_vaddr(self, addr: int, size: int) -> bytes:
        """`size` bytes at virtual address `addr` (for pointers in pre-1.18 Go build info)."""
        for s in self._loaded:
            if s.addr <= addr and addr + size <= s.addr + s.size:
                start = s.offset + (addr - s.addr)
                return self.data[start:start + size]
        raise ElfError(f"address {addr:#x} is not in any loaded section")

    def symbols(self) -> list[Symbol]:
        """The static symbol table (`.symtab`, names from `.strtab`); empty for a stripped file."""
        table, names = self.section(".symtab"), self.section(".strtab")
        if table is None or names is None or table.type != SHT_SYMTAB:
            return []
        raw, strtab = self.raw(table), self.raw(names)
        entry = 24 if self.bits == 64 else 16
        fmt = self.endian + ("IBBHQQ" if self.bits == 64 else "IIIBBH")
        found = []
        for pos in range(0, len(raw) - entry + 1, entry):
            if self.bits == 64:
                name_off, info, _, shndx, value, size = struct.unpack_from(fmt, raw, pos)
            else:
                name_off, value, size, info, _, shndx = struct.unpack_from(fmt, raw, pos)
            end = strtab.find(b"\0", name_off)
            name = strtab[name_off:end if end >= 0 else None].decode("utf-8", "replace")
            found.append(Symbol(name, value, size, info & 0xF, shndx))
        return found

    def uint(self, data: bytes, size: int, big_endian: bool | None = None) -> int:
        order = ">" if (big_endian if big_endian is not None else self.endian == ">") else "<"
        return int(struct.unpack_from(order + ("Q" if size == 8 else "I"), data, 0)[0])


def _check_size(name: str, size: int) -> None:
    if size > MAX_DECOMPRESSED:
        raise ElfError(f"section {name} decompresses to {size} bytes, more than the {MAX_DECOMPRESSED >> 20} MiB "
                       "this reader searches")


def _inflate(body: bytes, size: int, name: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, size)
    except zlib.error as exc:
        raise ElfError(f"section {name}: {exc}") from None
    if len(out) != size or d.unconsumed_tail:
        raise ElfError(f"section {name}: decompresses to other than its declared {size} bytes")
    return out


def _unzstd(body: bytes, size: int, name: str) -> bytes:
    """zstd-compressed section bytes, by the `zstd` tool (Debian package zstd) through pipes, its output cut off
    past the declared size; ElfError without the tool."""
    from reprobuild import proc
    from reprobuild.errors import EnvironmentFailure

    try:
        done = proc.filter_bytes([proc.which("zstd", "zstd"), "-q", "-d", "-c"], body, size)
    except EnvironmentFailure as exc:
        raise ElfError(f"section {name} is compressed with zstd and cannot be read here ({exc})") from None
    if done.returncode != 0 or len(done.stdout) != size:
        raise ElfError(f"section {name}: zstd could not decompress it to its declared {size} bytes")
    return done.stdout


_PATH_SET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+@%-")


def continues_a_path(data: bytes, start: int) -> bool:
    """Whether the bytes before `start` are a path that a match at `start` would continue: a `/`, possibly
    followed by a name (`/proc/%d` before `/root`). A word with no `/` before it is only a neighbour."""
    i = start
    while i > 0 and start - i < 255 and data[i - 1] in _PATH_SET:
        i -= 1
    return i > 0 and data[i - 1] == 0x2F


def _limited(matches: Iterator[re.Match[bytes]], limit: int, whole_in: bytes | None = None) -> list[re.Match[bytes]]:
    found = []
    for m in matches:
        if whole_in is not None and continues_a_path(whole_in, m.start()):
            continue
        found.append(m)
        if len(found) >= limit:
            break
    return found
