"""The one place reprobuild runs subprocesses: logs the command, sets the environment, types the failure."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reprobuild.errors import CommandFailed, EnvironmentFailure

log = logging.getLogger("reprobuild.proc")

# Process groups of the streaming commands running now (any thread), for `kill_running`.
_running: set[int] = set()
_running_guard = threading.Lock()


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(tool: str, package_hint: str | None = None) -> str:
    found = shutil.which(tool)
    if not found:
        hint = f"install it (Debian package `{package_hint}`)" if package_hint else f"install `{tool}`"
        raise EnvironmentFailure(f"`{tool}` is not installed", hint)
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
    input_text: str | None = None,
    on_line: Callable[[str], None] | None = None,
    umask: int | None = None,
) -> Completed:
    """Run a command to completion. `env=None` inherits the environment; otherwise `env` is the whole of it.

    With `on_line`, stdout and stderr are merged and each line is handed over as it arrives
    (progress for long work) and captured as well.
    """
    args = [os.fspath(a) for a in argv]
    log.debug("run: %s (cwd=%s)", " ".join(args), cwd)
    preexec: Callable[[], object] | None = (lambda: os.umask(umask)) if umask is not None else None
    try:
        if on_line is None:
            proc = subprocess.run(args, env=dict(env) if env is not None else None, cwd=cwd,
                                  capture_output=True, text=True, encoding="utf-8", errors="replace",
                                  timeout=timeout, input=input_text,
                                  preexec_fn=preexec, check=False)
            done = Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        else:
            done = _run_streaming(args, env, cwd, timeout, on_line, preexec)
    except FileNotFoundError:
        raise EnvironmentFailure(f"`{args[0]}` is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"command timed out after {timeout:.0f} s: {' '.join(args)}") from None
    if check and done.returncode != 0:
        raise CommandFailed(list(args), done.returncode, done.stderr or done.stdout)
    return done


@dataclass(frozen=True)
class Filtered:
    returncode: int  # -9 when the output outgrew `limit` (the command was killed)
    stdout: bytes  # at most `limit` + 1 bytes
    stderr: str


def filter_bytes(argv: Sequence[str | os.PathLike[str]], data: bytes, limit: int, *,
                 timeout: float = 60) -> Filtered:
    """Pipe `data` through a command and read at most `limit` + 1 bytes of its output (a decompressor fed
    hostile input cannot fill memory or a disk: it is killed once it has said more); no temporary files."""
    args = [os.fspath(a) for a in argv]
    log.debug("filter: %s (%d bytes in, at most %d out)", " ".join(args), len(data), limit)
    try:
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise EnvironmentFailure(f"`{args[0]}` is not installed or not on PATH") from None
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    stdin, stdout, stderr = child.stdin, child.stdout, child.stderr
    errors: list[bytes] = []

    def feed() -> None:
        with contextlib.suppress(OSError):  # BrokenPipeError: it stopped reading (killed, or done early)
            stdin.write(data)
        with contextlib.suppress(OSError):
            stdin.close()

    def drain() -> None:  # all of it (a blocked writer would stall the command), the first 64 KiB kept
        while block := stderr.read(1 << 16):
            if sum(map(len, errors)) < 1 << 16:
                errors.append(block)

    feeder = threading.Thread(target=feed, daemon=True)
    drainer = threading.Thread(target=drain, daemon=True)
    timer = threading.Timer(timeout, child.kill)
    timer.daemon = True
    feeder.start()
    drainer.start()
    timer.start()
    chunks: list[bytes] = []
    got = 0
    try:
        while got <= limit:
            chunk = os.read(stdout.fileno(), min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            child.kill()
        child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        stdout.close()
        feeder.join()
        drainer.join()
        stderr.close()
    return Filtered(child.returncode, b"".join(chunks), b"".join(errors).decode("utf-8", "replace"))


def kill_running() -> None:
    """Kill the process group of every streaming command running now (an interrupted parallel build:
    the interrupt reaches only the main thread, the steps run on others)."""
    with _running_guard:
        groups = list(_running)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _run_streaming(args: list[str], env: Mapping[str, str] | None, cwd: Path | None, timeout: float | None,
                   on_line: Callable[[str], None], preexec: Callable[[], object] | None) -> Completed:
    proc = subprocess.Popen(args, env=dict(env) if env is not None else None, cwd=cwd, text=True,
                            encoding="utf-8", errors="replace",  # a step's bytes are not ours to trust
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec,
                            start_new_session=True)

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # The time limit must hold while the command is quiet too, not only once its output ends: a timer
    # kills the whole process group, which closes the pipe and ends the read loop.
    timed_out = threading.Event()
    def on_timeout() -> None:
        timed_out.set()
        kill_group()

    timer = threading.Timer(timeout, on_timeout) if timeout is not None else None
    lines: list[str] = []
    with _running_guard:
        _running.add(proc.pid)
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        # Interrupted: take the whole process group down with us.
        kill_group()
        proc.wait()
        raise
    finally:
        with _running_guard:
            _running.discard(proc.pid)
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(args, timeout or 0)
    out = "".join(lines)
    return Completed(tuple(args), proc.returncode, out, out)
