"""What every comparator shares: the Cause it reports, the Context it runs in, and the size bounds.

Explanations are bounded by construction: each comparator summarises (counts, a few examples)
instead of listing everything, and `clip` cuts any detail that still runs long. A pair of 10 MB
binaries must yield a few lines, not megabytes.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

MAX_DETAIL = 600
"""Characters in one cause's detail (a text diff gets `MAX_DIFF_CHARS`)."""
MAX_DIFF_CHARS = 3000
MAX_EXAMPLES = 3
"""How many examples a summary names before it says "and N more"."""
MAX_RECURSE_MEMBERS = 5
"""Differing archive members explained one by one; the rest are counted."""
MAX_MEMBER_BYTES = 512 << 20
"""Members larger than this are compared by hash only, not extracted for explanation."""
HEAD_BYTES = 4096
MAX_EXPLAIN_BYTES = 256 << 20
"""Files larger than this get no format comparator (they may read a file whole): raw bytes, streamed."""
MAX_TOTAL_BYTES = 1 << 30
"""Bytes one compare may decompress, extract or hash inside archives, all nesting levels together."""
MAX_MEMBERS = 100_000
"""Archive entries one compare may index, all archives and nesting levels together."""
TOO_LARGE = "not compared: too large"


@dataclass
class Budget:
    """The work one compare may still do inside archives; shared by every nesting level."""

    bytes: int = MAX_TOTAL_BYTES
    members: int = MAX_MEMBERS
    exhausted: bool = False

    def take_bytes(self, n: int) -> bool:
        """Reserve n bytes of reading; False (and nothing reserved) when they are not left."""
        if n > self.bytes:
            self.exhausted = True
            return False
        self.bytes -= n
        return True

    def take_member(self) -> bool:
        if self.members <= 0:
            self.exhausted = True
            return False
        self.members -= 1
        return True

KINDS = ("go-buildid", "gnu-build-id", "embedded-path", "timestamp", "entry-order", "file-mode", "owner",
         "vcs-stamp", "buildinfo", "paddle-op-callstack", "content", "missing", "ldflags-x", "image-config")
"""The cause vocabulary of the compare report (docs/reports.md)."""


@dataclass(frozen=True)
class Cause:
    """One reason two files differ: a `kind` from `KINDS` and a short human detail."""

    kind: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}

    def within(self, label: str) -> Cause:
        """The same cause, found inside archive member (or layer) `label`."""
        return Cause(self.kind, f"{label}: {self.detail}")


Explainer = Callable[[Path, Path, "Context"], list[Cause]]


@dataclass(frozen=True)
class Context:
    """What a comparator may use besides the two files: scratch space, tools, and the way to recurse."""

    scratch: Path
    """A private directory for extracted members; removed by the caller."""
    explainer: Explainer
    """Explains a pair with the whole comparator table (for archive members)."""
    go: Path | None = None
    """A `go` binary for `go version -m` when the built-in build-info reader cannot read a binary."""
    depth: int = 0
    max_depth: int = 4
    budget: Budget = dataclasses.field(default_factory=Budget, compare=False)
    _counter: Iterator[int] = dataclasses.field(default_factory=itertools.count, compare=False, repr=False)

    def recurse(self, a: Path, b: Path, label: str | None) -> list[Cause]:
        """Explain a nested pair (archive members, decompressed streams); prefix causes with `label`."""
        if self.depth >= self.max_depth:
            return [Cause("content", f"{label or 'nested data'}: differs (nesting deeper than {self.max_depth})")]
        causes = self.explainer(a, b, dataclasses.replace(self, depth=self.depth + 1))
        return [c.within(label) for c in causes] if label else causes

    def scratch_pair(self, stem: str) -> tuple[Path, Path]:
        """Two fresh paths in scratch space for extracted data (the names keep `stem`'s suffix)."""
        n = next(self._counter)
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in Path(stem).name)[-80:] or "data"
        directory = self.scratch / f"{n}"
        (directory / "a").mkdir(parents=True, exist_ok=True)
        (directory / "b").mkdir(parents=True, exist_ok=True)
        return directory / "a" / safe, directory / "b" / safe


class Comparator(Protocol):
    """A module of `reprobuild.evidence.comparators`: recognizes one format and explains differences in it."""

    def recognizes(self, path: Path, head: bytes) -> bool: ...

    def explain(self, a: Path, b: Path, ctx: Context) -> list[Cause]: ...


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` cut to `limit` characters, saying so."""
    if len(text) <= limit:
        return text
    return text[: limit - 12] + " …[clipped]"


def short(value: object, limit: int = 80) -> str:
    """A value for a detail line, quoted (repr), cut in the middle when long."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = 80) -> str:
    """`text` cut in the middle when longer than `limit` (both ends of a path or hash say the most)."""
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return text[:half] + "…" + text[-half:]


def examples(items: Sequence[str], limit: int = MAX_EXAMPLES) -> str:
    """`a, b, c and 7 more`."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    """Byte equality without reading either file whole."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return same_stream(fa, fb, chunk)


def same_stream(fa: BinaryIO, fb: BinaryIO, chunk: int = 1 << 20) -> bool:
    """Byte equality of two open files, `chunk` bytes of memory each."""
    while True:
        ca, cb = fa.read(chunk), fb.read(chunk)
        if ca != cb:
            return False
        if not ca:
            return True


def membership_causes(kind: str, names_a: list[str], names_b: list[str], sort_hint: str) -> list[Cause]:
    """An archive's entries found on one side only, and the first place where the order of the common entries
    differs (tar, zip); each list holds the entry names in archive order."""
    in_a, in_b = set(names_a), set(names_b)
    causes: list[Cause] = []
    only_a = [n for n in names_a if n not in in_b]
    only_b = [n for n in names_b if n not in in_a]
    if only_a or only_b:
        causes.append(Cause("missing", clip(
            f"{kind} entries only in A: {_listed(only_a)}; only in B: {_listed(only_b)}")))
    common_a = [n for n in names_a if n in in_b]
    common_b = [n for n in names_b if n in in_a]
    if common_a != common_b:
        i = next(i for i, (x, y) in enumerate(zip(common_a, common_b, strict=False)) if x != y)
        causes.append(Cause("entry-order", clip(
            f"{kind} entry order differs from position {i}: {short(common_a[i])} (A) vs {short(common_b[i])} (B) "
            f"({sort_hint})")))
    return causes


def _listed(names: list[str]) -> str:
    return examples([short(n, 60) for n in names]) or "none"
