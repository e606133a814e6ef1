"""zip (and wheels, jars): entry order, DOS dates and extended timestamps, modes, then the members."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

from reprobuild.evidence.comparators.base import (
    MAX_MEMBER_BYTES,
    MAX_RECURSE_MEMBERS,
    TOO_LARGE,
    Cause,
    Context,
    clip,
    examples,
    membership_causes,
    plural,
    short,
)

EXTENDED_TIMESTAMP = 0x5455  # "UT": Unix mtime/atime/ctime
INFOZIP_UNIX = (0x5855, 0x7875)  # "UX"/"ux": old Unix times and uid/gid


def recognizes(path: Path, head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    try:
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            return _explain(za, zb, ctx)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return [Cause("content", f"zip: unreadable ({exc})")]


def _explain(za: zipfile.ZipFile, zb: zipfile.ZipFile, ctx: Context) -> list[Cause]:
    ia, ib = za.infolist(), zb.infolist()
    if len(ia) + len(ib) > ctx.budget.members:
        ctx.budget.exhausted = True
        return [Cause("content", f"zip: {TOO_LARGE}: {len(ia)} (A) and {len(ib)} (B) entries, past the "
                                 "compare's member budget")]
    ctx.budget.members -= len(ia) + len(ib)
    by_a = {i.filename: i for i in reversed(ia)}
    by_b = {i.filename: i for i in reversed(ib)}
    causes = membership_causes("zip", [i.filename for i in ia], [i.filename for i in ib],
                               "write entries in sorted order")
    pairs = [(by_a[i.filename], by_b[i.filename]) for i in ia if i.filename in by_b]
    times: list[str] = []
    modes: list[str] = []
    owners: list[str] = []
    other: list[str] = []
    differing: list[str] = []
    for x, y in pairs:
        name = short(x.filename, 60)
        if x.date_time != y.date_time:
            times.append(f"{name} {_dos(x.date_time)} (A) vs {_dos(y.date_time)} (B)")
        elif _extra(x.extra, EXTENDED_TIMESTAMP) != _extra(y.extra, EXTENDED_TIMESTAMP):
            times.append(f"{name} extended timestamp (extra field 0x5455)")
        if (x.external_attr >> 16) != (y.external_attr >> 16):
            modes.append(f"{name} {x.external_attr >> 16:06o} (A) vs {y.external_attr >> 16:06o} (B)")
        elif x.external_attr != y.external_attr:
            dos_a, dos_b = x.external_attr & 0xFFFF, y.external_attr & 0xFFFF
            modes.append(f"{name} DOS attributes {dos_a:#x} (A) vs {dos_b:#x} (B)")
        if any(_extra(x.extra, t) != _extra(y.extra, t) for t in INFOZIP_UNIX):
            owners.append(f"{name} Info-ZIP Unix extra field (uid/gid)")
        fields = [f for f in ("compress_type", "create_system", "create_version", "extract_version", "flag_bits",
                              "comment") if getattr(x, f) != getattr(y, f)]
        if _other_extra(x.extra) != _other_extra(y.extra):
            fields.append("extra field")
        if fields:
            other.append(f"{name} {', '.join(fields)}")
        if x.CRC != y.CRC or x.file_size != y.file_size:
            differing.append(x.filename)
    n = len(pairs)
    if times:
        causes.append(Cause("timestamp", clip(f"zip entry times differ for {len(times)} of {n}: {examples(times)} "
                                              "(set SOURCE_DATE_EPOCH, or fix date_time)")))
    if modes:
        causes.append(Cause("file-mode", clip(f"zip entry modes differ for {len(modes)} of {n}: {examples(modes)}")))
    if owners:
        causes.append(Cause("owner", clip(f"zip entry owners differ for {len(owners)} of {n}: {examples(owners)} "
                                          "(zip -X)")))
    if other:
        causes.append(Cause("content", clip(f"zip entry headers differ for {len(other)} of {n}: {examples(other)}")))
    if za.comment != zb.comment:
        causes.append(Cause("content", f"zip archive comment {short(za.comment)} (A) vs {short(zb.comment)} (B)"))
    chosen = [name for name in differing
              if max(by_a[name].file_size, by_b[name].file_size) <= MAX_MEMBER_BYTES][:MAX_RECURSE_MEMBERS]
    chosen = [n for n in chosen if ctx.budget.take_bytes(by_a[n].file_size + by_b[n].file_size)]
    for name in chosen:
        pa, pb = ctx.scratch_pair(name)
        for archive, dest in ((za, pa), (zb, pb)):
            with archive.open(name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)  # zipfile stops at the declared size (and checks the CRC)
        causes += ctx.recurse(pa, pb, name)
    rest = [name for name in differing if name not in chosen]
    if rest:
        causes.append(Cause("content", clip(f"{plural(len(rest), 'more zip member')} differ in content: "
                                            f"{examples(rest)}")))
    if not causes:
        causes.append(Cause("content", "same entries, attributes and data; the zip framing differs "
                                       "(local headers, data descriptors or central directory)"))
    return causes


def _dos(date_time: tuple[int, int, int, int, int, int]) -> str:
    y, mo, d, h, mi, s = date_time
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def _fields(extra: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        out.append((tag, extra[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return out


def _extra(extra: bytes, tag: int) -> bytes | None:
    for t, body in _fields(extra):
        if t == tag:
            return body
    return None


def _other_extra(extra: bytes) -> list[tuple[int, bytes]]:
    return [(t, body) for t, body in _fields(extra) if t not in (EXTENDED_TIMESTAMP, *INFOZIP_UNIX)]
