"""One side of a comparison, read from disk: an output dir or a bare manifest/SHA256SUMS file.

Reading follows no link: a symbolic link is an artifact whose content is its target string, a path
through a linked parent directory is not read, and files too large to hash within the budget are
settled later by streaming both sides (see `compare`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.errors import BadInput, FileError, Location
from reprobuild.fsutil import LinkInPath, lstat_under, readlink_under, sha256_under

HASH_LIMIT = 256 << 20
"""Files up to this size are hashed (about 1 s each here); larger ones are compared by streaming both sides."""
HASH_BUDGET = 2 << 30
"""Bytes hashed per side in one compare, at most."""


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact as a side knows it: its path relative to the output dir, hash, size and mode."""

    path: str
    sha256: str
    size: int | None
    mode: int | None
    link: str | None = None
    """A symbolic link's target: compared as a string, never followed."""
    note: str | None = None
    """Why the bytes were not read (a link in a parent dir, not a regular file); such a pair always differs."""
    hashed: bool = True
    """False for a file too large to hash within the budget: equality is then decided by streaming both."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.mode is not None:
            data["mode"] = f"{self.mode:04o}"
        if self.link is not None:
            data["link"] = self.link
        if self.note is not None:
            data["note"] = self.note
        return data


@dataclass(frozen=True)
class Side:
    """One side of a comparison. `root` is where the artifact bytes are; None for a bare manifest."""

    label: str
    root: Path | None
    artifacts: dict[str, ArtifactRecord]
    warnings: tuple[str, ...] = ()


# -- loading a side ----------------------------------------------------------------------------------

def load_side(path: Path, label: str) -> Side:
    """An output dir or a bare manifest/SHA256SUMS file, as a `Side`. Raises BadInput when it is neither."""
    if not path.exists():
        raise BadInput(f"{label}: {path} does not exist", "give an output directory of `reprobuild build` "
                       "or its manifest.json")
    if path.is_dir():
        manifest, sums = path / "manifest.json", path / "SHA256SUMS"
        if manifest.is_file():
            return _with_files(path, label, _read_manifest(manifest), manifest.stat().st_mtime_ns)
        if sums.is_file():
            return _with_files(path, label, _read_sums(sums))
        raise BadInput(f"{label}: {path} is not a reprobuild output directory (no manifest.json or SHA256SUMS)",
                       "give the --out directory of `reprobuild build`")
    if path.name == "SHA256SUMS":
        return Side(str(path), None, _read_sums(path))
    return Side(str(path), None, _read_manifest(path))


def _read_manifest(path: Path) -> dict[str, ArtifactRecord]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FileError(Location(path), "not a manifest.json (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise FileError(Location(path, exc.lineno), f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise FileError(Location(path), "not a reprobuild manifest: expected an object with an \"artifacts\" list")
    records: dict[str, ArtifactRecord] = {}
    for i, item in enumerate(data["artifacts"]):
        where = f"artifacts[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) \
                or not isinstance(item.get("sha256"), str):
            raise FileError(Location(path), f"{where}: expected an object with \"path\" and \"sha256\" strings")
        rel = _relative(item["path"], path, where)
        size, mode = item.get("size"), item.get("mode")
        if size is not None and not isinstance(size, int):
            raise FileError(Location(path), f"{where}.size: expected an integer")
        link = item.get("link")
        if link is not None and not isinstance(link, str):
            raise FileError(Location(path), f"{where}.link: expected a string")
        records[rel] = ArtifactRecord(rel, item["sha256"].lower(), size, _mode(mode, path, where), link)
    return records


def _mode(value: object, path: Path, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            pass
    raise FileError(Location(path), f"{where}.mode: expected an octal string like \"0644\" or an integer")


def _read_sums(path: Path) -> dict[str, ArtifactRecord]:
    records: dict[str, ArtifactRecord] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name[1:] if name.startswith(("*", " ")) else name
        if not sep or len(digest) != 64 or not name:
            raise FileError(Location(path, lineno), "expected `<sha256>  <path>`")
        rel = _relative(name, path, f"line {lineno}")
        records[rel] = ArtifactRecord(rel, digest.lower(), None, None)
    return records


def _relative(name: str, source: Path, where: str) -> str:
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or not parts:
        raise FileError(Location(source), f"{where}: artifact path {name!r} must be relative, inside the directory")
    return Path(name).as_posix()


def _with_files(root: Path, label: str, records: dict[str, ArtifactRecord], manifest_written: int | None = None
                ) -> Side:
    """The side with each artifact's actual hash, size and mode (the files are the truth).

    Nothing is followed: a symbolic link is an artifact whose content is its target string, and a
    path through a link in a parent directory is not read at all. Files larger than HASH_LIMIT (or
    past HASH_BUDGET in total) are not hashed: equal sizes are then settled by streaming both sides.
    A regular file with its recorded size, not modified since the manifest was written
    (`manifest_written`, its mtime in ns), keeps its recorded digest (the build hashed it).
    """
    stats: dict[str, os.stat_result | str] = {}
    for rel in records:
        try:
            stats[rel] = lstat_under(root, rel)
        except FileNotFoundError:
            stats[rel] = "missing"
        except (LinkInPath, NotADirectoryError) as exc:
            stats[rel] = f"not read: {exc}"
    missing = [rel for rel, st in stats.items() if st == "missing"]
    if missing:
        raise BadInput(f"{label}: {root} lists {len(missing)} artifact(s) that are not there, e.g. {missing[0]}",
                       "the output directory is incomplete: rebuild it")
    budget = HASH_BUDGET
    to_hash: list[str] = []
    digests: dict[str, str] = {}
    for rel in sorted(records):
        st = stats[rel]
        if not isinstance(st, os.stat_result) or not stat.S_ISREG(st.st_mode):
            continue
        if manifest_written is not None and records[rel].size == st.st_size and st.st_mtime_ns < manifest_written:
            digests[rel] = records[rel].sha256
        elif st.st_size <= min(HASH_LIMIT, budget):
            budget -= st.st_size
            to_hash.append(rel)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        digests.update(zip(to_hash, pool.map(lambda rel: sha256_under(root, rel), to_hash), strict=True))
    actual: dict[str, ArtifactRecord] = {}
    warnings = []
    for rel, recorded in records.items():
        st = stats[rel]
        if isinstance(st, str):
            warnings.append(f"{label}: {rel} {st}")
            actual[rel] = ArtifactRecord(rel, "", None, None, note=st)
            continue
        mode = recorded.mode if recorded.mode is not None else st.st_mode & 0o7777
        if stat.S_ISLNK(st.st_mode):
            target = readlink_under(root, rel)
            digest = hashlib.sha256(os.fsencode(target)).hexdigest()
            if recorded.link != target:
                warnings.append(f"{label}: {rel} is a symbolic link to {target!r}, not followed"
                                + ("" if recorded.link is None else f" (the manifest records {recorded.link!r})"))
            actual[rel] = ArtifactRecord(rel, digest, len(os.fsencode(target)), mode, link=target)
        elif not stat.S_ISREG(st.st_mode):
            note = "not read: not a regular file"
            warnings.append(f"{label}: {rel} {note}")
            actual[rel] = ArtifactRecord(rel, "", None, None, note=note)
        elif rel in digests:
            if recorded.sha256 != digests[rel]:
                warnings.append(f"{label}: {rel} does not match its recorded sha256 (the file changed after the build)")
            actual[rel] = ArtifactRecord(rel, digests[rel], st.st_size, mode)
        else:
            warnings.append(f"{label}: {rel} not hashed: too large ({st.st_size} bytes); compared byte by byte")
            actual[rel] = ArtifactRecord(rel, recorded.sha256, st.st_size, mode, hashed=False)
    return Side(str(root), root, actual, tuple(warnings))
