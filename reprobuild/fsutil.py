"""Small filesystem helpers: atomic writes and streaming hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
