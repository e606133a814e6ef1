"""parallel.map_ordered: results in input order, the earliest failure raised, nothing new after a failure,
and an interrupt handed to `cancel` (real threads, real timing: no mocks)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from reprobuild.build.parallel import map_ordered


def test_results_come_back_in_input_order_whatever_order_they_finish_in() -> None:
    finished: list[int] = []

    def work(i: int) -> int:
        time.sleep(0.05 * (3 - i))  # the last item finishes first
        finished.append(i)
        return i * 10

    assert map_ordered(work, [0, 1, 2, 3], 4, lambda: None) == [0, 10, 20, 30]
    assert finished != [0, 1, 2, 3]  # they really ran at once


def test_items_run_at_once_up_to_the_job_count() -> None:
    running, peak, guard = 0, 0, threading.Lock()

    def work(_: int) -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with guard:
            running -= 1

    map_ordered(work, list(range(6)), 2, lambda: None)
    assert peak == 2
    map_ordered(work, list(range(3)), 1, lambda: None)  # one job: the calling thread, one at a time
    assert peak == 2


def test_the_earliest_failure_in_input_order_is_raised_and_nothing_new_starts() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 1:
            time.sleep(0.2)
            raise ValueError("item 1 failed")
        if i == 2:
            raise KeyError("item 2 failed first")
        time.sleep(0.3)
        return i

    with pytest.raises(ValueError, match="item 1 failed"):
        map_ordered(work, list(range(8)), 3, lambda: None)
    # items 0..2 started at once; after item 2 failed only the free worker may have taken one more
    assert max(started) <= 3


def test_ctrl_c_in_the_waiting_thread_cancels_the_running_work_and_is_re_raised() -> None:
    release = threading.Event()
    cancelled: list[float] = []

    def cancel() -> None:
        cancelled.append(time.monotonic())
        release.set()  # what a backend does: it kills the running steps, which then end at once

    def work(i: int) -> int:
        if i == 0:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: Python raises it in the main (waiting) thread
            return i
        release.wait(60)
        return i

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_ordered(work, [1, 2, 0], 3, cancel)
    assert len(cancelled) == 1
    assert time.monotonic() - start < 5  # the workers did not sit out their 60 s
    assert release.is_set()
