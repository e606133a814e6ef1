"""A corpus of hostile inputs, made on the fly: output trees, shard dirs, archives and YAML.

Each maker takes a small declarative description, so a new hostile case is one line in a test's
table. Trees: `{"path": b"bytes" | "text" | Link("target") | Dir()}`. Shard dirs: the same tree,
plus a manifest written from it (or from `artifacts=` given verbatim, to lie about paths).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Link:
    """A symbolic link to `target` (relative or absolute, inside or out)."""

    target: str


@dataclass(frozen=True)
class Dir:
    """An empty directory."""


Tree = dict[str, "bytes | str | Link | Dir"]


def tree(root: Path, spec: Tree) -> Path:
    """Write `spec` under root (parents made; links created as given, never resolved)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Link):
            os.symlink(what.target, path)
        elif isinstance(what, Dir):
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(what.encode() if isinstance(what, str) else what)
    return root


def artifact_record(path: str, data: bytes | str | Link, mode: str = "0644") -> dict[str, Any]:
    if isinstance(data, Link):
        raw = os.fsencode(data.target)
        return {"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "mode": "0777",
                "link": data.target}
    raw = data.encode() if isinstance(data, str) else data
    return {"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "mode": mode}


def shard_dir(root: Path, files: Tree, artifacts: list[dict[str, Any]] | None = None,
              manifest: dict[str, Any] | None = None, sums: bool = True) -> Path:
    """An output dir as `reprobuild build` writes it; `artifacts` overrides what the manifest claims."""
    tree(root, files)
    if artifacts is None:
        artifacts = [artifact_record(p, d) for p, d in sorted(files.items()) if not isinstance(d, Dir)]
    data = {"backend": "local", "hermetic": False, "toolchains": {}, "images": {}, "pipelines": [],
            **(manifest or {}), "artifacts": artifacts}
    (root / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if sums:
        (root / "SHA256SUMS").write_text("".join(f"{a['sha256']}  {a['path']}\n"
                                                 for a in sorted(artifacts, key=lambda a: str(a["path"]))
                                                 if "link" not in a))
    return root


# --- archives ------------------------------------------------------------------------------------

def tar_member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, linkname: str = "",
               size: int | None = None, mode: int = 0o644, pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 0
    info.size = len(data) if size is None else size
    if pax:
        info.pax_headers = dict(pax)
    return info


def tar_archive(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.GNU_FORMAT,
                compression: str = "") -> bytes:
    buf = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:  # type: ignore[call-overload]
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def raw_header(name: bytes, size: int, kind: bytes) -> bytes:
    """One 512-byte ustar header block, checksum included (for headers tarfile will not write)."""
    block = bytearray(512)
    block[0:len(name[:100])] = name[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = f"{size:011o}\0".encode() if size < 8 ** 11 else b"\x80" + size.to_bytes(11, "big")
    block[136:148] = b"00000000000\0"
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[257:265] = b"ustar  \0"
    checksum = sum(block)
    block[148:156] = f"{checksum:06o}\0 ".encode()
    return bytes(block)


def huge_header_tar(kind: bytes, declared: int, data: bytes = b"x" * 1024) -> bytes:
    """A tar whose first header (GNU long name `L`, PAX `x`, or a file `0`) declares `declared` bytes
    of payload, followed by `data` only: the reader must refuse on the declared size, not read it."""
    return raw_header(b"././@LongLink" if kind == b"L" else b"member", declared, kind) + data


def zip_archive(members: list[tuple[str, bytes, int]]) -> bytes:
    """(name, data, unix mode incl. file type) each; `0o120777` makes a symlink whose target is data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()


def many_files_tar(n: int, prefix: str = "go/x") -> bytes:
    return tar_archive([(tar_member(f"{prefix}{i}"), b"") for i in range(n)], compression="gz")


# --- YAML ----------------------------------------------------------------------------------------

def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


RECURSIVE_ALIAS = "a: &a [*a]\n"
ALIASED_PIPELINE = ("version: 1\nname: &n x\nbuilder: command\nsource: .\nrun: *n\nartifacts: ['*']\n")


def sparse_file(path: Path, size: int, head: bytes = b"", poke: tuple[int, bytes] | None = None) -> Path:
    """A sparse file of `size` bytes (no disk used), starting with `head`, with `poke` bytes at an offset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
        fh.write(head)
        if poke is not None:
            fh.seek(poke[0])
            fh.write(poke[1])
    return path


def sparse_tar(path: Path, declared: int, tail: bytes) -> Path:
    """A GNU sparse tar (a few KB) whose one member expands to `declared` bytes ending in `tail`."""
    member = sparse_file(path.parent / f".{path.name}.member", declared - len(tail))
    with open(member, "ab") as fh:
        fh.write(tail)
    subprocess.run(["tar", "--sparse", "-cf", str(path), "-C", str(member.parent), member.name], check=True)
    member.unlink()
    return path


def sums_dir(root: Path) -> Path:
    """Write SHA256SUMS for every file directly under root (hashing sparse holes as zeros)."""
    lines = []
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.name != "SHA256SUMS"):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {f.name}\n")
    (root / "SHA256SUMS").write_text("".join(lines))
    return root


# --- OCI image layouts ---------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def oci_layout(root: Path, files: tuple[bytes, ...] = (b"hello\n",), *, repeat: int = 1, layer_size: int | None = None,
               config_size: int | None = None, nest: int = 0, cycle: bool = False, layer_link: str | None = None,
               layer_digest: str | None = None) -> Path:
    """An OCI layout at root (`root/index.json` is what compare is given) with one layer per item of `files`
    (a gzip'd tar holding it as `f`), the list taken `repeat` times; then the lies: every layer descriptor
    declares `layer_size` bytes, the config `config_size`; the manifest sits under `nest` image indexes, or under
    an index that names itself (`cycle`); the first layer's blob is a link to `layer_link`, or its descriptor
    names `layer_digest`. Blobs are written under the names the descriptors give (nothing is re-hashed)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes, name: str | None = None) -> str:
        digest = name or "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    layers: list[dict[str, Any]] = []
    for i, data in enumerate(files * repeat):
        blob = gzip.compress(tar_archive([(tar_member("f", data + str(i).encode()), data + str(i).encode())]),
                             mtime=0)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(blob),
                       "size": len(blob) if layer_size is None else layer_size})
    if layers and layer_link is not None:
        path = blobs / layers[0]["digest"].removeprefix("sha256:")
        path.unlink()
        os.symlink(layer_link, path)
    if layers and layer_digest is not None:
        layers[0]["digest"] = layer_digest
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
        "size": len(config) if config_size is None else config_size}}).encode()
    top = {"mediaType": OCI_MANIFEST, "digest": put(manifest), "size": len(manifest)}
    for _ in range(nest):
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [{**top, "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        top = {"mediaType": OCI_INDEX, "digest": put(index), "size": len(index)}
    if cycle:
        name = "sha256:" + "c" * 64
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_INDEX, "digest": name, "size": 1}, top]}).encode()
        top = {"mediaType": OCI_INDEX, "digest": put(index, name), "size": len(index)}
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]}))
    return root
