"""tar: entry mtimes, entry order, modes, owners, then the differing members themselves.

A `.tar.gz` reaches this module through the gzip comparator (header first, then the tar inside);
`.tar.xz` and `.tar.bz2` are opened here directly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild.evidence.comparators.base import (
    MAX_MEMBER_BYTES,
    MAX_RECURSE_MEMBERS,
    TOO_LARGE,
    Budget,
    Cause,
    Context,
    clip,
    examples,
    membership_causes,
    plural,
    short,
)

_TIME_KEYS = ("atime", "ctime", "mtime")
_OWN_KEYS = ("uid", "gid", "uname", "gname")
_KNOWN_PAX = {"path", "linkpath", "size", *_TIME_KEYS, *_OWN_KEYS}


def recognizes(path: Path, head: bytes) -> bool:
    if head[257:262] == b"ustar":
        return True
    name = path.name.lower()
    return (name.endswith(".tar")
            or (name.endswith((".tar.xz", ".txz")) and head[:6] == b"\xfd7zXZ\x00")
            or (name.endswith((".tar.bz2", ".tbz2")) and head[:3] == b"BZh"))


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes
    mode: int
    mtime: float
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    linkname: str
    digest: str | None
    pax: dict[str, str] = field(default_factory=dict)


def _index(path: Path, budget: Budget) -> list[Entry]:
    """Every entry of the archive with a hash of its data, in one pass, within the compare's budget.

    A member whose declared size does not fit the budget is not hashed (digest None, `too_large`);
    past the budget's member count the index stops.
    """
    entries = []
    with tarfile.open(path, "r:*") as tf:
        for m in _members(tf, budget):
            digest = None
            if m.isfile() and not budget.take_bytes(m.size):
                digest = TOO_LARGE
            elif m.isfile():
                h = hashlib.sha256()
                fh = tf.extractfile(m)
                if fh is not None:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                digest = h.hexdigest()
            entries.append(Entry(m.name, m.type, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname, m.size,
                                 m.linkname, digest, dict(m.pax_headers)))
    return entries


def _members(tf: tarfile.TarFile, budget: Budget) -> Iterator[tarfile.TarInfo]:
    while budget.take_member():
        m = tf.next()
        if m is None:
            return
        yield m


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    try:
        ea, eb = _index(a, ctx.budget), _index(b, ctx.budget)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [Cause("content", clip(f"tar: unreadable ({exc})"))]
    large = sorted({e.name for e in (*ea, *eb) if e.digest == TOO_LARGE})
    if large or ctx.budget.exhausted:
        note = [Cause("content", clip(f"tar: {TOO_LARGE}: {plural(len(large), 'member')} past the size budget "
                                      f"({examples([short(n, 60) for n in large])}) or past the member count; "
                                      "those members were compared by header only"))]
    else:
        note = []
    by_a = {e.name: e for e in reversed(ea)}  # first occurrence wins, as in the order check
    by_b = {e.name: e for e in reversed(eb)}
    causes = membership_causes("tar", [e.name for e in ea], [e.name for e in eb],
                               "sort the entries, e.g. tar --sort=name")
    pairs = [(by_a[e.name], by_b[e.name]) for e in ea if e.name in by_b]
    causes += _attribute_causes(pairs)
    causes += _member_causes(pairs, a, b, ctx)
    causes += note
    if not causes:
        causes.append(Cause("content", "same entries, attributes and data; the tar framing differs "
                                       "(format, padding or end-of-archive blocks)"))
    return causes


def _attribute_causes(pairs: list[tuple[Entry, Entry]]) -> list[Cause]:
    times: list[str] = []
    modes: list[str] = []
    owners: list[str] = []
    other: list[str] = []
    for x, y in pairs:
        if x.mtime != y.mtime:
            times.append(f"{short(x.name, 60)} {_when(x.mtime)} (A) vs {_when(y.mtime)} (B)")
        else:
            for key in ("atime", "ctime"):
                if x.pax.get(key) != y.pax.get(key):
                    times.append(f"{short(x.name, 60)} pax {key} {x.pax.get(key)} (A) vs {y.pax.get(key)} (B)")
                    break
        if x.mode != y.mode:
            modes.append(f"{short(x.name, 60)} {x.mode:04o} (A) vs {y.mode:04o} (B)")
        own_a, own_b = (x.uid, x.gid, x.uname, x.gname), (y.uid, y.gid, y.uname, y.gname)
        if own_a != own_b:
            owners.append(f"{short(x.name, 60)} {_owner(own_a)} (A) vs {_owner(own_b)} (B)")
        if x.type != y.type or x.linkname != y.linkname:
            other.append(f"{short(x.name, 60)} type/link {x.type!r} {x.linkname!r} (A) "
                         f"vs {y.type!r} {y.linkname!r} (B)")
        pax_a = {k: v for k, v in x.pax.items() if k not in _KNOWN_PAX}
        pax_b = {k: v for k, v in y.pax.items() if k not in _KNOWN_PAX}
        if pax_a != pax_b:
            keys = sorted(k for k in set(pax_a) | set(pax_b) if pax_a.get(k) != pax_b.get(k))
            other.append(f"{short(x.name, 60)} pax headers {', '.join(keys[:4])}")
    n = len(pairs)
    causes = []
    if times:
        causes.append(Cause("timestamp", clip(f"tar entry mtimes differ for {len(times)} of {n}: {examples(times)} "
                                              "(clamp with tar --mtime=@$SOURCE_DATE_EPOCH)")))
    if modes:
        causes.append(Cause("file-mode", clip(f"tar entry modes differ for {len(modes)} of {n}: {examples(modes)} "
                                              "(umask; normalize with tar --mode=go-w)")))
    if owners:
        causes.append(Cause("owner", clip(f"tar entry owners differ for {len(owners)} of {n}: {examples(owners)} "
                                          "(tar --owner=0 --group=0 --numeric-owner)")))
    if other:
        causes.append(Cause("content", clip(f"tar entry headers differ for {len(other)} of {n}: {examples(other)}")))
    return causes


def _member_causes(pairs: list[tuple[Entry, Entry]], a: Path, b: Path, ctx: Context) -> list[Cause]:
    differing = [x.name for x, y in pairs if x.digest not in (None, TOO_LARGE) and y.digest not in (None, TOO_LARGE)
                 and x.digest != y.digest]
    if not differing:
        return []
    chosen = [n for n in differing
              if _pairs_size(pairs, n) <= MAX_MEMBER_BYTES][:MAX_RECURSE_MEMBERS]
    chosen = [n for n in chosen if ctx.budget.take_bytes(2 * _pairs_size(pairs, n))]
    causes: list[Cause] = []
    if chosen:
        extracted_a = _extract(a, chosen, ctx, 0)
        extracted_b = _extract(b, chosen, ctx, 1)
        for name in chosen:
            causes += ctx.recurse(extracted_a[name], extracted_b[name], name)
    rest = [n for n in differing if n not in chosen]
    if rest:
        causes.append(Cause("content", clip(f"{plural(len(rest), 'more tar member')} differ in content: "
                                            f"{examples(rest)}")))
    return causes


def _pairs_size(pairs: list[tuple[Entry, Entry]], name: str) -> int:
    for x, y in pairs:
        if x.name == name:
            return max(x.size, y.size)
    return 0


def _extract(path: Path, names: list[str], ctx: Context, side: int) -> dict[str, Path]:
    wanted = set(names)
    out: dict[str, Path] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if len(out) == len(wanted):
                break
            if m.name in wanted and m.name not in out and m.isfile():
                dest = ctx.scratch_pair(m.name)[side]
                fh = tf.extractfile(m)
                with open(dest, "wb") as fout:
                    while fh is not None and (chunk := fh.read(1 << 20)):
                        fout.write(chunk)
                out[m.name] = dest
    return out


def _when(mtime: float) -> str:
    try:
        return f"{dt.datetime.fromtimestamp(mtime, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
    except (OverflowError, OSError, ValueError):
        return str(mtime)


def _owner(own: tuple[int, int, str, str]) -> str:
    uid, gid, uname, gname = own
    return f"{uid}:{gid} {uname or '-'}:{gname or '-'}"
