"""What the benchmark scripts share: timing one call, and the Markdown table of their `figures` rows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[..., object]) -> float:
    """Wall time of one call with no arguments, in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def busy_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far (user, nice, system, irq; /proc/stat), in seconds.

    Taken around a call it counts what the call made others do too: the Docker engine, its shims and
    runc, and the processes in the containers, which the calling process's own CPU time leaves out.
    """
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed_cpu(fn: Callable[..., object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all processes) of one call with no arguments."""
    cpu = busy_cpu_seconds()
    wall = timed(fn)
    return wall, busy_cpu_seconds() - cpu


def figure_table(figures: list[dict[str, Any]], figure_header: str = "figure") -> list[str]:
    """The rows `| figure | ours | baseline | ratio | target met |` (`ok` None: n/a, for information only)."""
    rows = [f"| {figure_header} | ours | baseline | ratio | target met |", "|---|---|---|---|---|"]
    for f in figures:
        met = "n/a" if f["ok"] is None else ("yes" if f["ok"] else "**NO**")
        rows.append(f"| {f['figure']} | {f['ours']} | {f['baseline']} | {f['ratio']} | {met} |")
    return rows
