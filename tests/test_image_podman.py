"""go-service's `hello` image (the README's main job builds it) in Podman: `reprobuild image load` through Podman's
Docker-compatible API (DOCKER_HOST, as a user on a Podman runner would), then `podman run --network none` prints the
service's output, the image ID Podman reports is the config digest, and no container is left behind.

The service runs on a socket of the test session's own (tests/conftest.py's `podman_socket`), so the runner's
Docker engine and any other Podman user are untouched; the containers this test starts carry a label of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild.formats import oci
from tests.conftest import REPO, docker_required, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.go, pytest.mark.slow]


@pytest.fixture(scope="module")
def podman() -> str:
    path = shutil.which("podman")
    if path is None or os.geteuid() != 0:
        if docker_required():
            pytest.fail("REPROBUILD_REQUIRE_DOCKER=1 but Podman (rootful) is not installed: apt-get install podman")
        pytest.skip("needs Debian's podman, run as root")
    return path


@pytest.fixture(scope="module")
def hello_out(tmp_path_factory: pytest.TempPathFactory, go_registry: Any, shared_cache_root: Path) -> Path:
    """pipelines/go-service.yaml's `hello` target (with its image section) built as the main job builds it."""
    root = tmp_path_factory.mktemp("go-service")
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    pipeline = yaml.safe_load((REPO / "pipelines" / "go-service.yaml").read_text())
    pipeline["targets"] = [t for t in pipeline["targets"] if t["name"] == "hello"]
    assert pipeline["targets"] and "image" in pipeline["targets"][0]
    (root / "pipelines").mkdir()
    (root / "pipelines" / "go-service.yaml").write_text(yaml.safe_dump(pipeline))
    for name in ("toolchains.lock", "toolchains.yaml"):
        shutil.copy(REPO / name, root / name)
    res = run_cli("build", "--out", "out", "--backend", "local", "--toolchain", "go=go-registry",
                  env={"REPROBUILD_CACHE": str(shared_cache_root)}, cwd=root)
    assert res.returncode == 0, res.stderr
    return root / "out"


def test_hello_loads_into_podman_and_runs_with_no_network(podman: str, podman_socket: str, hello_out: Path) -> None:
    layout_dir = hello_out / "go-service" / "hello.oci"
    amd64 = oci.read_layout(layout_dir).image_for("linux/amd64")
    assert amd64 is not None
    res = run_cli("image", "load", str(layout_dir), "--platform", "linux/amd64", "--json",
                  env={"DOCKER_HOST": podman_socket})
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    label = f"org.reprobuild.test=podman-{uuid.uuid4().hex}"
    try:
        assert loaded["image_id"] == amd64.config.digest
        inspect = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", loaded["tag"]],
                                 capture_output=True, text=True, check=True)
        assert "sha256:" + inspect.stdout.strip() == amd64.config.digest  # the image ID Podman reports
        # Rootful Podman asks for 1048576 open files, more than a runner's hard limit may allow (runc then
        # fails with "error setting rlimit type 7"), and as many processes: modest limits, as the Docker backend
        # pins on Podman.
        run = subprocess.run([podman, "run", "--rm", "--network", "none", "--ulimit", "nofile=8192:8192",
                              "--ulimit", "nproc=4096:4096", "--label",
                              label, loaded["tag"]], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0] == "hello, reprobuild (go-service 1.0.0)"
        assert run.stdout.splitlines()[1] == "uuid:  " + str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                         "https://example.com/reprobuild"))
    finally:
        left = subprocess.run([podman, "ps", "-a", "-q", "--filter", f"label={label}"], capture_output=True,
                              text=True)
        subprocess.run([podman, "rmi", loaded["tag"]], capture_output=True)
    assert left.returncode == 0 and left.stdout.strip() == ""  # no container of this test left behind
