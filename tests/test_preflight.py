"""Fail fast: a toolchain the selected pipelines need and nobody can have ends the build before any unit builds."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli, url_entry, write_lock

DEAD_URL = "http://127.0.0.1:9/dl/go1.21.13.linux-amd64.tar.gz"  # the discard port: nothing answers


def repo_with_two_pipelines(root: Path, marker: Path) -> Path:
    """A command pipeline that needs no toolchain (and leaves a marker when it runs) and a Go pipeline."""
    shutil.copytree(REPO / "tests" / "data" / "hello-go", root / "hello")
    (root / "src").mkdir()
    (root / "pipelines").mkdir()
    (root / "pipelines" / "a-first.yaml").write_text(
        "version: 1\nname: a-first\nbuilder: command\nsource: src\n"
        f"run: {json.dumps(f'touch {marker}; echo x > $OUT/x.txt')}\n")
    (root / "pipelines" / "hello.yaml").write_text(
        "version: 1\nname: hello\nbuilder: go\ntoolchain: go\nsource: hello\n"
        "targets:\n  - name: hello\n    package: .\n")
    entries = {"go": url_entry("go", "go1.21.13.linux-amd64.tar.gz", "a" * 64, 1000, [DEAD_URL]),
               "go-other": url_entry("go-other", "go1.21.13.linux-amd64.tar.gz", "b" * 64, 1000, [DEAD_URL])}
    write_lock(root / "toolchains.lock", entries)
    return root


def test_missing_toolchain_fails_before_any_unit_builds(tmp_path: Path, cache_dir: Path) -> None:
    marker = tmp_path / "first-ran"
    root = repo_with_two_pipelines(tmp_path / "repo", marker)
    start = time.monotonic()
    done = run_cli("build", "--backend", "local", "--no-cache", "--out", str(tmp_path / "out"), cwd=root,
                   env={"REPROBUILD_RETRIES": "1"})
    assert done.returncode == 3, done.stderr
    assert not marker.exists(), "a unit built before the missing toolchain was found"
    assert not (tmp_path / "out").exists()
    assert "hello needs toolchain `go`, which cannot be had (nothing was built)" in done.stderr
    assert "reprobuild toolchain import go1.21.13.linux-amd64.tar.gz" in done.stderr
    assert "`--toolchain go=go-other`" in done.stderr
    assert time.monotonic() - start < 30


def test_offline_missing_toolchain_fails_at_once(tmp_path: Path, cache_dir: Path) -> None:
    marker = tmp_path / "first-ran"
    root = repo_with_two_pipelines(tmp_path / "repo", marker)
    done = run_cli("build", "--backend", "local", "--offline", "--out", str(tmp_path / "out"), cwd=root)
    assert done.returncode == 3, done.stderr
    assert not marker.exists()
    assert "offline mode forbids the network" in done.stderr and "toolchain import" in done.stderr
    # Only the pipeline that needs no toolchain: it builds.
    done = run_cli("build", "a-first", "--backend", "local", "--offline", "--out", str(tmp_path / "out"), cwd=root)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_docker_image_pins_are_checked_before_building(tmp_path: Path) -> None:
    import yaml

    from reprobuild.build import preflight
    from reprobuild.config.lock import load_lock
    from reprobuild.config.pipeline import load_pipelines
    from reprobuild.errors import BadInput

    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    data.pop("images")
    lock_path = tmp_path / "toolchains.lock"
    lock_path.write_text(yaml.safe_dump(data, sort_keys=True))
    pipelines = load_pipelines([Path("go-service")], REPO)
    assert preflight.images_needed(pipelines[0]) == {"go", "debian"}  # hello is pure Go, zpack uses cgo
    with pytest.raises(BadInput, match="no `images: debian` entry"):
        preflight.check_image_pins(pipelines, load_lock(lock_path), REPO / "builders")
    preflight.check_image_pins(pipelines, load_lock(REPO / "toolchains.lock"), REPO / "builders")


MINI_GO = """\
version: 1
name: mini
builder: go
toolchain: go
source: mini
targets:
  - name: hi
    package: ./cmd/hi
    platforms: [linux/amd64]
"""


def paddle_and_go_checkout(root: Path, go_registry: Any) -> tuple[Path, Path]:
    """The Paddle example and a Go pipeline in one repository, and a cache holding only the Go toolchain (a
    hard-linked copy of the installed one): no Paddle environment, no wheelhouse."""
    from reprobuild.fsutil import link_tree
    from tests.conftest import make_paddle_checkout

    checkout = make_paddle_checkout(root / "repo")
    shutil.copytree(REPO / "tests" / "data" / "go-mini", checkout / "mini")
    (checkout / "pipelines" / "mini.yaml").write_text(MINI_GO)
    cache = root / "cache"
    entry = go_registry.tree.parent
    link_tree(entry, cache / "toolchains" / entry.name)
    return checkout, cache


@pytest.mark.go
def test_offline_missing_wheelhouse_fails_before_any_unit_builds(tmp_path: Path, go_registry: Any) -> None:
    """Issue 16 item 2: the Paddle pipeline's wheels are had (or not) before the Go pipeline builds."""
    checkout, cache = paddle_and_go_checkout(tmp_path, go_registry)
    args = ("build", "--backend", "local", "--toolchain", "go=go-registry", "--no-cache", "--out", "out")
    done = run_cli(*args, "--offline", env={"REPROBUILD_CACHE": str(cache)}, cwd=checkout)
    assert done.returncode == 3, done.stderr
    assert ("paddle-model needs the locked `paddle` Python environment, whose wheels cannot be had (nothing was "
            "built)") in done.stderr
    assert "offline mode forbids the network" in done.stderr
    assert "paddlepaddle==2.6.2" in done.stderr and "numpy==1.26.4" in done.stderr  # the missing wheels, named
    assert "reprobuild toolchain import DIR" in done.stderr and "without `--offline`" in done.stderr
    assert "mini: building" not in done.stderr, "the Go pipeline built before the wheels were found missing"
    assert not (cache / "gocache").exists() and not (checkout / "out").exists()
    assert not (cache / "paddle-env").exists()


@pytest.mark.go
def test_unreachable_index_fails_before_any_unit_builds(tmp_path: Path, go_registry: Any) -> None:
    """Online, but pip's index does not answer: exit 3 at once with pip's words, nothing built, no partial
    wheelhouse left."""
    checkout, cache = paddle_and_go_checkout(tmp_path, go_registry)
    dead = {"REPROBUILD_CACHE": str(cache), "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}
    start = time.monotonic()
    done = run_cli("build", "--backend", "local", "--toolchain", "go=go-registry", "--no-cache", "--out", "out",
                   env=dead, cwd=checkout)
    assert done.returncode == 3, done.stderr
    assert "whose wheels cannot be had (nothing was built)" in done.stderr
    assert "pip could not download them" in done.stderr and "paddlepaddle==2.6.2" in done.stderr
    assert "mini: building" not in done.stderr and not (checkout / "out").exists()
    assert not [p for p in (cache / "wheelhouse").rglob("*") if p.is_dir() and p.name.endswith(".partial")]
    assert time.monotonic() - start < 60
