"""gzip: the header (mtime, original file name, flags, OS), then the decompressed data.

The original file name counts as `timestamp`: gzip records it with the mtime and `gzip -n` drops both.

`gzip` without `-n` records the input's mtime and name; Python's gzip module records the time of
compression. A `.tar.gz` recurses into the tar comparator through the decompressed data.
"""

from __future__ import annotations

import datetime as dt
import gzip as gzipmod
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from reprobuild.evidence.comparators.base import MAX_MEMBER_BYTES, TOO_LARGE, Cause, Context, same_bytes, short

MAGIC = b"\x1f\x8b"
FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT = 1, 2, 4, 8, 16


@dataclass(frozen=True)
class GzipHeader:
    method: int
    flags: int
    mtime: int
    xfl: int
    os: int
    extra: bytes
    name: bytes | None
    comment: bytes | None


def recognizes(path: Path, head: bytes) -> bool:
    return head[:2] == MAGIC


def read_header(path: Path) -> GzipHeader:
    with open(path, "rb") as fh:
        data = fh.read(10)
        if len(data) < 10 or data[:2] != MAGIC:
            raise ValueError("not a gzip file")
        method, flags, mtime, xfl, os_ = struct.unpack("<BBIBB", data[2:])
        extra = b""
        if flags & FEXTRA:
            n, = struct.unpack("<H", fh.read(2))
            extra = fh.read(n)
        name = _zstring(fh) if flags & FNAME else None
        comment = _zstring(fh) if flags & FCOMMENT else None
    return GzipHeader(method, flags, mtime, xfl, os_, extra, name, comment)


def _zstring(fh: BinaryIO) -> bytes:
    out = bytearray()
    while (ch := fh.read(1)) not in (b"", b"\0"):
        out += ch
        if len(out) > 4096:
            break
    return bytes(out)


def header_causes(ha: GzipHeader, hb: GzipHeader) -> list[Cause]:
    """What differs between two gzip headers, in the cause vocabulary."""
    causes = []
    if ha.mtime != hb.mtime:
        causes.append(Cause("timestamp", f"gzip header mtime {_when(ha.mtime)} (A) vs {_when(hb.mtime)} (B) "
                                         "(use gzip -n, or GzipFile(mtime=0))"))
    if ha.name != hb.name:
        # Recorded together with the mtime, and dropped together with it by `gzip -n` (--no-name).
        causes.append(Cause("timestamp", f"gzip header file name {_name(ha.name)} (A) vs {_name(hb.name)} (B), "
                                         "recorded with the mtime (use gzip -n)"))
    others = [f"{field} {va} (A) vs {vb} (B)" for field, va, vb in (
        ("compression flags (XFL)", ha.xfl, hb.xfl), ("OS", ha.os, hb.os), ("method", ha.method, hb.method),
        ("extra field", ha.extra.hex() or "none", hb.extra.hex() or "none"),
        ("comment", _name(ha.comment), _name(hb.comment)),
    ) if va != vb]
    if others:
        causes.append(Cause("content", "gzip header " + "; ".join(others)))
    return causes


def _when(mtime: int) -> str:
    if mtime == 0:
        return "0 (unset)"
    return f"{mtime} ({dt.datetime.fromtimestamp(mtime, dt.UTC):%Y-%m-%dT%H:%M:%SZ})"


def _name(value: bytes | None) -> str:
    return "none" if value is None else short(value.decode("latin-1"), 80)


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    try:
        causes = header_causes(read_header(a), read_header(b))
    except (ValueError, struct.error) as exc:
        return [Cause("content", f"gzip: unreadable header ({exc})")]
    out_a, out_b = ctx.scratch_pair(_inner_name(a))
    errors = [err for src, dst in ((a, out_a), (b, out_b)) if (err := _gunzip(src, dst, ctx))]
    if errors:
        return [*causes, Cause("content", f"gzip: cannot decompress: {'; '.join(errors)}")]
    if same_bytes(out_a, out_b):
        if not causes:
            causes.append(Cause("content", "same decompressed data; the compressed stream differs "
                                           "(another compression level or implementation)"))
        return causes
    return causes + ctx.recurse(out_a, out_b, None)


def _inner_name(path: Path) -> str:
    name = path.name
    for suffix, repl in ((".tgz", ".tar"), (".gz", ""), (".z", "")):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + repl
    return name + ".data"


def _gunzip(src: Path, dst: Path, ctx: Context) -> str | None:
    """Decompress `src` into `dst`; a message when it cannot (corrupt, or larger than the bound)."""
    try:
        with gzipmod.open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 20):
                if not ctx.budget.take_bytes(len(chunk)) or fout.tell() + len(chunk) > MAX_MEMBER_BYTES:
                    return f"{TOO_LARGE}: {src.name} decompresses to more than the compare's budget"
                fout.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return f"{src.name}: {exc}"
    return None
