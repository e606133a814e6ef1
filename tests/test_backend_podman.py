"""The Docker backend on Podman's Docker-compatible API (`podman system service`, the engine many RHEL and Fedora
runners have): every step kind runs, the output bytes are Docker's, and no container is left behind.

The service runs on a socket of this test session's own (started and stopped here), so the runner's Docker engine
and any other Podman user are untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reprobuild.backends import OUT, SRC, EnvPolicy, ImageRef, Mount, RunSpec, hermetic_env
from tests.conftest import REPO, command_projects

pytestmark = pytest.mark.docker


def build(root: Path, out: Path, env: dict[str, str], *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`reprobuild build` in a child process; its pid (its containers carry it) and how it ended."""
    child = subprocess.Popen([sys.executable, "-m", "reprobuild", "build", "--backend", "docker", "--no-cache",
                              "--out", str(out), *args], cwd=root, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate(timeout=1200)
    return child.pid, subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def leftovers(address: str, pid: int) -> list[str]:
    from reprobuild.backends import engine

    client = engine.Engine(engine.Endpoint(address, "test"))
    try:
        return client.containers(f"org.reprobuild.pid={pid}")
    finally:
        client.close()


def test_podman_is_named_and_runs_the_step_contract(podman_socket: str, debian_lock: Path, shared_cache_root: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Identity, umask, hostname, the environment exactly the step's, writable places and hand-back as on Docker."""
    from reprobuild.backends.docker import DockerBackend, probe
    from reprobuild.config.lock import load_lock

    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    ok, said = probe()
    assert ok and said.startswith("Podman engine ") and podman_socket in said, said
    backend = DockerBackend(lock=load_lock(debian_lock), cache_root=shared_cache_root, builders_dir=REPO / "builders")
    env = hermetic_env(EnvPolicy(source_date_epoch=1700000000))
    out = tmp_path / "out"
    out.mkdir()
    script = ("id -u; id -g; umask; hostname; touch /rb/home/h /tmp/t /rb/tmp/t && echo writable; "
              "echo data > /rb/out/file; env -u PWD python3 -c 'import json, os; print(json.dumps(dict(os.environ)))'")
    spec = RunSpec(("sh", "-c", script), ImageRef("debian"), env, (Mount(out, OUT, read_only=False),), workdir="/tmp")
    r = backend.run(spec)
    assert r.returncode == 0, r.output
    *lines, environ = r.output.strip().splitlines()
    assert lines == ["1000", "1000", "0022", "reprobuild", "writable"]
    assert json.loads(environ) == env  # nothing the engine adds (Podman's `container`, `TERM`) reaches the step
    st = (out / "file").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (os.getuid(), os.getgid(), 0o644)
    assert leftovers(podman_socket, os.getpid()) == []


@pytest.mark.slow
@pytest.mark.go
def test_go_service_and_a_command_pipeline_give_dockers_bytes_on_podman(
        podman_socket: str, go_registry: Any, debian_lock: Path, shared_cache_root: Path, tmp_path: Path) -> None:
    root = command_projects(tmp_path / "repo", 1, "cmd")
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    shutil.copy(REPO / "pipelines" / "go-service.yaml", root / "pipelines" / "go-service.yaml")
    args = ("--lock", str(debian_lock), "--toolchain", "go=go-registry")
    base = {"REPROBUILD_CACHE": str(shared_cache_root), "DOCKER_API_VERSION": "", "DOCKER_CONTEXT": ""}
    from reprobuild.backends import engine

    docker_where = engine.configured({k: v for k, v in os.environ.items() if k != "DOCKER_CONTEXT"})
    assert docker_where is not None
    sums: dict[str, str] = {}
    for name, address in (("podman", podman_socket), ("docker", docker_where.address)):
        pid, done = build(root, tmp_path / name, {**base, "DOCKER_HOST": address}, *args)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert (manifest["backend"], manifest["hermetic"]) == ("docker", True)
        sums[name] = (tmp_path / name / "SHA256SUMS").read_text()
        assert leftovers(address, pid) == []
    assert sums["podman"] == sums["docker"]
    assert "go-service/zpack_linux_amd64" in sums["podman"] and "cmd01/out.txt" in sums["podman"]


def test_a_scratch_go_image_step_runs_on_podman(podman_socket: str, go_registry: Any, shared_cache_root: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `go` image (no shell, no passwd): its tmpfs and mount options are ones Podman accepts."""
    from reprobuild.backends import CACHE
    from reprobuild.backends.docker import DockerBackend
    from reprobuild.config.lock import load_lock
    from tests.conftest import HELLO_GO, HELLO_GO_BUILD, hello_go_env

    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    backend = DockerBackend(lock=load_lock(REPO / "toolchains.lock"), cache_root=shared_cache_root,
                            builders_dir=REPO / "builders")
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    cache.mkdir()
    spec = RunSpec(HELLO_GO_BUILD, ImageRef("go", go_registry.root), hello_go_env(),
                   (Mount(HELLO_GO, SRC), Mount(out, OUT, read_only=False), Mount(cache, CACHE, read_only=False)))
    r = backend.run(spec)
    assert r.returncode == 0, r.output
    assert (out / "hello").stat().st_mode & 0o777 == 0o755
    assert leftovers(podman_socket, os.getpid()) == []


def test_doctor_names_podman(podman_socket: str, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    r = run_cli("doctor", "--json", "--lock", str(REPO / "toolchains.lock"),
                env={"DOCKER_HOST": podman_socket, "REPROBUILD_CACHE": str(tmp_path / "cache"),
                     "REPROBUILD_OFFLINE": "1"})
    found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}["engine.reachable"]
    assert found["message"].startswith("Podman engine ") and podman_socket in found["message"]
    assert found["data"]["engine"] == "Podman" and found["data"]["api"] == found["data"]["server_api"]
