"""Issue 15, items 1 and 2: no build, cache or merge follows a symbolic link out of the tree it owns.

Links inside $OUT that stay inside are artifacts of their own (target in the manifest); links out are a
build error naming the link; `merge` refuses manifest paths that could leave the shard or `--out`.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from reprobuild.backends.local import LocalBackend
from reprobuild.build.manifest import hash_artifacts
from reprobuild.build.merge import agree, merge
from reprobuild.build.orchestrate import BuildOptions, build
from reprobuild.errors import BadInput, CheckFailed, ReprobuildError
from tests.conftest import REPO, command_projects
from tests.hostile import Dir, Link, artifact_record, shard_dir, tree


def _project(root: Path, run: str) -> BuildOptions:
    command_projects(root, 1, "h", run=run)
    return BuildOptions(out=root / "out", lock_path=REPO / "toolchains.lock", repo_root=root,
                        action_cache=root / "actions")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPROBUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return tmp_path


def test_link_to_a_host_file_is_a_build_error_naming_it(isolated: Path) -> None:
    secret = isolated / "host-secret.txt"
    secret.write_text("host bytes\n")
    opts = _project(isolated / "p", f"echo ok > $OUT/ok.txt && ln -s {secret} $OUT/leak.txt")
    with pytest.raises(ReprobuildError) as err:
        build(opts, backend=LocalBackend(isolated / "scratch"))
    assert "h01/leak.txt" in str(err.value) and err.value.exit_code == 2
    assert not (opts.out / "SHA256SUMS").exists()
    assert not list((isolated / "p" / "actions").rglob("leak.txt"))  # nothing cached


def test_link_to_a_host_dir_is_not_chmodded(isolated: Path) -> None:
    host_dir = isolated / "host-dir"
    host_dir.mkdir()
    (host_dir / "f").write_text("x")
    os.chmod(host_dir / "f", 0o600)
    os.chmod(host_dir, 0o700)
    opts = _project(isolated / "p", f"echo ok > $OUT/ok.txt && ln -s {host_dir} $OUT/d.txt")
    with pytest.raises(ReprobuildError, match=r"h01/d\.txt"):
        build(opts, backend=LocalBackend(isolated / "scratch"))
    assert (host_dir.stat().st_mode & 0o777, (host_dir / "f").stat().st_mode & 0o777) == (0o700, 0o600)


def test_relative_link_escaping_via_dotdot_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "out", {"a/ok.txt": "x", "a/up": Link("../../outside")})
    with pytest.raises(ReprobuildError, match="a/up"):
        hash_artifacts(root)


def test_link_inside_is_recorded_as_a_link_and_survives_cache_and_merge(isolated: Path) -> None:
    opts = _project(isolated / "p", "echo hi > $OUT/a.txt && ln -s a.txt $OUT/b.txt")
    backend = LocalBackend(isolated / "scratch")
    first = build(opts, backend=backend)
    manifest = json.loads((opts.out / "manifest.json").read_text())
    links = {a["path"]: a.get("link") for a in manifest["artifacts"]}
    assert links == {"h01/a.txt": None, "h01/b.txt": "a.txt"}
    assert "b.txt" not in (opts.out / "SHA256SUMS").read_text()  # `sha256sum -c` would follow it
    again = build(replace(opts, out=isolated / "again"), backend=backend)  # restored from the action cache
    assert os.readlink(isolated / "again" / "h01" / "b.txt") == "a.txt"
    assert again.artifacts == first.artifacts
    merged = merge([opts.out], isolated / "merged")
    assert os.readlink(isolated / "merged" / "h01" / "b.txt") == "a.txt"
    assert (isolated / "merged" / "manifest.json").read_bytes() == (opts.out / "manifest.json").read_bytes()
    assert merged.artifacts == first.artifacts


def test_cached_entry_replaced_by_a_link_is_not_restored(isolated: Path) -> None:
    secret = isolated / "host-secret.txt"
    secret.write_text("host bytes\n")
    opts = _project(isolated / "p", "echo hi > $OUT/a.txt")
    backend = LocalBackend(isolated / "scratch")
    build(opts, backend=backend)
    [cached] = list((isolated / "p" / "actions").rglob("files/h01/a.txt"))
    cached.unlink()
    cached.symlink_to(secret)
    build(replace(opts, out=isolated / "again"), backend=backend)
    assert (isolated / "again" / "h01" / "a.txt").read_text() == "hi\n"


# --- merge: paths from a manifest nobody vouches for ---------------------------------------------

ESCAPES: list[tuple[str, str]] = [  # (id, artifact path in the shard manifest)
    ("dotdot", "../escaped.txt"),
    ("dotdot-inner", "a/../../escaped.txt"),
    ("absolute", "/tmp/escaped.txt"),
    ("dot", "./x.txt"),
    ("empty-component", "a//x.txt"),
    ("reserved", "SHA256SUMS"),
]


@pytest.mark.parametrize("path", [p for _, p in ESCAPES], ids=[i for i, _ in ESCAPES])
def test_merge_refuses_paths_that_leave_the_dir(tmp_path: Path, path: str) -> None:
    shard = shard_dir(tmp_path / "s", {"x.txt": "x"}, artifacts=[artifact_record(path, "x")])
    with pytest.raises(ReprobuildError) as err:
        merge([shard], tmp_path / "w" / "out")
    assert repr(path) in str(err.value)
    assert not (tmp_path / "w" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_merge_through_a_link_in_the_shard_writes_nowhere(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("x")
    shard = shard_dir(tmp_path / "s", {"d": Link(str(outside))},
                      artifacts=[artifact_record("d/x.txt", "x")])
    with pytest.raises(CheckFailed, match="symbolic link"):
        merge([shard], tmp_path / "out")


def test_merge_refuses_a_file_that_became_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    shard = shard_dir(tmp_path / "s", {"x.txt": Link(str(secret))}, artifacts=[artifact_record("x.txt", "x")])
    with pytest.raises(CheckFailed, match=r"x\.txt"):
        merge([shard], tmp_path / "out")


def test_merge_refuses_a_recorded_link_pointing_out(tmp_path: Path) -> None:
    shard = shard_dir(tmp_path / "s", {"x.txt": Link("/etc/passwd")})
    with pytest.raises(BadInput, match=r"x\.txt"):
        merge([shard], tmp_path / "out")


def test_merge_refuses_a_path_under_a_recorded_link(tmp_path: Path) -> None:
    shard = shard_dir(tmp_path / "s", {"real/x.txt": "x", "d": Link("real")},
                      artifacts=[artifact_record("d", Link("real")), artifact_record("d/x.txt", "x")])
    with pytest.raises(BadInput, match="parent `d` is a symbolic link"):
        merge([shard], tmp_path / "out")


def test_require_agreement_validates_paths_too(tmp_path: Path) -> None:
    dirs = [shard_dir(tmp_path / n, {"x.txt": "x"}, artifacts=[artifact_record("../x.txt", "x")]) for n in "ab"]
    with pytest.raises(BadInput, match="refused"):
        agree(dirs, out=tmp_path / "out")


def test_merge_keeps_modes_but_not_setuid(tmp_path: Path) -> None:
    shard = shard_dir(tmp_path / "s", {"x": "x"}, artifacts=[artifact_record("x", "x", mode="4755")])
    with pytest.raises(BadInput, match="mode"):
        merge([shard], tmp_path / "out")


def test_tree_maker_makes_dirs(tmp_path: Path) -> None:
    assert (tree(tmp_path, {"e": Dir()}) / "e").is_dir()


def test_archives_refuse_a_member_that_is_a_link(tmp_path: Path) -> None:
    from reprobuild.formats.archives import normalize_modes, write_tar_gz, write_zip

    secret = tmp_path / "secret"
    secret.write_text("host bytes")
    root = tree(tmp_path / "out", {"bin": Link(str(secret)), "d": Link(str(tmp_path / "hostdir"))})
    (tmp_path / "hostdir").mkdir(mode=0o700)
    for writer in (write_tar_gz, write_zip):
        with pytest.raises(ReprobuildError, match="regular files"):
            writer([("bin", root / "bin")], tmp_path / "x.archive", 0)
    normalize_modes(root)
    assert (tmp_path / "hostdir").stat().st_mode & 0o777 == 0o700
