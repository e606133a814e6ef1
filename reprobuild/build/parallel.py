"""Independent pieces of work on threads (build units, a target's platforms, verify's runs).

Results come back in input order whatever order the work finishes in, so nothing that is written
(manifest, reports) depends on the machine's timing. After a failure nothing new starts, what runs
finishes, and the failure of the earliest item in input order is raised. An interrupt (Ctrl-C, or
SIGTERM, which the CLI turns into KeyboardInterrupt) arrives in the waiting thread only: `cancel` is
then called to end the running steps at once (the backends kill their containers or process groups),
and the interrupt is re-raised once every worker has cleaned up.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """How many pieces of work run at once by default: the core count."""
    return max(1, os.cpu_count() or 1)


def map_ordered(fn: Callable[[T], R], items: Sequence[T], jobs: int, cancel: Callable[[], None]) -> list[R]:
    """fn over items, up to `jobs` at a time; results in input order (see the module docstring)."""
    if jobs <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(items)), thread_name_prefix="reprobuild")
    futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
    try:
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:  # something failed: start nothing new, let what already runs finish
            for future in pending:
                future.cancel()
            wait(pending)
    except BaseException:
        for future in futures:
            future.cancel()
        cancel()
        wait(futures)
        raise
    finally:
        pool.shutdown(wait=False)
    for future in futures:
        if not future.cancelled():
            error = future.exception()
            if error is not None:
                raise error
    return [future.result() for future in futures]


class KeyedLocks:
    """One lock per key, made on first use: work that must not overlap with its own kind (the same key)
    while other work goes on."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield
