"""Archives with normalized metadata: sorted entries, fixed mtimes, uid/gid 0 with empty names,
0755/0644 modes, and gzip headers with mtime 0 and no file name."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import time
import zipfile
from pathlib import Path

ZIP_EPOCH_MIN = 315532800  # zip cannot store times before 1980-01-01
# zlib's default level: on a Go binary, level 9 took 3.2x as long for 0.3% fewer bytes (measured, 2 MB).
# Part of the output bytes: changing it changes every archive's hash.
LEVEL = 6


def _mode(path: Path) -> int:
    return 0o755 if _regular(path).st_mode & 0o111 else 0o644


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


def write_tar_gz(members: list[tuple[str, Path]], dest: Path, mtime: int) -> None:
    """A .tar.gz of `(name in archive, file on disk)` pairs, byte-identical for the same inputs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, path in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = _regular(path).st_size
            info.mtime = mtime
            info.mode = _mode(path)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                tf.addfile(info, fh)
    with open(dest, "wb") as out, gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0,
                                                compresslevel=LEVEL) as gz:
        gz.write(raw.getvalue())


def write_zip(members: list[tuple[str, Path]], dest: Path, mtime: int) -> None:
    stamp = time.gmtime(max(mtime, ZIP_EPOCH_MIN))[:6]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in sorted(members):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100000 | _mode(path)) << 16
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
            mode = (info.external_attr >> 16) & 0o777
            new.external_attr = (0o100000 | (0o755 if mode & 0o111 else 0o644)) << 16
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
                m.mode = 0o755 if m.mode & 0o111 else 0o644
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh, gzip.GzipFile(filename="", fileobj=fh, mode="wb", mtime=0, compresslevel=LEVEL) as gz:
        gz.write(raw.getvalue())
    os.replace(tmp, path)
