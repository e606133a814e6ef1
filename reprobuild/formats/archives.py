"""Deterministic archives and the file-mode rules: the one place reprobuild writes tar, zip and gzip.

Everything written here depends only on names, contents and the executable bit: entries sorted, fixed
mtimes, uid/gid 0 with empty owner names, normalized modes, gzip headers with mtime 0 and no file name.

    normal_mode / normalize_modes   0755 for directories and executables, 0644 for the rest (artifacts)
    layer_mode                      the same, but sticky directories and set-id bits kept (image roots)
    write_tar_gz / write_zip        artifact archives (Go targets' `archive:`; module zips)
    normalize_tar_gz / normalize_zip rewrite an archive a tool wrote (sdists, wheels)
    tree_entries / write_tar        uncompressed tarballs of trees and blobs (image layers, docker-archives)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ZIP_EPOCH_MIN = 315532800  # zip cannot store times before 1980-01-01
# zlib's default level: on a Go binary, level 9 took 3.2x as long for 0.3% fewer bytes (measured, 2 MB).
# Part of the output bytes: changing it changes every archive's hash.
LEVEL = 6


def _regular(path: Path) -> os.stat_result:
    """lstat of a member's file: archives never follow a symbolic link (it may point out of the build)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        from reprobuild.errors import UnsafeOutput

        raise UnsafeOutput(str(path), "archive members must be regular files, not symbolic links")
    return st


def _read(path: Path) -> bytes:
    _regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


# --- file modes --------------------------------------------------------------------------------

def normal_mode(st_mode: int) -> int:
    """0755 when any executable bit is set, else 0644: the umask and the owner must not show in outputs."""
    return 0o755 if st_mode & 0o111 else 0o644


def layer_mode(st_mode: int, is_dir: bool) -> int:
    """`normal_mode` for an image's root filesystem: sticky directories (/tmp, /var/tmp) stay 1777, set-id
    bits stay (su, passwd need them); other directories are 0755."""
    if is_dir:
        return 0o1777 if st_mode & 0o1000 else 0o755
    return normal_mode(st_mode) | (st_mode & 0o6000)


def normalize_modes(root: Path) -> None:
    """chmod a tree in place: 0755 for directories, `normal_mode` for files; symlinks are left alone."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]  # never follow out
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, normal_mode(os.stat(path).st_mode))


# --- compressed archives of files --------------------------------------------------------------

def write_tar_gz(members: list[tuple[str, Path]], dest: Path, mtime: int) -> None:
    """A .tar.gz of `(name in archive, file on disk)` pairs, byte-identical for the same inputs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, path in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = _regular(path).st_size
            info.mtime = mtime
            info.mode = normal_mode(_regular(path).st_mode)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                tf.addfile(info, fh)
    _write_gzip(raw.getvalue(), dest)


def write_zip(members: list[tuple[str, Path]], dest: Path | IO[bytes], mtime: int, mode: int | None = None) -> None:
    """A zip of `(name in archive, file on disk)` pairs, sorted, deflated at LEVEL, with one timestamp.

    `mode`: every entry's mode (Go module zips say 0644 whatever the disk says); None: `normal_mode`.
    """
    stamp = time.gmtime(max(mtime, ZIP_EPOCH_MIN))[:6]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in sorted(members):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100000 | (normal_mode(_regular(path).st_mode) if mode is None else mode)) << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, _read(path), compresslevel=LEVEL)


def normalize_zip(path: Path, mtime: int) -> None:
    """Rewrite a zip (e.g. a wheel) with sorted entries, fixed times and normalized modes."""
    with zipfile.ZipFile(path) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist() if not info.is_dir()]
    stamp = time.gmtime(max(mtime, ZIP_EPOCH_MIN))[:6]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
        # Wheels want RECORD last; everything else sorted.
        entries.sort(key=lambda e: (e[0].filename.endswith(".dist-info/RECORD"), e[0].filename))
        for info, data in entries:
            new = zipfile.ZipInfo(info.filename, date_time=stamp)
            new.external_attr = (0o100000 | normal_mode(info.external_attr >> 16)) << 16
            new.create_system = 3
            new.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(new, data, compresslevel=LEVEL)
    os.replace(tmp, path)


def normalize_tar_gz(path: Path, mtime: int) -> None:
    """Rewrite a .tar.gz (e.g. an sdist) with sorted entries and normalized metadata."""
    with tarfile.open(path, "r:*") as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as out:
        for m, data in sorted(members, key=lambda e: e[0].name):
            m.mtime = mtime
            m.uid = m.gid = 0
            m.uname = m.gname = ""
            m.pax_headers = {}
            if m.isdir():
                m.mode = 0o755
            elif m.isreg():
                m.mode = normal_mode(m.mode)
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    tmp = path.with_name(path.name + ".tmp")
    _write_gzip(raw.getvalue(), tmp)
    os.replace(tmp, path)


def _write_gzip(data: bytes, dest: Path) -> None:
    with open(dest, "wb") as out, gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0,
                                                compresslevel=LEVEL) as gz:
        gz.write(data)


# --- uncompressed tarballs of trees and blobs (image layers, docker-archives) ------------------

@dataclass(frozen=True)
class TarEntry:
    """One entry of `write_tar`: a directory, a file on disk, a symlink, or bytes."""

    name: str  # relative, no leading slash
    kind: str  # dir | file | symlink | data
    mode: int
    source: Path | None = None  # file
    data: bytes = b""  # data
    link: str = ""  # symlink
    inode: tuple[int, int] | None = None  # file with several links: written once, then as hard links


def tree_entries(root: Path, prefix: str) -> Iterator[TarEntry]:
    """Every entry under `root`, named under `prefix`, with `layer_mode`; device files and sockets are left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            arc = f"{prefix}/{rel}" if prefix else rel
            st = path.lstat()
            if path.is_symlink():
                yield TarEntry(arc, "symlink", 0o777, link=os.readlink(path))
            elif path.is_dir():
                yield TarEntry(arc, "dir", layer_mode(st.st_mode, True))
            elif path.is_file():
                inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
                yield TarEntry(arc, "file", layer_mode(st.st_mode, False), source=path, inode=inode)


def write_tar(entries: Iterable[TarEntry], dest: Path) -> str:
    """Write a tarball deterministically (parents added as 0755 directories, names sorted, mtime 0,
    owner 0 with no names); return its sha256, computed while writing (an image layer's diff_id)."""
    by_name: dict[str, TarEntry] = {}
    for entry in entries:
        for parent in _parents(entry.name):
            by_name.setdefault(parent, TarEntry(parent, "dir", 0o755))
        by_name[entry.name] = entry
    first_of_inode: dict[tuple[int, int], str] = {}
    with open(dest, "wb") as raw:
        out = HashingWriter(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for name in sorted(by_name):
                e = by_name[name]
                info = tarfile.TarInfo(name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = e.mode
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.link
                    tf.addfile(info)
                elif e.kind == "data":
                    info.size = len(e.data)
                    tf.addfile(info, io.BytesIO(e.data))
                elif e.inode is not None and e.inode in first_of_inode:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first_of_inode[e.inode]
                    tf.addfile(info)
                else:
                    assert e.source is not None
                    if e.inode is not None:
                        first_of_inode[e.inode] = name
                    with open(e.source, "rb") as fh:
                        info.size = os.fstat(fh.fileno()).st_size
                        tf.addfile(info, fh)
        out.flush()
    return out.sha.hexdigest()


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class HashingWriter:
    """A write-only file that hashes what goes through it (so a tarball is hashed while it is written)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.pos += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.fh.flush()
