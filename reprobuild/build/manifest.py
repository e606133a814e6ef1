"""Proof of a build: `SHA256SUMS` (sorted, `sha256sum -c` compatible) and `manifest.json`.

Symbolic links: a link in the output that stays inside it is an artifact of its own, recorded with
its target (`"link"`), the sha256 and size of the target string and mode 0777; it is listed in the
manifest but not in SHA256SUMS (where `sha256sum -c` would follow it). A link that points outside
the output is an error naming it. Nothing here ever follows a link: files are opened no-follow.

Hashing uses every core when there are many files (hashlib releases the GIL on large buffers).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reprobuild.errors import UnsafeOutput
from reprobuild.fsutil import (
    LinkInPath,
    atomic_write_text,
    link_escapes,
    lstat_under,
    readlink_under,
    remove_tree,
    sha256_under,
)

SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
RESERVED = {SUMS, MANIFEST, "provenance.json"}


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the output dir, POSIX separators
    sha256: str
    size: int
    mode: str  # octal, e.g. "0755"
    link: str | None = None  # a symbolic link's target (sha256 and size are then the target string's)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.link is None:
            del data["link"]
        return data


LINK_MODE = "0777"


def link_artifact(rel: str, target: str) -> Artifact:
    raw = os.fsencode(target)
    return Artifact(rel, hashlib.sha256(raw).hexdigest(), len(raw), LINK_MODE, target)


def list_files(root: Path) -> list[str]:
    """Every regular file and symbolic link under root (links to directories too; none is followed)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links]
        for name in [*filenames, *links]:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in RESERVED:
                files.append(rel)
    return sorted(files)


def hash_artifacts(root: Path, paths: list[str] | None = None) -> list[Artifact]:
    rels = sorted(paths if paths is not None else list_files(root))
    workers = min(os.cpu_count() or 1, 8) if len(rels) > 1 else 1

    def one(rel: str) -> Artifact:
        try:
            st = lstat_under(root, rel)
            if stat.S_ISLNK(st.st_mode):
                target = readlink_under(root, rel)
                problem = link_escapes(root, rel, target)
                if problem is not None:
                    raise UnsafeOutput(rel, problem)
                return link_artifact(rel, target)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeOutput(rel, "not a regular file, directory or symbolic link")
            return Artifact(rel, sha256_under(root, rel), st.st_size, f"{st.st_mode & 0o7777:04o}")
        except LinkInPath as exc:
            raise UnsafeOutput(rel, str(exc)) from None

    if workers == 1:
        return [one(r) for r in rels]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, rels))


def render_sums(artifacts: list[Artifact]) -> str:
    """SHA256SUMS: regular files only (`sha256sum -c` would follow a link and hash its target)."""
    return "".join(f"{a.sha256}  {a.path}\n" for a in sorted(artifacts, key=lambda a: a.path) if a.link is None)


def oci_images(root: Path, artifacts: list[Artifact]) -> dict[str, dict[str, Any]]:
    """The container images among the artifacts (`<target>.oci/` layouts): each one's digest, and per
    platform its manifest and config digests (the config digest is the engine's image ID)."""
    from reprobuild.formats import oci

    result: dict[str, dict[str, Any]] = {}
    for a in artifacts:
        layout = a.path.removesuffix("/index.json")
        if layout != a.path and oci.is_layout(root / layout):
            read = oci.read_layout(root / layout, check=False)
            result[layout] = {"digest": read.top.digest, "media_type": read.top.media_type, "ref": read.ref,
                              "platforms": {f"{i.platform.os}/{i.platform.architecture}": {
                                  "manifest": i.manifest.digest, "config": i.config.digest,
                                  "layers": [b.digest for b in i.layers]} for i in read.images}}
    return result


def write_outputs(root: Path, artifacts: list[Artifact], manifest: dict[str, Any]) -> None:
    """Write manifest.json and SHA256SUMS; the images found among the artifacts are added to `manifest`
    as `oci_images` (so the provenance written next names them as subjects)."""
    images = oci_images(root, artifacts)
    if images:
        manifest["oci_images"] = images
    data = dict(manifest)
    data["artifacts"] = [a.to_json() for a in sorted(artifacts, key=lambda a: a.path)]
    atomic_write_text(root / MANIFEST, json.dumps(data, indent=2, sort_keys=True) + "\n")
    atomic_write_text(root / SUMS, render_sums(artifacts))


def check_out(out: Path) -> None:
    """Refuse an `--out` that exists and is not a reprobuild output directory (never overwrite it)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        from reprobuild.errors import BadInput

        raise BadInput(f"--out {out}: exists and is not a reprobuild output directory; not overwriting it",
                       "choose another directory or remove it")


def publish(staging: Path, out: Path) -> None:
    """Move a complete staging directory to `out` (a sibling), replacing an older output dir there."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "out")
        os.replace(staging, out)
        remove_tree(old)
    else:
        os.replace(staging, out)


def read_manifest(path: Path) -> dict[str, Any]:
    from reprobuild.errors import BadInput

    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: not found (is this a reprobuild output directory?)") from None
    except ValueError as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from None
    return data
