"""The sandbox backend (bubblewrap) on the builder images' pinned roots: the run contract (only loopback, no host
secrets, no host paths, writes only to the outputs, /tmp and caches), the Docker backend's bytes from any checkout,
builds at once without a lock, Ctrl-C, every verify variation applied, the fallback when bwrap is missing, and an
unprivileged user.

Network tests send traffic to 127.0.0.1 only (a server this test starts).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprobuild.backends import CACHE, OUT, SRC, EnvPolicy, ImageRef, Mount, RunSpec, hermetic_env, select_backend
from reprobuild.errors import EnvironmentFailure
from tests import httpserver
from tests.conftest import HELLO_GO, HELLO_GO_BUILD, REPO, hello_go_env, run_cli, units_started

DEBIAN = ImageRef("debian")
SECRETS = {"GITHUB_TOKEN": "ghp_leak_me", "AWS_SECRET_ACCESS_KEY": "aws-leak-me", "RB_HOST_SECRET": "host-only"}
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def env() -> dict[str, str]:
    return hermetic_env(EnvPolicy(source_date_epoch=1700000000))


@pytest.fixture(scope="session")
def sandbox(debian_lock: Path, shared_cache_root: Path) -> Any:
    """The sandbox backend over the test lock and the shared cache (the debian root is unpacked once)."""
    from reprobuild.backends.sandbox import SandboxBackend
    from reprobuild.config.lock import load_lock

    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed (Debian package `bubblewrap`; .ci/run installs it)")
    return SandboxBackend(lock=load_lock(debian_lock), cache_root=shared_cache_root, builders_dir=REPO / "builders")


# --- unavailable: fall back, or exit 3 -------------------------------------------------------------

def test_without_bwrap_the_default_falls_back_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no bwrap on it
    from reprobuild.backends import endpoint

    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "REPROBUILD_REQUIRE_DOCKER", "REPROBUILD_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setattr(endpoint, "local_sockets", lambda environ: [str(tmp_path / "no-such.sock")])
    backend = select_backend(None, lambda msg: print(msg, file=sys.stderr), cache_root=tmp_path / "cache")
    assert backend.name == "local"
    err = capsys.readouterr().err
    assert "no sandbox either: bubblewrap (`bwrap`) is not installed" in err
    assert "no container engine is configured" in err
    with pytest.raises(EnvironmentFailure) as raised:
        select_backend("sandbox", lambda msg: None, cache_root=tmp_path / "cache")
    assert raised.value.exit_code == 3 and "bubblewrap" in str(raised.value)


def test_backend_sandbox_without_bwrap_is_exit_3_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    done = run_cli("build", "--backend", "sandbox", "--out", str(tmp_path / "out"),
                   env={"PATH": str(tmp_path / "bin"), "REPROBUILD_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 3, done.stderr
    assert "the sandbox backend is not available" in done.stderr and "Debian package `bubblewrap`" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_host_refusing_user_namespaces_is_named_with_the_sysctl(tmp_path: Path) -> None:
    """A kernel that refuses namespaces cannot be made here without changing the whole machine: a `bwrap` that
    answers the way bubblewrap does on such a host stands in for it."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "bwrap"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
                    "echo 'bwrap: No permissions to creating new namespace, likely because the kernel does not "
                    "allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = run_cli("build", "--backend", "sandbox", "--out", str(tmp_path / "out"),
                   env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "REPROBUILD_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 3, done.stderr
    assert "non-privileged user namespaces" in done.stderr and "kernel.unprivileged_userns_clone=1" in done.stderr
    assert "run reprobuild as root" in done.stderr and "--backend docker" in done.stderr


@needs_bwrap
def test_the_default_is_the_sandbox_where_bwrap_can_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.backends import sandbox

    monkeypatch.delenv("REPROBUILD_REQUIRE_DOCKER", raising=False)
    monkeypatch.delenv("REPROBUILD_BACKEND", raising=False)
    assert select_backend(None, lambda msg: None, cache_root=tmp_path).name == "sandbox"
    record = tmp_path / "sandbox" / f"probe-{os.geteuid()}.json"
    assert json.loads(record.read_text())["key"]["boot"] == sandbox.boot_id()  # probed once per boot
    assert sandbox.probe(tmp_path).ok


# --- the run contract ------------------------------------------------------------------------------

@pytest.mark.docker
def test_only_loopback_no_secrets_no_host_paths_and_writes_only_where_allowed(
        sandbox: Any, server: httpserver.LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    server.add("/ping", body=b"pong")
    assert server.host == "127.0.0.1"
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    cache.mkdir()
    connect = f"import socket; socket.create_connection(('127.0.0.1', {server.port}), timeout=3)"
    script = "; ".join([
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '; echo",
        f"python3 -c \"{connect}\" 2>/dev/null && echo CONNECTED || echo refused",
        "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'",
        "for p in / /etc /usr/bin /rb /rb/src /rb/toolchain /root; do touch $p/w 2>/dev/null && echo WROTE $p; done",
        "for p in /rb/out /tmp /rb/tmp /rb/cache /rb/home; do touch $p/w && echo wrote $p; done",
        f"ls -A /home /root; test -e {REPO} && echo SEES-CHECKOUT; test -e {tmp_path} && echo SEES-TMP",
        "echo id=$(id -u):$(id -g) host=$(hostname) ps=$(ls /proc | grep -c '^[0-9]')",
    ])
    r = sandbox.run(RunSpec(("sh", "-c", script), DEBIAN, env(),
                            (Mount(HELLO_GO, SRC), Mount(out, OUT, read_only=False),
                             Mount(cache, CACHE, read_only=False)), workdir="/tmp"))
    assert r.returncode == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["lo"] and lines[1] == "refused"
    for key, value in SECRETS.items():
        assert key not in r.output and value not in r.output
    assert "WROTE" not in r.output
    assert [line for line in lines if line.startswith("wrote ")] == [
        "wrote /rb/out", "wrote /tmp", "wrote /rb/tmp", "wrote /rb/cache", "wrote /rb/home"]
    assert "SEES-" not in r.output and ".cache" not in r.output  # nothing of the host's /root, /home, checkout
    assert lines[-1].startswith("id=1000:1000 host=reprobuild ps=")
    assert int(lines[-1].rsplit("=", 1)[1]) <= 6  # a PID namespace of its own: sh, its children, bwrap's init
    assert (out / "w").stat().st_uid == os.getuid()  # what the step writes belongs to the invoker


@pytest.mark.docker
def test_time_and_memory_limits_kill_the_step(sandbox: Any) -> None:
    started = time.monotonic()
    with pytest.raises(EnvironmentFailure, match="timed out after 1 s"):
        sandbox.run(RunSpec(("sh", "-c", "sleep 30"), DEBIAN, env(), (), workdir="/tmp", timeout=1.0))
    assert time.monotonic() - started < 10
    hog = "python3 -c \"b = bytearray(512 << 20); print(len(b))\""
    if os.geteuid() == 0:  # a cgroup of the step's own needs root
        with pytest.raises(EnvironmentFailure, match="ran out of memory"):
            sandbox.run(RunSpec(("sh", "-c", hog), DEBIAN, env(), (), workdir="/tmp", memory_bytes=64 << 20))


# --- verify's variations ---------------------------------------------------------------------------

VARIATION_SCRIPT = "; ".join([
    "pwd", "echo $HOME", "echo $PATH", "echo $CAPTURE_ENVIRONMENT", "ls -f | sort -r | head -0; ls -f",
    "umask", "date +%Y", "date +%Z%z", "printf 'b\\nA\\na\\nB\\n' | sort | tr '\\n' ' '; echo",
    "id -u; id -g", "hostname; domainname", "nproc",
])


def command_project(root: Path, name: str, run: str, files: dict[str, str]) -> Path:
    (root / "src" / name).mkdir(parents=True)
    for rel, text in files.items():
        (root / "src" / name / rel).write_text(text)
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines" / f"{name}.yaml").write_text(
        f"version: 1\nname: {name}\nbuilder: command\nsource: src/{name}\nrun: {json.dumps(run)}\nartifacts: ['*']\n")
    return root


def lay_out(root: Path, lock: Path) -> None:
    shutil.copy(lock, root / "toolchains.lock")
    shutil.copytree(REPO / "builders", root / "builders")


@pytest.mark.docker
@pytest.mark.slow
def test_verify_applies_every_variation_in_the_debian_root(sandbox: Any, debian_lock: Path,
                                                           shared_cache_root: Path, tmp_path: Path) -> None:
    """A step that prints what each variation changes: every one is applied (none skipped) and named alone."""
    from reprobuild.evidence.verify import DEFAULT_VARIATIONS

    root = command_project(tmp_path / "p", "probe", f"({VARIATION_SCRIPT}) > $OUT/seen.txt",
                           {f"f{i}": str(i) for i in range(8)})
    lay_out(root, debian_lock)
    done = run_cli("verify", "--backend", "sandbox", "--report", "report.json", cwd=root,
                   env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert done.returncode == 1, done.stderr
    report = json.loads((root / "report.json").read_text())
    assert report["backend"] == "sandbox" and report["hermetic"] is True
    assert report["skipped_variations"] == {}
    assert set(report["culprits"]) == set(DEFAULT_VARIATIONS) - {"cache"}


# --- the same bytes as the Docker backend, from any checkout ---------------------------------------

STAMP_RUN = ("tar --sort=name --mtime=@$SOURCE_DATE_EPOCH --owner=0 --group=0 --numeric-owner --mode=a+rX,go-w "
             "-cf - . | gzip -n > $OUT/src.tar.gz && gcc -O2 -o $OUT/hello hello.c && "
             "date -u -d @$SOURCE_DATE_EPOCH > $OUT/date.txt")


def go_and_command_checkout(root: Path, lock: Path) -> Path:
    command_project(root, "stamp", STAMP_RUN, {"hello.c": '#include <stdio.h>\nint main(void){puts("hi");}\n',
                                                "data.txt": "data\n"})
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    shutil.copy(REPO / "pipelines" / "go-service.yaml", root / "pipelines" / "go-service.yaml")
    lay_out(root, lock)
    return root


def build(root: Path, backend: str, cache: Path, out: str = "out", umask: int = 0o022,
          extra_env: dict[str, str] | None = None, *pipelines: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REPROBUILD_CACHE=str(cache), PYTHONPATH=str(REPO), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "reprobuild", "build", *pipelines, "--out", out, "--backend", backend,
                           "--toolchain", "go=go-registry", "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900, preexec_fn=lambda: os.umask(umask) and None)


@pytest.mark.docker
@pytest.mark.go
@pytest.mark.slow
def test_sandbox_bytes_equal_docker_and_another_checkout_with_other_umask_tz_locale(
        sandbox: Any, debian_lock: Path, shared_cache_root: Path, go_registry: Any, tmp_path: Path) -> None:
    a = go_and_command_checkout(tmp_path / "a", debian_lock)
    b = go_and_command_checkout(tmp_path / "somewhere" / "else" / "entirely" / "b", debian_lock)
    sums = {}
    for label, root, backend, umask, extra in (
            ("docker", a, "docker", 0o022, {}),
            ("sandbox", a, "sandbox", 0o022, {}),
            ("sandbox-b", b, "sandbox", 0o077, {"TZ": "Pacific/Kiritimati", "LC_ALL": "fr_CH.UTF-8",
                                                "LANG": "fr_CH.UTF-8"})):
        done = build(root, backend, shared_cache_root, f"out-{label}", umask, extra)
        assert done.returncode == 0, done.stderr[-4000:]
        manifest = json.loads((root / f"out-{label}" / "manifest.json").read_text())
        assert (manifest["backend"], manifest["hermetic"]) == (backend, True)
        sums[label] = (root / f"out-{label}" / "SHA256SUMS").read_text()
    assert sums["sandbox"] == sums["docker"] == sums["sandbox-b"]
    assert "stamp/hello" in sums["docker"] and "go-service/zpack_linux_amd64" in sums["docker"]
    statement = json.loads((a / "out-sandbox" / "provenance.json").read_text())
    assert statement["predicate"]["buildDefinition"]["internalParameters"] == {"backend": "sandbox", "hermetic": True}


@pytest.mark.docker
@pytest.mark.go
@pytest.mark.slow
def test_four_builds_at_once_all_succeed_with_identical_bytes_and_overlap(
        sandbox: Any, debian_lock: Path, shared_cache_root: Path, go_registry: Any, tmp_path: Path) -> None:
    root = go_and_command_checkout(tmp_path / "p", debian_lock)
    warm = build(root, "sandbox", shared_cache_root, "out-warm", 0o022, None, "pipelines/go-service.yaml")
    assert warm.returncode == 0, warm.stderr[-3000:]
    env = dict(os.environ, REPROBUILD_CACHE=str(shared_cache_root), PYTHONPATH=str(REPO))
    children, spans = [], []
    for k in range(4):
        children.append((time.monotonic(), subprocess.Popen(
            [sys.executable, "-m", "reprobuild", "build", "pipelines/go-service.yaml", "--out", f"out-{k}",
             "--backend", "sandbox", "--toolchain", "go=go-registry", "--no-cache"],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for started, child in children:
        _, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        spans.append((started, time.monotonic()))
    sums = {(root / f"out-{k}" / "SHA256SUMS").read_text() for k in range(4)}
    assert len(sums) == 1 and sums == {(root / "out-warm" / "SHA256SUMS").read_text()}
    assert max(s for s, _ in spans) < min(e for _, e in spans), "the four builds ran at the same time"


# --- Ctrl-C ----------------------------------------------------------------------------------------

def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.docker
def test_sigint_during_two_parallel_steps_is_exit_130_within_10s_leaving_nothing(
        sandbox: Any, debian_lock: Path, shared_cache_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    token = "61.4375"  # a sleep no other process on this machine runs
    for name in ("one", "two"):
        command_project(root, name, f"cp input $OUT/partial; echo started; sleep {token}; cp input $OUT/out",
                        {"input": name})
    lay_out(root, debian_lock)
    env = dict(os.environ, REPROBUILD_CACHE=str(shared_cache_root), PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-m", "reprobuild", "build", "--backend", "sandbox", "--jobs", "2",
                              "--no-cache", "--out", str(root / "out")], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        deadline = time.monotonic() + 300
        assert units_started(child.stderr, {"one", "two"}, deadline) == {"one", "two"}, "both steps run at once"
        while len(processes_with(f"sleep\0{token}")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # `started` is printed just before the sleep begins
        assert len(processes_with(f"sleep\0{token}")) == 2
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        child.wait(timeout=10)
        assert time.monotonic() - sent < 10
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert processes_with(token) == []  # the steps, their shells and their sandboxes are gone
    assert sorted(p.name for p in root.iterdir()) == ["builders", "pipelines", "src", "toolchains.lock"]


# --- an unprivileged user --------------------------------------------------------------------------

TEST_USER = "rbsandbox"


@pytest.fixture
def unprivileged_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("making a test user needs root (this run is unprivileged already)")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                       check=True, capture_output=True)
    return TEST_USER


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="rb-sandbox-user-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


USER_STEP = """
import sys
from pathlib import Path
from reprobuild.backends import CACHE, OUT, SRC, ImageRef, Mount, RunSpec
from reprobuild.backends.sandbox import SandboxBackend
from tests.conftest import HELLO_GO, HELLO_GO_BUILD, REPO, hello_go_env
base = Path(sys.argv[1])
backend = SandboxBackend(cache_root=base / "user-cache", builders_dir=REPO / "builders")
print(backend.found.mode)
for sub in ("out", "gocache"):
    (base / sub).mkdir()
r = backend.run(RunSpec(HELLO_GO_BUILD, ImageRef("go", base / "go"), hello_go_env(),
                       (Mount(HELLO_GO, SRC), Mount(base / "out", OUT, read_only=False),
                        Mount(base / "gocache", CACHE, read_only=False))))
print(r.returncode, r.output)
"""


@needs_bwrap
@pytest.mark.go
@pytest.mark.slow
def test_an_unprivileged_user_builds_the_same_bytes(unprivileged_user: str, shared_dir: Path, go_registry: Any,
                                                    shared_cache_root: Path, tmp_path: Path) -> None:
    from reprobuild.backends.sandbox import SandboxBackend
    from reprobuild.fsutil import link_tree

    user = pwd.getpwnam(unprivileged_user)
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", sys.executable, "-c"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(shared_dir)}
    can = subprocess.run([*as_user, "import reprobuild.backends.sandbox"], env=env, cwd=shared_dir,
                         capture_output=True, text=True)
    if can.returncode != 0:
        pytest.skip(f"another user cannot run this checkout's Python here: {can.stderr.strip()[-300:]}")
    link_tree(go_registry.root, shared_dir / "go")  # the verified toolchain, where that user can read it
    os.chown(shared_dir, user.pw_uid, user.pw_gid)
    done = subprocess.run([*as_user, USER_STEP, str(shared_dir)], env=env, cwd=shared_dir, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mode, result = done.stdout.splitlines()[:2]
    if mode != "userns":
        pytest.skip(f"this host gives unprivileged users no user namespace ({mode})")
    assert result.startswith("0 "), done.stdout
    assert (shared_dir / "out" / "hello").stat().st_uid == user.pw_uid
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    cache.mkdir()
    as_root = SandboxBackend(cache_root=shared_cache_root, builders_dir=REPO / "builders").run(
        RunSpec(HELLO_GO_BUILD, ImageRef("go", go_registry.root), hello_go_env(),
                (Mount(HELLO_GO, SRC), Mount(out, OUT, read_only=False), Mount(cache, CACHE, read_only=False))))
    assert as_root.returncode == 0, as_root.output
    assert (out / "hello").read_bytes() == (shared_dir / "out" / "hello").read_bytes()


# --- the local backend: no machine-wide lock ---------------------------------------------------------

@needs_bwrap
def test_local_steps_run_at_once_each_at_the_same_fixed_path(tmp_path: Path) -> None:
    """Two steps of the local backend (two builds, or two users) overlap instead of queueing on a lock, and each
    sees its own scratch root at the one fixed path."""
    import threading

    from reprobuild.backends import HOME
    from reprobuild.backends.local import LocalBackend

    spec = RunSpec(("sh", "-c", "pwd; echo $HOME; ls -A; touch mine; sleep 1.5"), ImageRef("host"),
                   {"PATH": "/usr/bin:/bin", "HOME": HOME}, (), workdir=HOME)
    results: list[Any] = []
    backends = [LocalBackend(tmp_path / "base"), LocalBackend(tmp_path / "base")]
    threads = [threading.Thread(target=lambda b=b: results.append(b.run(spec))) for b in backends]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 2.9  # 1.5 s each: at once, not one after the other
    fixed = str(tmp_path / "base" / "root" / "home")
    assert [r.output.split() for r in results] == [[fixed, fixed]] * 2  # neither sees the other's `mine`


# --- the Paddle pipeline ---------------------------------------------------------------------------

def umask_of(mask: int) -> Any:
    return lambda: os.umask(mask) and None


@pytest.mark.docker
@pytest.mark.paddle
@pytest.mark.slow
def test_paddle_pipeline_sandbox_bytes_equal_docker_and_another_checkout(
        sandbox: Any, debian_lock: Path, shared_cache_root: Path, paddle_wheelhouse: Path, tmp_path: Path) -> None:
    """Model, custom operator (its RUNPATH names the venv at the same fixed path in both) and wheel/sdist."""
    from tests.conftest import make_paddle_checkout

    sums = {}
    for label, backend, where, umask, extra in (
            ("docker", "docker", tmp_path / "a", 0o022, {}),
            ("sandbox", "sandbox", tmp_path / "a", 0o022, {}),
            ("sandbox-b", "sandbox", tmp_path / "another" / "place" / "b", 0o077,
             {"TZ": "Pacific/Kiritimati", "LC_ALL": "fr_CH.UTF-8", "LANG": "fr_CH.UTF-8"})):
        if not where.exists():
            make_paddle_checkout(where)
            shutil.copytree(REPO / "builders", where / "builders", dirs_exist_ok=True)
            shutil.copy(debian_lock, where / "toolchains.lock")
        env = dict(os.environ, REPROBUILD_CACHE=str(shared_cache_root), PYTHONPATH=str(REPO), **extra)
        done = subprocess.run([sys.executable, "-m", "reprobuild", "build", "pipelines/paddle-model.yaml", "--out",
                               f"out-{label}", "--backend", backend, "--no-cache", "--offline"], cwd=where, env=env,
                              capture_output=True, text=True, timeout=1800, preexec_fn=umask_of(umask))
        assert done.returncode == 0, done.stderr[-4000:]
        sums[label] = (where / f"out-{label}" / "SHA256SUMS").read_text()
    assert sums["sandbox"] == sums["docker"] == sums["sandbox-b"]
    assert "paddle-model/custom-relu/" in sums["sandbox"] and ".whl" in sums["sandbox"]
