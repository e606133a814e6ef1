"""UTF-8 text and JSON: a short unified diff, and what kind of change it is when that is clear.

A diff whose changed lines become equal once dates/times are masked is a `timestamp`; once absolute
paths are masked, an `embedded-path`; anything else is `content`. JSON that parses to the same data
is reported as a formatting or key-order difference.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from reprobuild.evidence.comparators.base import MAX_DIFF_CHARS, Cause, Context, clip

MAX_TEXT_BYTES = 32 << 20
MAX_DIFF_LINES = 30
MAX_LINE = 160
MAX_MIDDLE_LINES = 20000
"""Beyond this many differing lines in the middle, difflib is too slow: show the first ones only."""
CONTEXT = 2
TEXT_SUFFIXES = (".txt", ".json", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".py", ".go", ".mod", ".sum",
                 ".sh", ".csv", ".xml", ".html", ".log", ".info")

_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}| ?[A-Z]{3,4})?"  # ISO 8601
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +(?:\d{1,2} +)?[A-Z][a-z]{2} +\d{1,2}(?: +\d{4})?"  # date(1), RFC 2822
    r"(?: +\d{2}:\d{2}:\d{2})?(?: +[A-Z]{2,5}|[+-]\d{4})?(?: +\d{4})?"
    r"|\d{2}:\d{2}:\d{2}(?:\.\d+)?"
    r"|\b1[0-9]{9}(?:\.\d+)?\b"  # Unix seconds, 2001..2286
    r"|\d{4}-\d{2}-\d{2}"
)
_ABS_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.+~@=,-]+/)*[\w.+~@=,-]+")


def recognizes(path: Path, head: bytes) -> bool:
    if b"\0" in head:
        return False
    if path.name.lower().endswith(TEXT_SUFFIXES) or not head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the head's end is still text.
        return exc.start >= len(head) - 3 and exc.reason.startswith("unexpected end")
    return True


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    if max(a.stat().st_size, b.stat().st_size) > MAX_TEXT_BYTES:
        return []  # the table's fallback reports sizes and offsets
    ta = a.read_bytes().decode("utf-8", "replace")
    tb = b.read_bytes().decode("utf-8", "replace")
    if _same_json(ta, tb):
        return [Cause("content", "same JSON data; formatting or key order differs")]
    la, lb = ta.splitlines(), tb.splitlines()
    if la == lb:
        return [Cause("content", "same lines; line endings or the final newline differ")]
    diff, pairs = _diff(la, lb, a.name)
    return [Cause(_kind(pairs), clip(diff, MAX_DIFF_CHARS))]


def _same_json(ta: str, tb: str) -> bool:
    if not ta.lstrip().startswith(("{", "[")):
        return False
    try:
        return bool(json.loads(ta) == json.loads(tb))
    except ValueError:
        return False


def _diff(la: list[str], lb: list[str], name: str) -> tuple[str, list[tuple[list[str], list[str]]]]:
    """A capped unified diff, and the (removed, added) line groups for classification."""
    # Strip the common prefix and suffix first: difflib is quadratic in what remains.
    start = 0
    while start < min(len(la), len(lb)) and la[start] == lb[start]:
        start += 1
    end = 0
    while end < min(len(la), len(lb)) - start and la[-1 - end] == lb[-1 - end]:
        end += 1
    mid_a, mid_b = la[start:len(la) - end], lb[start:len(lb) - end]
    lo = max(0, start - CONTEXT)
    if len(mid_a) + len(mid_b) > MAX_MIDDLE_LINES:
        lines = [f"@@ -{start + 1} +{start + 1} @@ (large: {len(mid_a)} vs {len(mid_b)} lines; the first ones shown)",
                 *(f"-{x}" for x in mid_a[:MAX_DIFF_LINES // 2]), *(f"+{y}" for y in mid_b[:MAX_DIFF_LINES // 2])]
        return _cap(lines), [(mid_a[:50], mid_b[:50])]
    window_a = la[lo:len(la) - end + min(end, CONTEXT)]
    window_b = lb[lo:len(lb) - end + min(end, CONTEXT)]
    raw = list(difflib.unified_diff(window_a, window_b, f"A/{name}", f"B/{name}", n=CONTEXT, lineterm=""))
    lines = [_renumber(line, lo) for line in raw[2:]]
    pairs: list[tuple[list[str], list[str]]] = []
    removed: list[str] = []
    added: list[str] = []
    for line in lines:
        if line.startswith("-"):
            if added:
                pairs.append((removed, added))
                removed, added = [], []
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
        elif removed or added:
            pairs.append((removed, added))
            removed, added = [], []
    if removed or added:
        pairs.append((removed, added))
    return _cap(lines), pairs


def _renumber(line: str, offset: int) -> str:
    """Hunk headers count from the window; shift them back to file line numbers."""
    m = re.match(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", line)
    if not m or not offset:
        return line
    return f"@@ -{int(m[1]) + offset}{m[2] or ''} +{int(m[3]) + offset}{m[4] or ''} @@"


def _cap(lines: list[str]) -> str:
    shown = [line if len(line) <= MAX_LINE else line[:MAX_LINE - 1] + "…" for line in lines[:MAX_DIFF_LINES]]
    if len(lines) > MAX_DIFF_LINES:
        shown.append(f"… {len(lines) - MAX_DIFF_LINES} more diff lines")
    return "\n".join(shown)


def _kind(pairs: list[tuple[list[str], list[str]]]) -> str:
    """`timestamp` or `embedded-path` when masking those makes every changed group equal."""
    if not pairs:
        return "content"
    for kind, pattern in (("timestamp", _TIMESTAMP), ("embedded-path", _ABS_PATH)):
        if all(len(removed) == len(added) and removed and
               [pattern.sub("<*>", x) for x in removed] == [pattern.sub("<*>", y) for y in added]
               for removed, added in pairs):
            return kind
    return "content"
