"""One writer per output directory: a lock beside `--out`, held for the whole build or merge.

Two builds with the same `--out` would otherwise clean up each other's staging directories. The lock
is an `flock` on `.<out>.lock` in the parent directory, so the kernel drops it when its holder dies
(even by `kill -9`); the file records the holder's PID and start time for the message a second
build gets. The second one waits `REPROBUILD_OUT_WAIT` seconds (default 0), then exits 3 naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from reprobuild.errors import EnvironmentFailure


class OutputBusy(EnvironmentFailure):
    """Another build or merge holds the output directory (exit 3)."""


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


class OutLock:
    """A held lock on `out`; `release()` (or process exit) lets the next writer in."""

    def __init__(self, out: Path, wait: float | None = None) -> None:
        self.path = lock_path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + (wait if wait is not None else _wait_seconds())
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if self._still_the_file():
                    break
                os.close(self.fd)  # the holder removed it as it let go: lock the file that is there now
                continue
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(self.fd)
                    os.close(self.fd)
                    raise OutputBusy(f"--out {out}: another reprobuild ({holder}) is writing it now",
                                     "wait for it to finish (REPROBUILD_OUT_WAIT=SECONDS waits), or use another --out"
                                     ) from None
                os.close(self.fd)
                time.sleep(0.2)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": int(time.time())}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(record) + "\n").encode(), 0)

    def _still_the_file(self) -> bool:
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file (no leftovers beside --out), then let go; the next writer checks it locked
        the file that is in place, so removing it while holding the lock is safe."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


@contextlib.contextmanager
def out_lock(out: Path, wait: float | None = None) -> Iterator[OutLock]:
    lock = OutLock(out, wait)
    try:
        yield lock
    finally:
        lock.release()


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        started = time.strftime("%H:%M:%S", time.localtime(data["started"]))
        return f"pid {data['pid']} on {data['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("REPROBUILD_OUT_WAIT", "0")))
    except ValueError:
        return 0.0
