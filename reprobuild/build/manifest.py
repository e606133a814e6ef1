"""Proof of a build: `SHA256SUMS` (sorted, `sha256sum -c` compatible) and `manifest.json`.

Hashing uses every core when there are many files (hashlib releases the GIL on large buffers).
"""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reprobuild.fsutil import atomic_write_text, remove_tree, sha256_file

SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
RESERVED = {SUMS, MANIFEST, "provenance.json"}


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the output dir, POSIX separators
    sha256: str
    size: int
    mode: str  # octal, e.g. "0755"


def list_files(root: Path) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in RESERVED:
                files.append(rel)
    return sorted(files)


def hash_artifacts(root: Path, paths: list[str] | None = None) -> list[Artifact]:
    rels = sorted(paths if paths is not None else list_files(root))
    workers = min(os.cpu_count() or 1, 8) if len(rels) > 1 else 1

    def one(rel: str) -> Artifact:
        p = root / rel
        st = p.stat()
        return Artifact(rel, sha256_file(p), st.st_size, f"{st.st_mode & 0o7777:04o}")

    if workers == 1:
        return [one(r) for r in rels]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, rels))


def render_sums(artifacts: list[Artifact]) -> str:
    return "".join(f"{a.sha256}  {a.path}\n" for a in sorted(artifacts, key=lambda a: a.path))


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
    data["artifacts"] = [asdict(a) for a in sorted(artifacts, key=lambda a: a.path)]
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
