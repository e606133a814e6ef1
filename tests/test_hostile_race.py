"""Issue 15, item 8 (the part done): one writer per --out. A second build of the same --out exits 3
naming the holder instead of deleting its staging dir; a build killed with -9 leaves a lock the kernel
has already dropped, and the next build removes its leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, command_projects, run_cli


def _start(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "reprobuild", "build", "--out", str(root / "out"),
                             "--backend", "local", "--lock", str(REPO / "toolchains.lock")],
                            cwd=root, env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_staging(root: Path, proc: subprocess.Popen[str]) -> None:
    for _ in range(300):
        if list(root.glob(".out.partial-*")) or proc.poll() is not None:
            return
        time.sleep(0.05)


def test_second_build_of_the_same_out_exits_3_naming_the_first(tmp_path: Path) -> None:
    root = command_projects(tmp_path / "p", 1, "r", run="sleep 4 && cp input.txt $OUT/out.txt")
    env = {"REPROBUILD_CACHE": str(tmp_path / "cache")}
    first = _start(root, env)
    try:
        _wait_for_staging(root, first)
        second = run_cli("build", "--out", str(root / "out"), "--backend", "local", "--lock",
                         str(REPO / "toolchains.lock"), cwd=root, env=env, timeout=120)
        assert second.returncode == 3, second.stderr
        assert f"pid {first.pid}" in second.stderr
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert (root / "out" / "r01" / "out.txt").is_file()
    finally:
        if first.poll() is None:
            first.kill()


def test_killed_build_does_not_block_the_next_and_its_leftovers_go(tmp_path: Path) -> None:
    root = command_projects(tmp_path / "p", 1, "k", run="sleep 30; cp input.txt $OUT/out.txt")
    env = {"REPROBUILD_CACHE": str(tmp_path / "cache")}
    first = _start(root, env)
    _wait_for_staging(root, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert list(root.glob(".out.partial-*"))
    (root / "src" / "k01" / "input.txt").write_text("changed\n")
    (root / "pipelines" / "k01.yaml").write_text((root / "pipelines" / "k01.yaml").read_text()
                                                  .replace("sleep 30; ", ""))
    done = run_cli("build", "--out", str(root / "out"), "--backend", "local", "--lock", str(REPO / "toolchains.lock"),
                   cwd=root, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(root.glob(".out.partial-*"))
