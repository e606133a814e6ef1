"""Which builder images each checkout's lock uses, recorded in the cache (`images/uses/`), so that `doctor --fix`
for one checkout keeps the images of another that shares the engine.

A build records, per lock path, the lock's content hash and the (image name, inputs key) pairs it used; the record
is rewritten only when that changes, and starts afresh when the lock's content changes. An image another lock
still uses (that lock exists and reads as it did) is kept; once that checkout is gone or its lock changed, its
old images may go. `made_here` lists the images this cache made (its `images/ids/` records): only those are
ever candidates, so another user's (another cache's) images stay too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from reprobuild.fsutil import atomic_write_text, read_json_object


def record_use(cache_root: Path, lock_path: Path, name: str, key: str) -> None:
    """Record that builds with the lock at `lock_path`, as it reads now, use image `name` made from `key`."""
    where = os.path.abspath(lock_path)
    try:
        digest = hashlib.sha256(Path(where).read_bytes()).hexdigest()
    except OSError:
        return
    record = _record_of(cache_root, where)
    current = _read(record)
    if current is not None and (current["lock"], current["lock_sha256"]) == (where, digest) \
            and key in current["images"].get(name, []):
        return
    (cache_root / "images" / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root / "images" / "locks" / "uses.lock")):
        current = _read(record)
        images: dict[str, list[str]] = {}
        if current is not None and (current["lock"], current["lock_sha256"]) == (where, digest):
            images = current["images"]
        images[name] = sorted({*images.get(name, []), key})
        atomic_write_text(record, json.dumps({"lock": where, "lock_sha256": digest, "images": images},
                                             sort_keys=True) + "\n")


def used_by_other_locks(cache_root: Path, lock_path: Path) -> set[tuple[str, str]]:
    """(image name, inputs key) pairs recorded for locks other than `lock_path` that still exist and still read
    as they did when they used them: another checkout's images, which `doctor --fix` must keep."""
    mine = os.path.abspath(lock_path)
    kept: set[tuple[str, str]] = set()
    folder = cache_root / "images" / "uses"
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        current = _read(record)
        if current is None or current["lock"] == mine:
            continue
        try:
            if hashlib.sha256(Path(current["lock"]).read_bytes()).hexdigest() != current["lock_sha256"]:
                continue  # that lock changed since: its next build records what it uses now
        except OSError:
            continue  # that checkout is gone
        kept |= {(name, key) for name, keys in current["images"].items() for key in keys}
    return kept


def made_here(cache_root: Path) -> set[str]:
    """The IDs of the images made or loaded through this cache (its `images/ids/` records)."""
    found: set[str] = set()
    folder = cache_root / "images" / "ids"
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = read_json_object(record, 1 << 20)
        if data is not None and isinstance(data.get("id"), str):
            found.add(data["id"].removeprefix("sha256:"))
    return found


def _record_of(cache_root: Path, lock: str) -> Path:
    return cache_root / "images" / "uses" / f"{hashlib.sha256(lock.encode()).hexdigest()[:32]}.json"


def _read(record: Path) -> dict[str, Any] | None:
    """A uses record, or None when it is missing, a link, or not one."""
    data = read_json_object(record, 1 << 20)
    if data is None:
        return None
    images = data.get("images")
    if isinstance(data.get("lock"), str) and isinstance(data.get("lock_sha256"), str) and isinstance(images, dict) \
            and all(isinstance(v, list) and all(isinstance(k, str) for k in v) for v in images.values()):
        return data
    return None
