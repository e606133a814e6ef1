"""Several `reprobuild toolchain fetch` processes at once, and a fetch killed with SIGKILL part way.

The processes are real (`python -m reprobuild`), the archive is the real Go 1.21.13 tree, and the server
in this test process counts the downloads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reprobuild.config.lock import load_lock
from reprobuild.toolchains.cache import entry_key
from tests.conftest import GO_VERSION, REPO, TARBALL_NAME, run_cli
from tests.httpserver import LocalServer

pytestmark = [pytest.mark.go, pytest.mark.slow]

PROCESSES = 8


def start_fetch(lock: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "reprobuild", "toolchain", "fetch", "go", "--lock", str(lock),
                             "--json", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, cwd=REPO)


def go_version(root: Path) -> str:
    out = subprocess.run([str(root / "bin" / "go"), "version"], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "GOTOOLCHAIN": "local"})
    return out.stdout


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_verified_and_clean(lock: Path, cache: Path) -> None:
    res = run_cli("toolchain", "verify", "go", "--lock", str(lock), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [row["state"] for row in json.loads(res.stdout)["toolchains"]] == ["installed"]
    assert list((cache / "tmp").iterdir()) == [], "a stale work dir remains"
    assert len(list((cache / "toolchains").iterdir())) == 1


def test_eight_processes_fetch_once_and_agree(cache_dir: Path, url_lock: Path, served_tarball: LocalServer) -> None:
    # A pause mid-body (shorter than the read timeout) keeps the first install in progress while the
    # other processes start, so they really meet the lock.
    served_tarball.routes[f"/dl/{TARBALL_NAME}"].stall = 1.0
    procs = [start_fetch(url_lock) for _ in range(PROCESSES)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    paths = {json.loads(out)["fetched"][0]["path"] for out, _ in outputs}
    assert len(paths) == 1, f"processes disagree on the installed tree: {paths}"
    assert served_tarball.downloads(f"/dl/{TARBALL_NAME}") == 1, served_tarball.log
    assert served_tarball.log == [f"GET /dl/{TARBALL_NAME} 200"]
    (path,) = paths
    assert f"go{GO_VERSION}" in go_version(Path(path))
    assert_verified_and_clean(url_lock, cache_dir)


def _work_dirs(cache: Path, key: str) -> list[Path]:
    return list((cache / "tmp").glob(f"{key}.*")) if (cache / "tmp").exists() else []


def _partial_download(cache: Path, key: str) -> bool:
    return any(f.stat().st_size > 0 for d in _work_dirs(cache, key) for f in (d / "downloads").glob("*"))


def _extracting(cache: Path, key: str) -> bool:
    return any(len(list((d / "entry" / "tree" / "go").glob("*"))) > 3 for d in _work_dirs(cache, key))


def test_kill_9_mid_download_while_another_fetch_waits(cache_dir: Path, url_lock: Path,
                                                     served_tarball: LocalServer) -> None:
    route = served_tarball.routes[f"/dl/{TARBALL_NAME}"]
    key = entry_key(load_lock(url_lock).toolchain("go").platforms[0])
    # The first response sends half the body, then goes silent: the victim is stuck mid-download
    # (its read timeout is raised so it does not give up and retry by itself).
    route.stall, route.stall_times = 300, 1
    victim = start_fetch(url_lock, env={"REPROBUILD_READ_TIMEOUT": "600"})
    wait_for("half of the archive on disk", lambda: _partial_download(cache_dir, key))

    # A second fetch started now waits on the lock the victim holds...
    waiter = start_fetch(url_lock)
    time.sleep(1.5)
    assert waiter.poll() is None, "the second fetch must wait for the first, not install alongside it"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    # ...and takes over once the kernel drops the dead process's lock.
    out, err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, err
    root = Path(json.loads(out)["fetched"][0]["path"])
    assert f"go{GO_VERSION}" in go_version(root)
    assert served_tarball.downloads(f"/dl/{TARBALL_NAME}") == 2, "the killed download is not reused"
    assert_verified_and_clean(url_lock, cache_dir)


def test_kill_9_mid_extraction_then_a_new_fetch_succeeds(cache_dir: Path, url_lock: Path,
                                                         served_tarball: LocalServer) -> None:
    key = entry_key(load_lock(url_lock).toolchain("go").platforms[0])
    victim = start_fetch(url_lock)
    wait_for("extraction under way", lambda: _extracting(cache_dir, key))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    # Killed with a half-written tree: nothing is an entry yet (it is renamed into place only when whole).
    assert not (cache_dir / "toolchains" / key).exists(), "extraction finished before the kill: test not valid"
    (stale,) = _work_dirs(cache_dir, key)
    assert (stale / "entry" / "tree" / "go").is_dir()
    listed = run_cli("toolchain", "list", "--lock", str(url_lock), "--json")
    assert [r["state"] for r in json.loads(listed.stdout)["toolchains"]] == ["missing"]

    res = run_cli("toolchain", "fetch", "go", "--lock", str(url_lock), "--json")
    assert res.returncode == 0, res.stderr
    assert f"go{GO_VERSION}" in go_version(Path(json.loads(res.stdout)["fetched"][0]["path"]))
    assert not stale.exists()
    assert_verified_and_clean(url_lock, cache_dir)


def test_kill_9_then_a_later_fetch_cleans_up(cache_dir: Path, url_lock: Path, served_tarball: LocalServer) -> None:
    """Killed with nobody waiting: the stale work dir is not an entry, and the next fetch removes it."""
    route = served_tarball.routes[f"/dl/{TARBALL_NAME}"]
    key = entry_key(load_lock(url_lock).toolchain("go").platforms[0])
    route.stall, route.stall_times = 300, 1
    victim = start_fetch(url_lock, env={"REPROBUILD_READ_TIMEOUT": "600"})
    wait_for("half of the archive on disk", lambda: _partial_download(cache_dir, key))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    stale = _work_dirs(cache_dir, key)
    assert len(stale) == 1, "the killed process left its work dir (this is what the next fetch must clean)"
    listed = run_cli("toolchain", "list", "--lock", str(url_lock), "--json")
    assert [r["state"] for r in json.loads(listed.stdout)["toolchains"]] == ["missing"]
    assert not (cache_dir / "toolchains" / key).exists()

    res = run_cli("toolchain", "fetch", "go", "--lock", str(url_lock), "--json")
    assert res.returncode == 0, res.stderr
    assert f"go{GO_VERSION}" in go_version(Path(json.loads(res.stdout)["fetched"][0]["path"]))
    assert not stale[0].exists()
    assert_verified_and_clean(url_lock, cache_dir)
