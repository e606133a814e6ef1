"""What the benchmark scripts share: timing one call, and the Markdown table of their `figures` rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[..., object]) -> float:
    """Wall time of one call with no arguments, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def figure_table(figures: list[dict[str, Any]], figure_header: str = "figure") -> list[str]:
    """The rows `| figure | ours | baseline | ratio | target met |` (`ok` None: n/a, for information only)."""
    rows = [f"| {figure_header} | ours | baseline | ratio | target met |", "|---|---|---|---|---|"]
    for f in figures:
        met = "n/a" if f["ok"] is None else ("yes" if f["ok"] else "**NO**")
        rows.append(f"| {f['figure']} | {f['ours']} | {f['baseline']} | {f['ratio']} | {met} |")
    return rows
