"""Progress for long work: a live bar on a terminal, a few plain lines in CI logs."""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

quiet = False


@functools.cache
def _console() -> Console:
    # rich is imported on first use only: commands that finish without a long transfer never pay for it.
    from rich.console import Console

    return Console(stderr=True)


class Ticker(Protocol):
    def advance(self, n: int) -> None: ...


def say(message: str) -> None:
    """One status line on stderr (never stdout, which `--json` owns)."""
    if not quiet:
        # One write per line: steps on other threads say things too, and print() writes the newline apart.
        sys.stderr.write(f"reprobuild: {message}\n")
        sys.stderr.flush()


class _PlainTicker:
    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 5 and not quiet:
            self.last = now
            pct = f" ({100 * self.done // self.total}%)" if self.total else ""
            say(f"{self.label}: {self.done / 1e6:.1f} MB{pct}")


class _RichTicker:
    def __init__(self, progress: Progress, task: object) -> None:
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        self.progress.update(self.task, advance=n)  # type: ignore[arg-type]


@contextmanager
def transfer(label: str, total: int | None) -> Iterator[Ticker]:
    """Progress of a byte transfer (download, hashing, extraction)."""
    if quiet or not _console().is_terminal:
        say(f"{label} ...")
        yield _PlainTicker(label, total)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=_console(), transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield _RichTicker(progress, task)


class Activity:
    """Long work with no byte count, as `activity` reports it: `note` the last thing the work said."""

    def __init__(self, label: str) -> None:
        self.label, self.last = label, ""

    def note(self, line: str) -> None:
        if line.strip():
            self.last = line.strip()


def clock(seconds: float) -> str:
    """`2m05s`, `41s`."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def activity(label: str, every: float = 15.0) -> Iterator[Activity]:
    """Elapsed time for long work with no byte count (debootstrap, writing an image layer): every `every`
    seconds a line with the time so far and the last thing the work said, then one with the total."""
    act = Activity(label)
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not stop.wait(every):
            say(f"{label}: {clock(time.monotonic() - start)} so far" + (f" ({act.last[:100]})" if act.last else ""))

    ticker = threading.Thread(target=tick, name=f"progress: {label}", daemon=True)
    ticker.start()
    try:
        yield act
    finally:
        stop.set()
        ticker.join()
    say(f"{label}: done in {clock(time.monotonic() - start)}")
