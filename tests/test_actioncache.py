"""The action cache: a no-op rebuild runs nothing, a changed input rebuilds exactly its units, a tampered
entry is rebuilt (never restored), `--no-cache` builds, and `verify` never uses it.

The toolchain is "invoked" when the backend runs a step: a wrapper around the real local backend counts
those runs (the Backend protocol is the only door a build has to a toolchain).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reprobuild.backends import ImageRef, RunResult, RunSpec
from reprobuild.backends.leftovers import Leftover
from reprobuild.backends.local import LocalBackend
from reprobuild.build.actioncache import ActionCache, KeyInputs, unit_key
from reprobuild.build.orchestrate import BuildOptions, build
from reprobuild.build.shard import plan_units
from reprobuild.config.lock import load_lock
from reprobuild.config.pipeline import load_pipelines
from reprobuild.evidence.verify import VerifyOptions, verify
from tests.conftest import REPO, command_projects, run_cli

TARGETS = 20


class CountingBackend:
    """The real local backend, counting the steps it runs."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.hermetic = inner.hermetic
        self.builds_images = inner.builds_images
        self.runs: list[str] = []

    def supports(self, variation: str) -> bool:
        return self.inner.supports(variation)

    def ensure_image(self, image: ImageRef) -> str:
        return self.inner.ensure_image(image)

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        self.runs.append(spec.label)
        return self.inner.run(spec, on_line)

    def cancel(self) -> None:
        self.inner.cancel()

    def remove_leftovers(self) -> list[Leftover]:
        return self.inner.remove_leftovers()


def project(root: Path, n: int = TARGETS) -> Path:
    return command_projects(root, n, "t")


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, BuildOptions, CountingBackend]:
    monkeypatch.setenv("REPROBUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = project(tmp_path / "p")
    opts = BuildOptions(out=root / "out", lock_path=REPO / "toolchains.lock", repo_root=root,
                        action_cache=tmp_path / "actions")
    return root, opts, CountingBackend(LocalBackend(tmp_path / "scratch"))


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("SHA256SUMS", "manifest.json", "provenance.json")}


def test_no_op_rebuild_runs_nothing_and_is_fast(setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    root, opts, backend = setup
    build(opts, backend=backend)
    assert len(backend.runs) == TARGETS
    first = outputs(opts.out)
    backend.runs.clear()
    start = time.perf_counter()
    result = build(replace(opts, out=root / "again"), backend=backend)
    elapsed = time.perf_counter() - start
    assert backend.runs == []
    assert elapsed <= 2.0, f"no-op rebuild of {TARGETS} targets took {elapsed:.2f} s"
    assert outputs(root / "again") == first  # restored outputs are the build's, byte for byte
    assert len(result.artifacts) == TARGETS


def test_changing_one_source_file_rebuilds_exactly_its_unit(
        setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    root, opts, backend = setup
    build(opts, backend=backend)
    backend.runs.clear()
    (root / "src" / "t07" / "input.txt").write_text("changed\n")
    build(opts, backend=backend)
    assert backend.runs == ["t07"]
    assert (opts.out / "t07" / "out.txt").read_text() == "changed\nbuilt\n"
    backend.runs.clear()
    (root / "src" / "t07" / "input.txt").touch()  # a new mtime is not a new input
    build(opts, backend=backend)
    assert backend.runs == []


def test_the_digest_cache_never_hides_an_edit(setup: tuple[Path, BuildOptions, CountingBackend],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Source digests come from the stat-keyed digest cache across builds; an edit that keeps the file's size
    and puts its mtime back still changes its ctime, so the unit is rebuilt, never restored stale."""
    from reprobuild.build import treedigest

    monkeypatch.setattr(treedigest, "RACY_NS", 0)  # the files were written a moment ago: let them be cached
    root, opts, backend = setup
    build(opts, backend=backend)
    assert list((root.parent / "cache" / "digests").glob("*.json"))  # the tree's file hashes were kept
    backend.runs.clear()
    build(opts, backend=backend)
    assert backend.runs == []
    target = root / "src" / "t04" / "input.txt"
    before = target.stat()
    target.write_text(target.read_text().upper())  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    build(opts, backend=backend)
    assert backend.runs == ["t04"]


def test_a_changed_definition_rebuilds_only_that_pipeline(setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    root, opts, backend = setup
    build(opts, backend=backend)
    backend.runs.clear()
    yaml = root / "pipelines" / "t03.yaml"
    yaml.write_text(yaml.read_text().replace("echo built", "echo rebuilt"))
    build(opts, backend=backend)
    assert backend.runs == ["t03"]


def test_a_tampered_entry_is_rebuilt_not_restored(setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    _, opts, backend = setup
    build(opts, backend=backend)
    good = outputs(opts.out)
    assert opts.action_cache is not None
    tampered = 0
    for entry in sorted(opts.action_cache.glob("*/*/entry.json")):
        if json.loads(entry.read_text())["unit"] == "t05":
            (entry.parent / "files" / "t05" / "out.txt").write_text("evil\n")
            tampered += 1
    assert tampered == 1
    backend.runs.clear()
    build(opts, backend=backend)
    assert backend.runs == ["t05"]
    assert outputs(opts.out) == good
    backend.runs.clear()
    build(opts, backend=backend)  # the rebuild re-recorded a good entry
    assert backend.runs == []


def test_no_cache_forces_a_build(setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    _, opts, backend = setup
    build(opts, backend=backend)
    backend.runs.clear()
    build(replace(opts, read_cache=False), backend=backend)
    assert len(backend.runs) == TARGETS


def test_verify_never_uses_the_cache(setup: tuple[Path, BuildOptions, CountingBackend]) -> None:
    _, opts, backend = setup
    build(opts, backend=backend)  # a warm cache, which verify's runs must ignore
    backend.runs.clear()
    report = verify(VerifyOptions(build=opts, runs=2, vary=("environment",)), backend=backend)
    assert report.reproducible
    assert len(backend.runs) == 2 * TARGETS


def test_the_key_follows_substitution_and_the_verified_tree(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are pure (nothing installed or fetched to compute them) and hold the tree hash the build verified:
    another verified tree under the same pin is another key; a toolchain the build did not verify, no key."""
    monkeypatch.setenv("REPROBUILD_CACHE", str(tmp_path / "empty"))
    lock = load_lock(REPO / "toolchains.lock")
    units = [u for u in plan_units(load_pipelines([REPO / "pipelines" / "go-service.yaml"], REPO)) if u.target]
    verified = {"go": "1" * 64, "go-registry": "1" * 64}
    inputs = KeyInputs(lock, {}, "docker", True, REPO, toolchain_trees=verified)
    keys = {unit_key(u, inputs) for u in units}
    assert len(keys) == len(units)
    swapped = {unit_key(u, replace(inputs, overrides={"go": "go-registry"})) for u in units}
    assert not keys & swapped
    assert {unit_key(u, replace(inputs, backend="local", hermetic=False)) for u in units}.isdisjoint(keys)
    other_tree = replace(inputs, toolchain_trees={**verified, "go": "2" * 64})
    assert {unit_key(u, other_tree) for u in units}.isdisjoint(keys)
    with pytest.raises(ValueError, match="toolchain `go` was not verified by this build"):
        unit_key(units[0], replace(inputs, toolchain_trees={}))
    assert not (tmp_path / "empty").exists()


def test_cli_action_cache_dir_and_no_cache(tmp_path: Path) -> None:
    root = project(tmp_path / "p", 2)
    env = {"REPROBUILD_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path)}
    args = ["build", "--backend", "local", "--lock", str(REPO / "toolchains.lock"), "--out", "out",
            "--action-cache", str(tmp_path / "ci-cache")]
    first = run_cli(*args, env=env, cwd=root)
    assert first.returncode == 0, first.stderr
    again = run_cli(*args, env=env, cwd=root)
    assert again.returncode == 0 and again.stderr.count("restored from the action cache") == 2, again.stderr
    forced = run_cli(*args, "--no-cache", env=env, cwd=root)
    assert forced.returncode == 0 and "restored" not in forced.stderr
    costs = json.loads((tmp_path / "ci-cache" / "costs.json").read_text())
    assert sorted(costs) == ["t01", "t02"]
    assert ActionCache(tmp_path / "ci-cache").load_costs() == costs
    assert not (tmp_path / "cache" / "actions").exists()  # --action-cache replaced the default


TARGETS_GO = 2
GO_PIPELINE = """\
version: 1
name: mini
builder: go
toolchain: go
source: src
targets:
""" + "".join(f"""\
  - name: hi{k}
    package: ./cmd/hi
    platforms: [linux/amd64]
    ldflags: {{main.version: "{{target}}"}}
""" for k in range(TARGETS_GO))


@pytest.mark.go
@pytest.mark.slow
def test_go_keys_come_from_the_verified_tree_not_the_pin_or_its_path(tmp_path: Path, go_registry: Any,
                                                                     shared_cache_root: Path) -> None:
    """Issue 15 item 4: the same verified tree in a cache at another path restores (offline, nothing run);
    another verified tree under the same pin (a reinstall with other bytes) is a miss and really builds;
    with no tree to verify there is nothing to key by: an offline build is exit 3, never a restore."""
    from reprobuild.fsutil import atomic_write_text, link_tree
    from reprobuild.toolchains.extract import tree_hash, tree_records
    from reprobuild.toolchains.treecheck import FINGERPRINT_KEY, fingerprint

    root = tmp_path / "p"
    shutil.copytree(REPO / "tests" / "data" / "go-mini", root / "src")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "mini.yaml").write_text(GO_PIPELINE)
    args = ["build", "--backend", "local", "--toolchain", "go=go-registry", "--lock", str(REPO / "toolchains.lock"),
            "--action-cache", str(tmp_path / "actions")]

    def build_with(cache: Path, out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--out", out, *extra, env={"REPROBUILD_CACHE": str(cache), "TMPDIR": str(tmp_path)},
                       cwd=root)

    first = build_with(shared_cache_root, "first")
    assert first.returncode == 0, first.stderr
    # The same installed entry in a cache at another path (hard links: the same bytes, other inodes).
    other = tmp_path / "other-cache"
    entry = go_registry.tree.parent
    link_tree(entry, other / "toolchains" / entry.name)
    again = build_with(other, "again", "--offline")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("restored from the action cache") == TARGETS_GO, again.stderr
    for name in ("SHA256SUMS", "manifest.json", "provenance.json"):
        assert (root / "again" / name).read_bytes() == (root / "first" / name).read_bytes(), name
    # Another install under the same pin whose tree verifies with other content (a tree that was changed, then
    # recorded as installed): its builds must not get the outputs of the first tree.
    moved_tree = other / "toolchains" / entry.name / "tree"
    (moved_tree / "installed-elsewhere.txt").write_text("another install of the same pin\n")
    record_path = other / "toolchains" / entry.name / "entry.json"
    record = json.loads(record_path.read_text())
    record.update({"tree_sha256": tree_hash(tree_records(moved_tree)), FINGERPRINT_KEY: fingerprint(moved_tree)})
    atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    rebuilt = build_with(other, "rebuilt", "--offline")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "restored from the action cache" not in rebuilt.stderr, rebuilt.stderr
    # No tree at all: nothing verified, nothing to key by (and nothing fetched offline).
    empty = tmp_path / "empty-cache"
    refused = build_with(empty, "refused", "--offline")
    assert refused.returncode == 3, refused.stderr
    assert "mini needs toolchain `go-registry`, which cannot be had (nothing was built)" in refused.stderr
    assert "restored" not in refused.stderr and not (root / "refused").exists()
