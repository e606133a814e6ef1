"""Small filesystem helpers: atomic writes and streaming hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1 << 20


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def remove_tree(path: Path) -> None:
    """Remove a tree even where a build left it read-only."""

    def onerror(func: object, p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)


@contextlib.contextmanager
def temp_dir_in(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory next to its final place (same filesystem, so rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            remove_tree(tmp)


def read_json_object(path: Path, limit: int) -> dict[str, Any] | None:
    """A small JSON object reprobuild wrote (a record in a cache or a temp dir), read without following a link
    and at most `limit` bytes of it; None when it is missing, a link, or not a JSON object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(limit))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def link_tree(source: Path, dest: Path) -> None:
    """dest: a tree of hard links to source's files (the same files, no copy); a copy across filesystems."""
    try:
        shutil.copytree(source, dest, symlinks=True, copy_function=os.link)
    except OSError:
        remove_tree(dest)
        shutil.copytree(source, dest, symlinks=True)


def others_can_reach(path: Path) -> bool:
    """Every directory above `path` lets other users through (o+x)."""
    return all(os.stat(parent).st_mode & 0o001 for parent in [*path.resolve().parents][::-1])


# --- no-follow access under a root ----------------------------------------------------------------
# Paths from manifests, shard dirs and build outputs are untrusted: every component is opened with
# O_NOFOLLOW relative to its parent's descriptor, so no symbolic link (in the last component or in any
# directory above it) can take a read or a write outside `root`.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class LinkInPath(OSError):
    """A component of a path under a root is a symbolic link (or not a directory where one is needed)."""


def safe_relpath(rel: str) -> str | None:
    """Why `rel` is not a plain relative POSIX path inside a directory (None when it is)."""
    if not isinstance(rel, str) or not rel:
        return "empty path"
    if "\0" in rel or "\\" in rel:
        return "NUL or backslash in the path"
    if rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "`..`, `.` or an empty component in the path"
    return None


def _split(rel: str) -> list[str]:
    problem = safe_relpath(rel)
    if problem is not None:
        raise LinkInPath(f"{rel!r}: {problem}")
    return rel.split("/")


@contextlib.contextmanager
def parent_fd(root: Path, rel: str, create: bool = False) -> Iterator[tuple[int, str]]:
    """(descriptor of rel's parent directory, rel's last component), reached without following links.

    With `create`, missing parent directories are made (mode 0755). Raises LinkInPath when a parent
    is a symbolic link or not a directory.
    """
    *dirs, name = _split(rel)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in dirs:
            made = False
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LinkInPath(f"{rel}: `{part}` is a symbolic link or not a directory") from None
                raise
            os.close(fd)
            fd = nxt
            if made:
                os.fchmod(fd, 0o755)  # not the umask's
        yield fd, name
    finally:
        os.close(fd)


def lstat_under(root: Path, rel: str) -> os.stat_result:
    """lstat of root/rel, no link followed on the way (LinkInPath when a parent is a link)."""
    with parent_fd(root, rel) as (fd, name):
        return os.stat(name, dir_fd=fd, follow_symlinks=False)


def readlink_under(root: Path, rel: str) -> str:
    with parent_fd(root, rel) as (fd, name):
        return os.readlink(name, dir_fd=fd)


def open_read_under(root: Path, rel: str) -> BinaryIO:
    """root/rel opened for reading; OSError (ELOOP) when it or a parent is a symbolic link."""
    with parent_fd(root, rel) as (fd, name):
        try:
            child = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkInPath(f"{rel}: is a symbolic link") from None
            raise
    return os.fdopen(child, "rb")


def open_write_under(root: Path, rel: str, mode: int = 0o644) -> BinaryIO:
    """A new file root/rel (parents made as needed); never follows a link, never replaces a file."""
    with parent_fd(root, rel, create=True) as (fd, name):
        child = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                        mode, dir_fd=fd)
    return os.fdopen(child, "wb")


def symlink_under(root: Path, rel: str, target: str) -> None:
    with parent_fd(root, rel, create=True) as (fd, name):
        os.symlink(target, name, dir_fd=fd)


def copy_under(src_root: Path, dst_root: Path, rel: str, mode: int = 0o644) -> str:
    """Copy src_root/rel to a new dst_root/rel, no link followed on either side; returns the sha256."""
    h = hashlib.sha256()
    with open_read_under(src_root, rel) as src, open_write_under(dst_root, rel, mode) as dst:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            dst.write(chunk)
        os.fchmod(dst.fileno(), mode)
    return h.hexdigest()


def sha256_under(root: Path, rel: str) -> str:
    h = hashlib.sha256()
    with open_read_under(root, rel) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def link_escapes(root: Path, rel: str, target: str) -> str | None:
    """Why the link root/rel -> target leaves root (None when it stays inside)."""
    if not target:
        return "empty target"
    if target.startswith("/"):
        return f"absolute target {target!r}"
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if lexical == ".." or lexical.startswith("../"):
        return f"target {target!r} leaves the directory"
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, rel))
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        return f"target {target!r} resolves outside the directory"
    return None
