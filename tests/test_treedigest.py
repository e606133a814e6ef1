"""Source tree digests: one walk per tree per build, and a stat-keyed cache across builds (as git's index)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reprobuild.build.treedigest import TreeDigests
from reprobuild.toolchains.extract import tree_hash, tree_records

OLD = 1_600_000_000 * 10**9  # an mtime long before any walk: such files may be cached


def make_tree(root: Path, n: int = 20) -> Path:
    for i in range(n):
        f = root / "vendor" / f"mod{i % 4}" / f"f{i}.go"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"package mod{i % 4}\n// {i}\n")
    (root / "main.go").write_text("package main\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("main.go")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    settle(root)
    return root


def settle(root: Path) -> None:
    """Give every file an old mtime, as a checkout that was not touched for a while has."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.utime(path, ns=(OLD, OLD))


def scheme(root: Path, exclude: tuple[str, ...]) -> str:
    """The digest as the toolchain tree hash defines it, computed the slow way."""
    return tree_hash({k: v for k, v in tree_records(root).items() if k.split("/")[0] not in exclude})


def test_digests_follow_the_tree_hash_scheme_and_vendor_comes_from_the_same_walk(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src")
    trees = TreeDigests()
    assert trees.digest(root) == scheme(root, (".git",))
    assert trees.hashed == 22  # every file once (.git left out, the symlink needs no reading)
    assert trees.digest(root / "vendor", ()) == scheme(root / "vendor", ())
    assert trees.digest(root) == scheme(root, (".git",))
    assert trees.hashed == 22  # the source tree again and its vendor/: nothing read twice
    assert trees.digest(root, ()) == scheme(root, ())  # another exclusion is another walk


def cached(cache: Path) -> TreeDigests:
    """A digest cache whose racy window is nil: the files made by these tests a moment ago may be cached."""
    return TreeDigests(cache, racy_ns=0)


def test_an_unchanged_tree_is_not_read_again_across_builds(tmp_path: Path) -> None:
    root, cache = make_tree(tmp_path / "src"), tmp_path / "digests"
    first = cached(cache)
    digest = first.digest(root)
    assert first.hashed == 22 and len(list(cache.iterdir())) == 1
    second = cached(cache)
    assert second.digest(root) == digest and second.hashed == 0


def test_any_stat_change_means_the_file_is_read_again(tmp_path: Path) -> None:
    """Same size and mtime put back after an edit: the ctime (and inode, for a replaced file) still tell."""
    root, cache = make_tree(tmp_path / "src"), tmp_path / "digests"
    cached(cache).digest(root)
    edited = root / "vendor" / "mod1" / "f1.go"
    edited.write_text(edited.read_text().replace("1", "9"))  # same size
    os.utime(edited, ns=(OLD, OLD))
    again = cached(cache)
    assert again.digest(root) == scheme(root, (".git",)) and again.hashed == 1
    replaced = root / "main.go"
    replaced.unlink()
    replaced.write_text("package mian\n")
    os.utime(replaced, ns=(OLD, OLD))
    third = cached(cache)
    assert third.digest(root) == scheme(root, (".git",)) and third.hashed >= 1


def test_files_changed_just_now_are_never_cached(tmp_path: Path) -> None:
    """git's racily clean entries: an edit within the clock's resolution of the walk could keep every stat
    field, so files changed (mtime or ctime) within 2 s of a walk are hashed again next time."""
    root, cache = make_tree(tmp_path / "src"), tmp_path / "digests"  # every ctime is a moment ago
    TreeDigests(cache).digest(root)
    again = TreeDigests(cache)
    again.digest(root)
    assert again.hashed == 22


def test_a_damaged_cache_is_an_empty_one(tmp_path: Path) -> None:
    root, cache = make_tree(tmp_path / "src"), tmp_path / "digests"
    digest = cached(cache).digest(root)
    [stored] = cache.iterdir()
    stored.write_text("{not json")
    again = cached(cache)
    assert again.digest(root) == digest and again.hashed == 22


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPROBUILD_CACHE", str(tmp_path / "cache"))
    assert TreeDigests.for_build().cache_dir == tmp_path / "cache" / "digests"
    monkeypatch.setenv("REPROBUILD_DIGEST_CACHE", "0")
    assert TreeDigests.for_build().cache_dir is None
