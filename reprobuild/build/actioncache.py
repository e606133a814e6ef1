"""The action cache: each unit's outputs, keyed by a hash of everything that goes into building it.

The key covers the source tree (vendor included), the lock entries the unit uses after `--toolchain`
substitution, the content of the toolchain tree as this build verified it (the tree hash recorded at
install and confirmed by this build's check of the tree: never only the pin, and never where the tree
lives), the lock's image and Python sections, the builder image descriptions, the unit's definition
(pipeline and target, flags, SOURCE_DATE_EPOCH), the backend and reprobuild's version. A toolchain tree
that was tampered with and later reinstalled with other bytes thus never gets outputs made with the
first bytes, and two caches holding the same verified tree at different paths share their keys.
Computing a key needs no engine and runs nothing: a hit restores the outputs without running the
toolchain (which must be in the cache, checked by its stat fingerprint). Outputs are verified by sha256
on the way out: a tampered or damaged entry is a miss (and is evicted), never a restore.

Layout: `ROOT/<key[:2]>/<key>/{entry.json, files/...}`, each entry written in a temporary directory
and renamed into place; `ROOT/costs.json` holds the last build time of each unit, for `--shard`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprobuild import __version__
from reprobuild.build.manifest import Artifact, hash_artifacts
from reprobuild.build.shard import Unit
from reprobuild.build.treedigest import TreeDigests
from reprobuild.config.model import Lock
from reprobuild.config.pipeline import source_date_epoch
from reprobuild.config.yamlload import Node, strip
from reprobuild.fsutil import atomic_write_text, copy_under, link_escapes, readlink_under, remove_tree, symlink_under
from reprobuild.toolchains.cache import default_cache_root

# 2: symbolic links recorded as links (format 1 could hold a link's target bytes);
# 3: the toolchain's verified tree hash, not only its pin
KEY_FORMAT = 3
ENTRY = "entry.json"
FILES = "files"
COSTS = "costs.json"


def default_action_cache_dir() -> Path:
    """`$REPROBUILD_CACHE/actions` (or the user cache dir's)."""
    return default_cache_root() / "actions"


@dataclass(frozen=True)
class KeyInputs:
    """What a key is computed from, besides the unit itself."""

    lock: Lock
    overrides: dict[str, str]
    backend: str
    hermetic: bool
    repo_root: Path
    builders_dir: Path | None = None
    host: str = ""  # os-arch: the local backend's image is the host
    # Lock entry -> the tree hash this build verified (ToolchainCache.ensure's `tree_sha256`): a unit whose
    # toolchain is not here has no key.
    toolchain_trees: dict[str, str] = field(default_factory=dict)
    # Source tree digests, computed once per build (a Go pipeline's targets share one tree) and shared
    # with the provenance.
    trees: TreeDigests = field(default_factory=TreeDigests, compare=False, repr=False)


@dataclass(frozen=True)
class Entry:
    key: str
    unit: str
    artifacts: tuple[Artifact, ...]  # paths relative to the output dir
    toolchains: dict[str, Any]  # the unit's contribution to the manifest
    images: dict[str, str]
    seconds: float


def unit_key(unit: Unit, inputs: KeyInputs) -> str:
    """sha256 over every input of the unit (see the module docstring)."""
    p = unit.pipeline
    tool: dict[str, Any] | None = None
    if p.toolchain:
        entry = inputs.overrides.get(p.toolchain, p.toolchain)
        tc = inputs.lock.toolchains.get(entry)
        tree = inputs.toolchain_trees.get(entry)
        if tree is None:
            raise ValueError(f"{unit.id}: toolchain `{entry}` was not verified by this build; a key needs the "
                             "hash of the tree it checked")
        tool = {"requested": p.toolchain, "entry": entry, "pin": _plain(tc) if tc else None, "tree_sha256": tree}
    try:
        source_rel = p.source.relative_to(inputs.repo_root).as_posix()
    except ValueError:
        source_rel = None  # outside the repository: the content still counts
    definition = {"name": p.name, "builder": p.builder, "version": p.version, "run": p.run,
                  "artifacts": list(p.artifacts), "image": p.image, "extra": _plain(p.extra),
                  "source": source_rel, "source_date_epoch": source_date_epoch(p.source_date_epoch),
                  "target": _plain(unit.target, drop=("line",)) if unit.target else None}
    builders = inputs.builders_dir
    if unit.target is not None and unit.target.image is not None:  # its base's pins and the commit it is labelled
        from reprobuild.build.image import key_inputs

        definition["oci_image"] = key_inputs(unit.target.image, inputs.lock, inputs.overrides, inputs.repo_root)
    if p.container_images:  # a command pipeline's images: the same, for each
        from reprobuild.build.image import key_inputs

        definition["container_images"] = [
            {"image": _plain(x), **key_inputs(x.spec, inputs.lock, inputs.overrides, inputs.repo_root)}
            for x in p.container_images]
    data = {
        "format": KEY_FORMAT, "reprobuild": __version__, "unit": unit.id, "definition": definition,
        "source_tree": inputs.trees.digest(p.source), "toolchain": tool,
        "lock_sections": _plain(inputs.lock.sections),
        "builders": inputs.trees.digest(builders, ()) if builders and builders.is_dir() else None,
        "backend": inputs.backend, "hermetic": inputs.hermetic, "host": inputs.host,
    }
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ActionCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> Entry | None:
        """The recorded entry for `key`, or None (absent or unreadable)."""
        try:
            data = json.loads((self.entry_dir(key) / ENTRY).read_text())
            return Entry(key=key, unit=data["unit"], artifacts=tuple(Artifact(**a) for a in data["artifacts"]),
                         toolchains=data["toolchains"], images=data["images"], seconds=float(data["seconds"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def restore(self, entry: Entry, dest: Path) -> bool:
        """Copy the entry's files under dest, each checked against its recorded sha256.

        False (and the entry evicted, nothing left in dest) when any file is missing or differs.
        """
        files = self.entry_dir(entry.key) / FILES
        written: list[Path] = []
        for a in entry.artifacts:
            try:
                if a.link is not None:  # recorded as a link: restored as the same link, never as its target
                    ok = readlink_under(files, a.path) == a.link and link_escapes(dest, a.path, a.link) is None
                    if ok:
                        symlink_under(dest, a.path, a.link)
                else:
                    ok = copy_under(files, dest, a.path, int(a.mode, 8)) == a.sha256
                written.append(dest / a.path)
            except (OSError, ValueError):
                ok = False
            if not ok:
                return self._reject(entry, written)
        return True

    def _reject(self, entry: Entry, written: list[Path]) -> bool:
        for path in written:
            path.unlink(missing_ok=True)
        remove_tree(self.entry_dir(entry.key))
        return False

    def store(self, key: str, unit: str, root: Path, toolchains: dict[str, Any], images: dict[str, str],
              seconds: float, artifacts: tuple[Artifact, ...] | None = None) -> Entry:
        """Record the files under root (the unit's outputs, paths relative to the output dir); `artifacts`
        are their digests when the build has them already."""
        artifacts = artifacts if artifacts is not None else tuple(hash_artifacts(root))
        entry = Entry(key, unit, artifacts, toolchains, images, seconds)
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-", dir=final.parent))
        try:
            (tmp / FILES).mkdir()
            for a in artifacts:
                if a.link is not None:
                    symlink_under(tmp / FILES, a.path, a.link)
                elif copy_under(root, tmp / FILES, a.path, int(a.mode, 8)) != a.sha256:
                    raise OSError(f"{a.path} changed while it was being recorded")
            record = {"unit": unit, "artifacts": [dataclasses.asdict(a) for a in artifacts],
                      "toolchains": toolchains, "images": images, "seconds": round(seconds, 3)}
            (tmp / ENTRY).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            if final.exists():
                remove_tree(final)  # a stale or forced (`--no-cache`) entry: the fresh result wins
            os.rename(tmp, final)
        except OSError:
            pass  # another process wrote the same key first (or the disk is full): the cache is optional
        finally:
            if tmp.exists():
                remove_tree(tmp)
        return entry

    # --- recorded costs, for balancing shards ---------------------------------------------------
    def load_costs(self) -> dict[str, float]:
        return load_costs(self.root / COSTS)

    def record_costs(self, seconds: dict[str, float]) -> None:
        if not seconds:
            return
        costs = self.load_costs()
        costs.update({k: round(v, 3) for k, v in seconds.items()})
        atomic_write_text(self.root / COSTS, json.dumps(dict(sorted(costs.items())), indent=2) + "\n")


def load_costs(path: Path) -> dict[str, float]:
    """`{"pipeline/target": seconds}`; an absent or unreadable file is no costs (round-robin)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}


def _plain(value: Any, drop: tuple[str, ...] = ()) -> Any:
    """JSON-able data with no positions, absolute paths of pipeline files, or object identities."""
    if isinstance(value, Node):
        return strip(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in drop}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value
