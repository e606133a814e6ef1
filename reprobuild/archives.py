"""Safe extraction of toolchain archives: .tar.gz/.tar.xz, zip (wheels) and .deb (ar + data.tar.*).

Every member is checked before it is written: no absolute paths, no `..`, no links that leave the
tree, no device files or FIFOs, nothing written through a symlink, and a cap on the bytes written
(the cap counts what is actually written, not what headers claim), so a decompression bomb stops
early. Modes are normalized (0755 for executables and directories, 0644 otherwise) and owners are
not restored.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from reprobuild.errors import UnsafeArchive

CHUNK = 1 << 20


class _Writer:
    """Writes members under `dest`, refusing anything that would land outside it."""

    def __init__(self, dest: Path, archive: str, max_bytes: int) -> None:
        self.dest = dest.resolve()
        self.archive = archive
        self.max_bytes = max_bytes
        self.written = 0
        # What was written, for the tree hash (so installing never re-reads the tree).
        self.records: dict[str, str] = {}

    def refuse(self, member: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.archive}: refusing member `{member}`: {why}",
                             "the archive is not what the lock pinned, or was crafted; nothing was installed")

    def target(self, name: str) -> Path | None:
        """The path a member goes to, or None for the archive root itself."""
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise self.refuse(name, "absolute path")
        parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(name, "path contains `..`")
        if not parts:
            return None
        path = self.dest.joinpath(*parts)
        self._check_parents(name, path)
        return path

    def _check_parents(self, name: str, path: Path) -> None:
        # A parent that is a symlink would let a later member write through it: refuse, even when
        # the link points inside the tree (toolchains never need that, and it keeps the check simple).
        cur = self.dest
        for part in path.relative_to(self.dest).parts[:-1]:
            cur = cur / part
            if cur.is_symlink():
                raise self.refuse(name, f"would be written through the symlink `{cur.relative_to(self.dest)}`")

    def mkdir(self, name: str) -> None:
        path = self.target(name)
        if path is None:
            return
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise self.refuse(name, "directory collides with another member")
        path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str, src: IO[bytes], executable: bool) -> None:
        path = self.target(name)
        if path is None:
            raise self.refuse(name, "a file cannot be the archive root")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._check_parents(name, path)
        if path.is_symlink():
            raise self.refuse(name, "would overwrite a symlink")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o755 if executable else 0o644)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise UnsafeArchive(
                        f"{self.archive}: unpacks to more than {self.max_bytes} bytes, far beyond what was "
                        "expected (a decompression bomb?)", "nothing was installed")
                out.write(chunk)
        os.chmod(path, 0o755 if executable else 0o644)
        self.records[self.rel(path)] = ("x" if executable else "f") + " " + digest.hexdigest()

    def rel(self, path: Path) -> str:
        return path.relative_to(self.dest).as_posix()

    def symlink(self, name: str, link_target: str) -> None:
        path = self.target(name)
        if path is None:
            raise self.refuse(name, "a symlink cannot be the archive root")
        if link_target.startswith("/"):
            raise self.refuse(name, f"symlink to absolute path `{link_target}`")
        resolved = os.path.normpath(os.path.join(os.path.dirname(str(path)), link_target))
        if not _inside(self.dest, resolved):
            raise self.refuse(name, f"symlink `{link_target}` points outside the tree")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._check_parents(name, path)
        if path.exists() or path.is_symlink():
            raise self.refuse(name, "symlink collides with another member")
        os.symlink(link_target, path)
        self.records[self.rel(path)] = "l " + hashlib.sha256(link_target.encode()).hexdigest()

    def hardlink(self, name: str, link_to: str) -> None:
        path = self.target(name)
        source = self.target(link_to)
        if path is None or source is None:
            raise self.refuse(name, "hardlink to the archive root")
        if not source.is_file() or source.is_symlink():
            raise self.refuse(name, f"hardlink to `{link_to}`, which is not a file already in the tree")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._check_parents(name, path)
        os.link(source, path)
        known = self.records.get(self.rel(source))
        self.records[self.rel(path)] = known if known else tree_records_of_file(path)


def _inside(root: Path, candidate: str) -> bool:
    root_s = str(root)
    return candidate == root_s or candidate.startswith(root_s + os.sep)


def _open_tar_stream(archive: Path | BinaryIO) -> tarfile.TarFile:
    if isinstance(archive, Path):
        return tarfile.open(archive, mode="r|*")
    return tarfile.open(fileobj=archive, mode="r|*")


def extract_tar(archive: Path | BinaryIO, dest: Path, max_bytes: int, label: str | None = None) -> dict[str, str]:
    """Extract a (compressed) tar stream under `dest` with every safety check."""
    name = label or (archive.name if isinstance(archive, Path) else "archive")
    w = _Writer(dest, name, max_bytes)
    try:
        # Closed by the `with tf` below.
        tf = _open_tar_stream(archive)
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"{name}: not a readable tar archive: {exc}") from None
    try:
        with tf:
            for member in tf:
                if member.isdir():
                    w.mkdir(member.name)
                elif member.isreg():
                    src = tf.extractfile(member)
                    assert src is not None
                    w.file(member.name, src, bool(member.mode & 0o111))
                elif member.issym():
                    w.symlink(member.name, member.linkname)
                elif member.islnk():
                    w.hardlink(member.name, member.linkname)
                else:
                    raise w.refuse(member.name, "device file, FIFO or other special file")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeArchive):
            raise
        raise UnsafeArchive(f"{name}: damaged tar archive: {exc}") from None
    return w.records


def extract_zip(archive: Path, dest: Path, max_bytes: int) -> dict[str, str]:
    w = _Writer(dest, archive.name, max_bytes)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"{archive.name}: not a readable zip archive: {exc}") from None
    with zf:
        declared = sum(info.file_size for info in zf.infolist())
        if declared > max_bytes:
            raise UnsafeArchive(f"{archive.name}: declares {declared} unpacked bytes, more than the allowed "
                                f"{max_bytes} (a decompression bomb?)", "nothing was installed")
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                w.mkdir(info.filename)
            elif kind == stat.S_IFLNK:
                w.symlink(info.filename, zf.read(info).decode("utf-8"))
            elif kind in (0, stat.S_IFREG):
                try:
                    with zf.open(info) as src:
                        w.file(info.filename, src, bool(mode & 0o111))
                except (zipfile.BadZipFile, OSError) as exc:
                    if isinstance(exc, UnsafeArchive):
                        raise
                    raise UnsafeArchive(f"{archive.name}: damaged member `{info.filename}`: {exc}") from None
            else:
                raise w.refuse(info.filename, "device file, FIFO or other special file")
    return w.records


def _ar_members(fh: BinaryIO, name: str) -> Iterator[tuple[str, int]]:
    if fh.read(8) != b"!<arch>\n":
        raise UnsafeArchive(f"{name}: not a Debian package (no ar header)")
    while True:
        header = fh.read(60)
        if not header:
            return
        if len(header) != 60 or header[58:60] != b"`\n":
            raise UnsafeArchive(f"{name}: damaged ar header")
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = fh.tell()
        yield member, size
        fh.seek(start + size + (size % 2))


def extract_deb(archive: Path, dest: Path, max_bytes: int) -> dict[str, str]:
    """Extract a .deb's data.tar.* (the package's files) under `dest`."""
    with open(archive, "rb") as fh:
        for member, size in _ar_members(fh, archive.name):
            if member.startswith("data.tar"):
                data = io.BytesIO(fh.read(size))
                return extract_tar(data, dest, max_bytes, label=f"{archive.name}:{member}")
    raise UnsafeArchive(f"{archive.name}: no data.tar member")


def extract(archive: Path, dest: Path, max_bytes: int) -> dict[str, str]:
    """Extract by file name (.whl/.zip, .deb, or a tar archive); returns `{path: "kind sha256"}`."""
    lower = archive.name.lower()
    if lower.endswith((".whl", ".zip")):
        return extract_zip(archive, dest, max_bytes)
    if lower.endswith(".deb"):
        return extract_deb(archive, dest, max_bytes)
    return extract_tar(archive, dest, max_bytes)


def tree_records(root: Path) -> dict[str, str]:
    """The same records as extraction gives, read back from disk (for `toolchain verify`)."""
    records: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                records[rel] = "l " + hashlib.sha256(os.readlink(path).encode()).hexdigest()
            elif path.is_file():
                records[rel] = tree_records_of_file(path)
            elif not path.is_dir():
                records[rel] = "? special"
    return records


def tree_records_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return ("x" if path.stat().st_mode & 0o111 else "f") + " " + h.hexdigest()


def tree_hash(records: dict[str, str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(records):
        h.update(f"{records[rel]}  {rel}\n".encode())
    return h.hexdigest()
