"""Any file: sizes, and where the bytes first differ (a few runs, with a glimpse of each side)."""

from __future__ import annotations

from pathlib import Path

from reprobuild.evidence.comparators.base import Cause, Context

CHUNK = 1 << 16
READ = 1 << 20
MAX_RUNS = 3
GLIMPSE = 16


def recognizes(path: Path, head: bytes) -> bool:
    return True


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    size_a, size_b = a.stat().st_size, b.stat().st_size
    runs, blocks = _differing_runs(a, b, min(size_a, size_b))
    parts = []
    if size_a != size_b:
        parts.append(f"size {size_a} (A) vs {size_b} (B) bytes")
        if not runs:
            longer = "B" if size_b > size_a else "A"
            parts.append(f"the shorter file is a prefix of {longer} ({abs(size_b - size_a)} extra bytes)")
    else:
        parts.append(f"same size ({size_a} bytes)")
    if runs:
        shown = "; ".join(f"at {start:#x}: {ga} vs {gb}" for start, ga, gb in runs)
        parts.append(f"bytes differ {shown}" + (f"; {blocks} of {_blocks(min(size_a, size_b))} 64 KiB blocks "
                                                 "differ" if blocks > 1 else ""))
    return [Cause("content", "; ".join(parts))]


def identical(causes: list[Cause]) -> bool:
    """Whether `explain`'s answer says the two files hold the same bytes."""
    return len(causes) == 1 and "differ" not in causes[0].detail and "extra bytes" not in causes[0].detail


def _blocks(size: int) -> int:
    return max(1, -(-size // CHUNK))


def _differing_runs(a: Path, b: Path, common: int) -> tuple[list[tuple[int, str, str]], int]:
    """The first few differing offsets (with hex glimpses), and how many 64 KiB blocks differ."""
    runs: list[tuple[int, str, str]] = []
    blocks = 0
    offset = 0
    last_end = -1
    # Two reused buffers: a fresh 1 MiB bytes object per read costs page faults that double the time.
    ra, rb = bytearray(READ), bytearray(READ)
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while offset < common:
            # Equal stretches are skipped a MiB at a time (reading is the cost); a differing MiB is
            # looked at in 64 KiB blocks.
            if offset % READ == 0 and common - offset >= READ:
                if fa.readinto(ra) == READ and fb.readinto(rb) == READ and ra == rb:
                    offset += READ
                    continue
                fa.seek(offset)
                fb.seek(offset)
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            n = min(len(ca), len(cb), common - offset)
            ca, cb = ca[:n], cb[:n]
            if not n:
                break
            if ca != cb:
                blocks += 1
                pos = 0
                while len(runs) < MAX_RUNS and pos < n:
                    first = _first_difference(ca, cb, pos)
                    if first < 0:
                        break
                    if offset + first > last_end:
                        runs.append((offset + first, ca[first:first + GLIMPSE].hex(" "),
                                     cb[first:first + GLIMPSE].hex(" ")))
                        last_end = offset + first + GLIMPSE
                    pos = first + GLIMPSE
            offset += n
    return runs, blocks


def _first_difference(ca: bytes, cb: bytes, start: int) -> int:
    """First index >= start where the chunks differ, or -1 (bisection on slices: fast in C)."""
    lo, hi = start, len(ca)
    if ca[lo:hi] == cb[lo:hi]:
        return -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ca[lo:mid] != cb[lo:mid]:
            hi = mid
        else:
            lo = mid
    return lo
