"""A small ELF reader: section headers and (decompressed) section contents, 32/64-bit, both endians.

Enough for the post-build assertions (build-ID notes, embedded paths in compressed DWARF) without
depending on binutils.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SHF_COMPRESSED = 0x800
SHT_NOBITS = 8
ELFCOMPRESS_ZLIB = 1


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int


class Elf:
    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF":
            raise ValueError("not an ELF file")
        self.data = data
        self.is64 = data[4] == 2
        self.endian = "<" if data[5] == 1 else ">"
        self.sections = self._sections()

    @classmethod
    def open(cls, path: Path) -> Elf:
        return cls(path.read_bytes())

    @staticmethod
    def is_elf(head: bytes) -> bool:
        return head[:4] == b"\x7fELF"

    def _sections(self) -> list[Section]:
        e, d = self.endian, self.data
        if self.is64:
            shoff, = struct.unpack_from(e + "Q", d, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", d, 0x3A)
            fmt = e + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(e + "I", d, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", d, 0x2E)
            fmt = e + "IIIIIIIIII"
        raw = [struct.unpack_from(fmt, d, shoff + i * shentsize) for i in range(shnum)]
        if not raw:
            return []
        strtab = raw[shstrndx]
        str_off = strtab[4]

        def name_at(off: int) -> str:
            end = d.index(b"\0", str_off + off)
            return d[str_off + off:end].decode("utf-8", "replace")

        return [Section(name_at(r[0]), r[1], r[2], r[4], r[5]) for r in raw]

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def raw(self, section: Section) -> bytes:
        if section.type == SHT_NOBITS:
            return b""
        return self.data[section.offset:section.offset + section.size]

    def contents(self, section: Section) -> bytes:
        """The section's bytes, decompressed when it is SHF_COMPRESSED (zlib) or a legacy .zdebug section."""
        data = self.raw(section)
        if section.flags & SHF_COMPRESSED:
            hdr = struct.calcsize(self.endian + ("IIQQ" if self.is64 else "III"))
            ch_type = struct.unpack_from(self.endian + "I", data, 0)[0]
            if ch_type == ELFCOMPRESS_ZLIB:
                return zlib.decompress(data[hdr:])
        if section.name.startswith(".zdebug") and data[:4] == b"ZLIB":
            return zlib.decompress(data[12:])
        return data

    def note_descriptor(self, name: str) -> bytes | None:
        """The descriptor of the first note in a SHT_NOTE section, or None when the section is absent."""
        s = self.section(name)
        if s is None:
            return None
        data = self.raw(s)
        if len(data) < 12:
            return b""
        namesz, descsz, _ = struct.unpack_from(self.endian + "III", data, 0)
        start = 12 + ((namesz + 3) & ~3)
        return data[start:start + descsz]

    def find(self, needle: bytes) -> list[str]:
        """Where `needle` occurs: section names (decompressed debug sections searched too), or `file`."""
        places = []
        for s in self.sections:
            if not s.size or s.type == SHT_NOBITS:
                continue
            try:
                body = self.contents(s)
            except zlib.error:
                body = self.raw(s)
            if needle in body:
                places.append(s.name or "(unnamed)")
        if not places and needle in self.data:
            places.append("file")
        return places
