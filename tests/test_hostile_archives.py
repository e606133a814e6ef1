"""Issue 15, item 7: archive headers are capped before they are read, refusals are short and name the
archive and member, and a refused `import` leaves nothing in the cache."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reprobuild.errors import UnsafeArchive
from reprobuild.toolchains.extract import extract
from tests.conftest import run_cli, url_entry, write_lock
from tests.hostile import huge_header_tar, many_files_tar, raw_header, tar_archive, tar_member, zip_archive

BIG = 8 << 20  # a header this large is absurd; tarfile read it whole (300 MiB took 1.6 GB)


def _pax_bomb() -> bytes:
    record = b" path=" + b"a" * BIG + b"\n"
    length = len(record) + len(str(len(record) + 8))
    record = str(length).encode() + record
    assert len(record) == length
    body = record + b"\0" * (-len(record) % 512)
    return raw_header(b"pax", len(record), b"x") + body + tar_archive([(tar_member("go/VERSION", b"go1"), b"go1")])


def _gnu_bomb() -> bytes:
    name = b"go/" + b"a" * BIG + b"\0"
    return (raw_header(b"././@LongLink", len(name), b"L") + name + b"\0" * (-len(name) % 512)
            + raw_header(b"x", 0, b"0") + b"\0" * 1024)


def _declared_only() -> bytes:
    return huge_header_tar(b"L", 300 << 20)


# name -> tar bytes (gzipped below: small on disk, huge declared headers)
HEADER_CASES: dict[str, Callable[[], bytes]] = {
    "pax-header": _pax_bomb,
    "gnu-long-name": _gnu_bomb,
    "declared-only": _declared_only,
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_huge_extended_header_is_refused_before_reading(case: str, tmp_path: Path) -> None:
    archive = tmp_path / f"{case}.tar.gz"
    archive.write_bytes(gzip.compress(HEADER_CASES[case](), compresslevel=1))
    start = time.monotonic()
    with pytest.raises(UnsafeArchive) as err:
        extract(archive, tmp_path / "tree", 1 << 30)
    message = str(err.value)
    assert time.monotonic() - start < 5
    assert len(message) < 1000, len(message)
    assert archive.name in message and "header" in message
    assert not list((tmp_path / "tree").rglob("*"))


def test_zip_symlink_target_not_utf8_is_refused_naming_the_member(tmp_path: Path) -> None:
    archive = tmp_path / "t.zip"
    archive.write_bytes(zip_archive([("go/link", b"\xff\xfe/etc", 0o120777)]))
    with pytest.raises(UnsafeArchive, match=r"go/link.*not UTF-8"):
        extract(archive, tmp_path / "tree", 1 << 20)


def test_zip_symlink_with_huge_target_is_refused_with_a_short_message(tmp_path: Path) -> None:
    archive = tmp_path / "t.zip"
    archive.write_bytes(zip_archive([("go/link", b"a/" * (4 << 20), 0o120777)]))
    with pytest.raises(UnsafeArchive) as err:
        extract(archive, tmp_path / "tree", 1 << 30)
    assert "go/link" in str(err.value) and "t.zip" in str(err.value) and len(str(err.value)) < 1000


def test_many_empty_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(many_files_tar(1001))
    with pytest.raises(UnsafeArchive, match="more than 1000 members"):
        extract(archive, tmp_path / "tree", 1 << 30, max_members=1000)


@pytest.mark.slow
def test_200000_empty_files_pass_no_more(tmp_path: Path) -> None:
    from reprobuild.toolchains.extract import MAX_MEMBERS

    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(many_files_tar(200_000))
    with pytest.raises(UnsafeArchive, match=f"more than {MAX_MEMBERS} members"):
        extract(archive, tmp_path / "tree", 1 << 30)


def test_refused_import_leaves_nothing_in_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    archive = tmp_path / "go1.21.13.linux-amd64.tar.gz"
    archive.write_bytes(gzip.compress(_pax_bomb(), compresslevel=1))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    lock = write_lock(tmp_path / "toolchains.lock", {"go": url_entry(
        "go", archive.name, digest, archive.stat().st_size, ["http://127.0.0.1:9/" + archive.name])})
    done = run_cli("toolchain", "import", str(archive), "--lock", str(lock), "--offline")
    assert done.returncode == 3, done.stderr
    assert archive.name in done.stderr and len(done.stderr) < 2000 and "Traceback" not in done.stderr
    leftovers = [p for p in cache_dir.rglob("*") if p.is_file() and "locks" not in p.parts]
    assert leftovers == []


def test_corpus_tar_maker_round_trips() -> None:
    import io

    data = tar_archive([(tar_member("a", b"x"), b"x")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [m.name for m in tf] == ["a"]
