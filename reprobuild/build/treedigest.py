"""Source tree digests: each tree walked once per build, each file's content hashed once across builds.

A build needs a tree's digest in three places (the action-cache key, the provenance's `source:` and
`vendor:` dependencies); `TreeDigests` walks a tree once and derives the digests of its subtrees
(`vendor/`) from the same walk. Across builds, file hashes are kept in a stat-keyed cache, as git's
index does: a file's record (kind and sha256) is reused only when its path, size, mtime_ns, inode,
ctime_ns and mode all equal what they were when it was hashed. A file changed within the clock's
resolution of being hashed is never cached (git's "racily clean" entries), so an edit that keeps
the size and the timestamp cannot hide. The cache lives in the reprobuild cache, one file per tree
(dropped after 30 days unused), written atomically; an unreadable cache is an empty one.
`REPROBUILD_DIGEST_CACHE=0` turns it off.

The digest scheme is the toolchain tree hash's (`toolchains.extract.tree_hash`): sha256 over each
file's path, kind and content, sorted by path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

from reprobuild.fsutil import atomic_write_text, sha256_file
from reprobuild.toolchains.extract import tree_hash

FORMAT = 1
RACY_NS = 2_000_000_000  # files changed (mtime or ctime) this close to a walk are hashed again next time

KEEP_DAYS = 30  # a tree's records are dropped when it was not walked for this long
Stat = tuple[int, int, int, int, int]  # size, mtime_ns, inode, ctime_ns, mode


def digest_cache_enabled() -> bool:
    return os.environ.get("REPROBUILD_DIGEST_CACHE", "1") not in ("0", "", "off", "no")


def default_digest_cache_dir() -> Path:
    """`$REPROBUILD_CACHE/digests` (or the user cache dir's)."""
    from reprobuild.toolchains.cache import default_cache_root

    return default_cache_root() / "digests"


class TreeDigests:
    """The digests of the trees one build reads (thread-safe: units ask from their own threads).

    `cache_dir=None` keeps nothing across builds; every tree is still walked only once per instance.
    """

    def __init__(self, cache_dir: Path | None = None, racy_ns: int | None = None) -> None:
        self.cache_dir = cache_dir
        self.racy_ns = RACY_NS if racy_ns is None else racy_ns
        self._walks: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}
        self._digests: dict[tuple[str, tuple[str, ...]], str] = {}
        self._guard = threading.Lock()
        self.hashed = 0  # files whose content was read (the rest came from the stat cache)

    @classmethod
    def for_build(cls) -> TreeDigests:
        """With the stat cache in the reprobuild cache, unless REPROBUILD_DIGEST_CACHE=0."""
        return cls(default_digest_cache_dir() if digest_cache_enabled() else None)

    def digest(self, root: Path, exclude: tuple[str, ...] = (".git",)) -> str:
        """sha256 over every file under root (top-level names in `exclude` left out)."""
        key = (str(root.resolve()), tuple(sorted(exclude)))
        with self._guard:
            if key in self._digests:
                return self._digests[key]
            records = self._from_a_walk_above(key) or self._walk(Path(key[0]), key[1])
            self._digests[key] = tree_hash(records)
            return self._digests[key]

    def _from_a_walk_above(self, key: tuple[str, tuple[str, ...]]) -> dict[str, str] | None:
        """A subtree's records, taken from a walk of a directory above it (`vendor/` from its source tree)."""
        root, exclude = key
        for (above, left_out), records in self._walks.items():
            if not root.startswith(above + os.sep):
                continue
            rel = root[len(above) + 1:].replace(os.sep, "/")
            if rel.split("/")[0] in left_out:
                continue
            prefix = rel + "/"
            return {k[len(prefix):]: v for k, v in records.items()
                    if k.startswith(prefix) and k[len(prefix):].split("/")[0] not in exclude}
        return None

    def _walk(self, root: Path, exclude: tuple[str, ...]) -> dict[str, str]:
        """The records of the tree (see `toolchains.extract.tree_records`), hashing only changed files."""
        cache_file = self._cache_file(root)
        known = _load(cache_file) if cache_file is not None else {}
        fresh: dict[str, tuple[Stat, str]] = {}
        records: dict[str, str] = {}
        start = time.time_ns()
        pending = [("", str(root))]  # (path relative to root with a trailing slash, or ""; the real path)
        while pending:
            rel_dir, real_dir = pending.pop()
            with os.scandir(real_dir) as entries:
                for entry in entries:
                    if not rel_dir and entry.name in exclude:
                        continue
                    rel = rel_dir + entry.name
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        pending.append((rel + "/", entry.path))
                    elif stat.S_ISLNK(st.st_mode):
                        records[rel] = "l " + hashlib.sha256(os.readlink(entry.path).encode()).hexdigest()
                    elif stat.S_ISREG(st.st_mode):
                        now: Stat = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_mode)
                        seen = known.get(rel)
                        if seen is not None and seen[0] == now:
                            record = seen[1]
                        else:
                            record = ("x " if st.st_mode & 0o111 else "f ") + sha256_file(Path(entry.path))
                            self.hashed += 1
                        records[rel] = record
                        if max(st.st_mtime_ns, st.st_ctime_ns) < start - self.racy_ns:
                            fresh[rel] = (now, record)
                    else:
                        records[rel] = "? special"
        self._walks[(str(root), exclude)] = records
        if cache_file is not None and fresh != known:
            data = {"format": FORMAT, "root": str(root),
                    "files": {rel: [*st_, record] for rel, (st_, record) in sorted(fresh.items())}}
            with contextlib.suppress(OSError):  # the cache is optional (a read-only or full disk)
                atomic_write_text(cache_file, json.dumps(data, separators=(",", ":")) + "\n")
                _forget_old(cache_file.parent)
        elif cache_file is not None:
            with contextlib.suppress(OSError):
                os.utime(cache_file)  # walked today: kept another KEEP_DAYS
        return records

    def _cache_file(self, root: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(str(root).encode()).hexdigest()[:32]}.json"


def _forget_old(cache_dir: Path) -> None:
    """Drop the records of trees not walked for KEEP_DAYS (temporary checkouts, removed projects)."""
    cutoff = time.time() - KEEP_DAYS * 86400
    for entry in cache_dir.glob("*.json"):
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()


def _load(path: Path) -> dict[str, tuple[Stat, str]]:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            return {}
        return {rel: ((int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4])), str(v[5]))
                for rel, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}

