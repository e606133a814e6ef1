"""Safe extraction of toolchain archives: .tar.gz/.tar.xz, zip (wheels) and .deb (ar + data.tar.*).

Every member is checked before it is written: no absolute paths, no `..`, no links that leave the
tree, no device files or FIFOs, nothing written through a symlink, and a cap on the bytes written
(the cap counts what is actually written, not what headers claim), so a decompression bomb stops
early. Modes are normalized (0755 for executables and directories, 0644 otherwise) and owners are
not restored.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from reprobuild.errors import UnsafeArchive

CHUNK = 1 << 20
MAX_HEADER_BYTES = 64 << 10
"""GNU long-name/long-link and PAX headers larger than this are refused before they are read (a path
is at most 4 KiB; tarfile would read a header of any declared size whole into memory)."""
MAX_MEMBERS = 100_000
"""Members per archive (a Go distribution has about 15,000): empty files pass a byte cap, not this."""
MAX_LINK_TARGET = 4096
MAX_SHOWN = 200
"""Characters of a member name or link target shown in a refusal."""


def shown(text: str) -> str:
    """A name from an archive, quoted and cut for a one-paragraph message."""
    quoted = repr(text)[1:-1]
    return quoted if len(quoted) <= MAX_SHOWN else quoted[:MAX_SHOWN // 2] + "…" + quoted[-MAX_SHOWN // 2:]


class CappedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extended headers before tarfile reads them into memory."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in tarfile_header_types and self.size > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"a {'PAX' if self.type in PAX_TYPES else 'GNU long-name'} header of "
                                 f"{self.size} bytes (at most {MAX_HEADER_BYTES}) after member "
                                 f"`{shown(self.name)}`")
        return super()._proc_member(tarfile)  # type: ignore[misc,no-any-return]


class HeaderTooLarge(tarfile.HeaderError):
    pass


PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
tarfile_header_types = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, *PAX_TYPES)



def _mkdir(path: str) -> None:
    """A directory of the tree, 0755 whatever the caller's umask (a container's build user must enter it)."""
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)

class _Writer:
    """Writes members under `dest`, refusing anything that would land outside it.

    Paths are handled as strings relative to `dest` (this runs once per member, ~10,000 times for Go),
    and directories already checked are remembered: once a path is a real directory it stays one, since
    no member may replace an existing path with a link (symlink and hardlink refuse to, and a file
    cannot be opened over a directory).
    """

    def __init__(self, dest: Path, archive: str, max_bytes: int, rootfs: bool = False) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        os.chmod(dest, 0o755)
        self.rootfs = rootfs  # the tree is a root filesystem (an image base): `/x` means the tree's own /x
        self.dest = dest.resolve()
        self.root = str(self.dest)
        self.archive = archive
        self.max_bytes = max_bytes
        self.written = 0
        # What was written, for the tree hash (so installing never re-reads the tree).
        self.records: dict[str, str] = {}
        self.symlinks: list[tuple[str, str]] = []  # (member, absolute path), rechecked by `finish`
        self._dirs: set[str] = {""}  # relative paths known to be real directories of the tree

    def refuse(self, member: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.archive}: refusing member `{shown(member)}`: {why}",
                             "the archive is not what the lock pinned, or was crafted; nothing was installed")

    def relative(self, name: str, member: str | None = None) -> str:
        """The normalized path of `name` inside the tree ("" for the root); refuses absolute paths and `..`."""
        what = member or name
        prefix = "" if member is None else f"link target `{name}`: "
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise self.refuse(what, prefix + "absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(what, prefix + "path contains `..`")
        return "/".join(parts)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _parents(self, member: str, rel: str, create: bool = True) -> None:
        """Every directory above `rel` is a real directory of the tree (made if missing), never a symlink.

        A parent that is a symlink would let a member write through it: refuse, even when the link
        points inside the tree (toolchains never need that, and it keeps the check simple).
        """
        parent = rel.rpartition("/")[0]
        if parent in self._dirs:
            return
        cur = ""
        for part in parent.split("/"):
            cur = f"{cur}/{part}" if cur else part
            if cur in self._dirs:
                continue
            try:
                mode = os.lstat(self._path(cur)).st_mode
            except FileNotFoundError:
                if not create:
                    raise self.refuse(member, f"`{cur}` does not exist in the tree") from None
                _mkdir(self._path(cur))
                self._dirs.add(cur)
                continue
            if stat.S_ISLNK(mode):
                raise self.refuse(member, f"would be written through the symlink `{cur}`")
            if not stat.S_ISDIR(mode):
                raise self.refuse(member, f"`{cur}` is a file, not a directory")
            self._dirs.add(cur)

    def mkdir(self, name: str) -> None:
        rel = self.relative(name)
        if rel in self._dirs:
            return
        self._parents(name, rel)
        path = self._path(rel)
        try:
            _mkdir(path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise self.refuse(name, "directory collides with another member") from None
        self._dirs.add(rel)

    def file(self, name: str, src: IO[bytes], executable: bool) -> None:
        rel = self.relative(name)
        if not rel:
            raise self.refuse(name, "a file cannot be the archive root")
        self._parents(name, rel)
        mode = 0o755 if executable else 0o644
        try:
            # O_NOFOLLOW: never write through a symlink that a member put at this name.
            fd = os.open(self._path(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.refuse(name, "would overwrite a symlink") from None
            if exc.errno == errno.EISDIR:
                raise self.refuse(name, "file collides with a directory") from None
            raise
        digest = hashlib.sha256()
        try:
            os.fchmod(fd, mode)  # normalized whatever the umask
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise UnsafeArchive(
                        f"{self.archive}: unpacks to more than {self.max_bytes} bytes, far beyond what was "
                        "expected (a decompression bomb?)", "nothing was installed")
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.records[rel] = ("x" if executable else "f") + " " + digest.hexdigest()

    def symlink(self, name: str, link_target: str) -> None:
        rel = self.relative(name)
        if not rel:
            raise self.refuse(name, "a symlink cannot be the archive root")
        if len(link_target) > MAX_LINK_TARGET:
            raise self.refuse(name, f"symlink target of {len(link_target)} characters (at most {MAX_LINK_TARGET})")
        if link_target.startswith("/"):
            if not self.rootfs:
                raise self.refuse(name, f"symlink to absolute path `{shown(link_target)}`")
            # In a root filesystem an absolute link (tzdata's zoneinfo/localtime -> /etc/localtime) means the
            # same as the relative one from the link's directory, which the checks below keep inside the tree.
            link_target = posixpath.relpath(link_target, "/" + posixpath.dirname(rel))
        path = self._path(rel)
        # Resolve through the links already in the tree (`a -> .`, then `b -> a/../x` leaves the tree,
        # although the text `a/../x` does not); `finish` checks again once every link exists.
        resolved = os.path.realpath(os.path.join(os.path.dirname(path), link_target))
        if not _inside(self.dest, resolved):
            raise self.refuse(name, f"symlink `{shown(link_target)}` points outside the tree")
        self._parents(name, rel)
        if rel in self._dirs or os.path.lexists(path):
            raise self.refuse(name, "symlink collides with another member")
        os.symlink(link_target, path)
        self.symlinks.append((name, path))
        self.records[rel] = "l " + hashlib.sha256(link_target.encode()).hexdigest()

    def hardlink(self, name: str, link_to: str) -> None:
        rel = self.relative(name)
        source = self.relative(link_to, member=name)
        if not rel or not source:
            raise self.refuse(name, "hardlink to the archive root")
        self._parents(name, source, create=False)
        try:
            source_mode = os.lstat(self._path(source)).st_mode
        except FileNotFoundError:
            source_mode = 0
        if not stat.S_ISREG(source_mode):
            raise self.refuse(name, f"hardlink to `{shown(link_to)}`, which is not a file already in the tree")
        self._parents(name, rel)
        os.link(self._path(source), self._path(rel), follow_symlinks=False)
        known = self.records.get(source)
        self.records[rel] = known if known else tree_records_of_file(Path(self._path(rel)))

    def finish(self) -> dict[str, str]:
        """Recheck every symlink now that the whole tree exists: a link created later can redirect an earlier one."""
        for name, path in self.symlinks:
            if not _inside(self.dest, os.path.realpath(path)):
                raise self.refuse(name, f"symlink `{shown(os.readlink(path))}` points outside the tree "
                                        "(through another link of the archive)")
        return self.records


def _inside(root: Path, candidate: str) -> bool:
    root_s = str(root)
    return candidate == root_s or candidate.startswith(root_s + os.sep)


def _open_tar_stream(archive: Path | BinaryIO) -> tarfile.TarFile:
    if isinstance(archive, Path):
        return tarfile.open(archive, mode="r|*", tarinfo=CappedTarInfo)
    return tarfile.open(fileobj=archive, mode="r|*", tarinfo=CappedTarInfo)


def extract_tar(archive: Path | BinaryIO, dest: Path, max_bytes: int, label: str | None = None,
                rootfs: bool = False, max_members: int = MAX_MEMBERS) -> dict[str, str]:
    """Extract a (compressed) tar stream under `dest` with every safety check."""
    name = label or (archive.name if isinstance(archive, Path) else "archive")
    w = _Writer(dest, name, max_bytes, rootfs)
    try:
        # Closed by the `with tf` below.
        tf = _open_tar_stream(archive)
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"{name}: not a readable tar archive: {exc}") from None
    try:
        with tf:
            for count, member in enumerate(tf, 1):
                if count > max_members:
                    raise UnsafeArchive(f"{name}: more than {max_members} members (at `{shown(member.name)}`), "
                                        "far more than a toolchain holds", "nothing was installed")
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
        if isinstance(exc, HeaderTooLarge):
            raise UnsafeArchive(f"{name}: refusing {exc}", "the archive was crafted; nothing was installed") from None
        raise UnsafeArchive(f"{name}: damaged tar archive: {shown(str(exc))}") from None
    return w.finish()


def extract_zip(archive: Path, dest: Path, max_bytes: int, max_members: int = MAX_MEMBERS) -> dict[str, str]:
    w = _Writer(dest, archive.name, max_bytes)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"{archive.name}: not a readable zip archive: {exc}") from None
    with zf:
        if len(zf.infolist()) > max_members:
            raise UnsafeArchive(f"{archive.name}: {len(zf.infolist())} members, more than {max_members}",
                                "nothing was installed")
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
                w.symlink(info.filename, _zip_link_target(zf, info, w))
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
    return w.finish()


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, w: _Writer) -> str:
    if info.file_size > MAX_LINK_TARGET:
        raise w.refuse(info.filename, f"symlink target of {info.file_size} bytes (at most {MAX_LINK_TARGET})")
    with zf.open(info) as src:
        raw = src.read(MAX_LINK_TARGET + 1)
    if len(raw) > MAX_LINK_TARGET:
        raise w.refuse(info.filename, f"symlink target longer than {MAX_LINK_TARGET} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise w.refuse(info.filename, f"symlink target is not UTF-8 ({shown(raw.decode('utf-8', 'replace'))})") \
            from None


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
        size_field = header[48:58].strip()
        if not size_field.isdigit():  # also refuses a negative size, which would seek backwards forever
            raise UnsafeArchive(f"{name}: damaged ar header (member size {size_field!r})")
        size = int(size_field)
        start = fh.tell()
        yield member, size
        fh.seek(start + size + (size % 2))


def extract_deb(archive: Path, dest: Path, max_bytes: int, rootfs: bool = False) -> dict[str, str]:
    """Extract a .deb's data.tar.* (the package's files) under `dest`."""
    with open(archive, "rb") as fh:
        for member, size in _ar_members(fh, archive.name):
            if member.startswith("data.tar"):
                data = io.BytesIO(fh.read(size))
                return extract_tar(data, dest, max_bytes, label=f"{archive.name}:{member}", rootfs=rootfs)
    raise UnsafeArchive(f"{archive.name}: no data.tar member")


def extract(archive: Path, dest: Path, max_bytes: int, rootfs: bool = False,
            max_members: int = MAX_MEMBERS) -> dict[str, str]:
    """Extract by file name (.whl/.zip, .deb, or a tar archive); returns `{path: "kind sha256"}`.

    `rootfs`: the tree is a root filesystem, whose absolute symlinks are made relative (image bases)."""
    lower = archive.name.lower()
    if lower.endswith((".whl", ".zip")):
        return extract_zip(archive, dest, max_bytes, max_members)
    if lower.endswith(".deb"):
        return extract_deb(archive, dest, max_bytes, rootfs)
    return extract_tar(archive, dest, max_bytes, rootfs=rootfs, max_members=max_members)


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
