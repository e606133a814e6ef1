"""OCI image layouts, written byte for byte the same for the same inputs, and read back.

A layout is a directory: `oci-layout`, `index.json` and `blobs/sha256/<digest>` (image-spec v1.1).
Every JSON document is written with sorted keys and compact separators, so its digest depends only on
its content; layers are gzip streams with no name and mtime 0. One platform gives one image manifest;
several give an image index over one manifest per platform (what `docker buildx --platform a,b` pushes).

The same blobs also make a `docker load`-able archive (Docker's `manifest.json` naming the config and
the layers), so the engine's image ID is the config's digest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.errors import BadInput, CheckFailed
from reprobuild.formats.archives import LEVEL, HashingWriter, TarEntry, write_tar

LAYOUT_VERSION = "1.0.0"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
NAME = "io.containerd.image.name"  # the full name; containerd and Docker 25+ load a layout under it
GZIP_LEVEL = LEVEL  # zlib's default, as for the other archives: part of every layer digest
_CHUNK = 1 << 20


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob of a layout: its media type, digest (`sha256:...`) and size."""

    media_type: str
    digest: str
    size: int

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # sha256 of the uncompressed tar (what the config names)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, goos_goarch: str) -> Platform:
        """`linux/arm64` (Go's names, which OCI shares); arm64 gets its conventional variant v8."""
        os_, _, arch = goos_goarch.partition("/")
        return cls(os_, arch, "v8" if arch == "arm64" else None)

    def to_json(self) -> dict[str, str]:
        data = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            data["variant"] = self.variant
        return data

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


class LayoutWriter:
    """Blobs into `root/blobs/sha256/`, then `index.json` and `oci-layout` last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def add_bytes(self, media_type: str, data: bytes) -> Blob:
        blob = Blob(media_type, sha256_bytes(data), len(data))
        dest = self.path(blob.digest)
        if not dest.exists():
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        return blob

    def add_json(self, media_type: str, data: Any) -> Blob:
        return self.add_bytes(media_type, canonical_json(data))

    def add_layer(self, tar_path: Path) -> Layer:
        """gzip an uncompressed layer tar into a blob (no file name, mtime 0); hash both sides in one pass."""
        tmp = self.blobs / f".{tar_path.name}.gz.tmp"
        diff = hashlib.sha256()
        with open(tar_path, "rb") as src, open(tmp, "wb") as raw:
            out = HashingWriter(raw)
            with gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0, compresslevel=GZIP_LEVEL) as gz:
                while chunk := src.read(_CHUNK):
                    diff.update(chunk)
                    gz.write(chunk)
        blob = Blob(LAYER, "sha256:" + out.sha.hexdigest(), out.pos)
        os.replace(tmp, self.path(blob.digest))
        return Layer(blob, "sha256:" + diff.hexdigest())

    def add_file(self, media_type: str, src: Path, expect: str) -> Blob | None:
        """Copy a file in as a blob, hashing it on the way; None (and nothing added) unless its digest is `expect`."""
        tmp = self.blobs / f".{src.name}.tmp"
        with open(src, "rb") as fh, open(tmp, "wb") as raw:
            out = HashingWriter(raw)
            while chunk := fh.read(_CHUNK):
                out.write(chunk)
        blob = Blob(media_type, "sha256:" + out.sha.hexdigest(), out.pos)
        if blob.digest != expect:
            tmp.unlink()
            return None
        os.replace(tmp, self.path(blob.digest))
        return blob

    def finish(self, manifests: list[dict[str, Any]]) -> None:
        (self.root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
        (self.root / "index.json").write_bytes(canonical_json(
            {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}))


def image_manifest(config: Blob, layers: list[Layer], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config.descriptor(),
                            "layers": [layer.blob.descriptor() for layer in layers]}
    if annotations:
        data["annotations"] = dict(sorted(annotations.items()))
    return data


def image_index(manifests: list[tuple[Blob, Platform]], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX,
                            "manifests": [b.descriptor(platform=p.to_json()) for b, p in manifests]}
    if annotations:
        data["annotations"] = dict(sorted(annotations.items()))
    return data


# --- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """One platform's image in a layout: its manifest, config and layers, as read."""

    platform: Platform
    manifest: Blob
    config: Blob
    config_data: dict[str, Any]
    layers: tuple[Blob, ...]


@dataclass(frozen=True)
class Layout:
    root: Path
    top: Blob  # what index.json points to: the image digest users pull and verify
    ref: str | None  # the tag (org.opencontainers.image.ref.name)
    images: tuple[Image, ...]
    name: str | None = None  # the full name, e.g. hello:1.0.0 (io.containerd.image.name)

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def image_for(self, platform: str) -> Image | None:
        """The image of `linux/amd64`-style platform (variant ignored)."""
        for image in self.images:
            if f"{image.platform.os}/{image.platform.architecture}" == platform:
                return image
        return None

    def blobs(self) -> Iterator[Blob]:
        """Every blob the image needs, each once, children before the documents that name them."""
        seen: set[str] = set()
        for image in self.images:
            for blob in (*image.layers, image.config, image.manifest):
                if blob.digest not in seen:
                    seen.add(blob.digest)
                    yield blob
        if self.top.digest not in seen:
            yield self.top


def is_layout(path: Path) -> bool:
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


def read_layout(root: Path, check: bool = True) -> Layout:
    """Read a layout's one image (index.json must name exactly one); with `check`, every blob must hash to its name."""
    if not is_layout(root):
        raise BadInput(f"{root}: not an OCI image layout (no oci-layout and index.json)")
    index = _json(root / "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) != 1:
        raise BadInput(f"{root / 'index.json'}: expected exactly one image in `manifests`")
    top = _blob(entries[0], root / "index.json")
    annotations = entries[0].get("annotations") or {}
    ref, name = annotations.get(REF_NAME), annotations.get(NAME)
    images: list[Image] = []
    doc = _json(_checked(root, top, check))
    if top.media_type == INDEX:
        for entry in doc.get("manifests", []):
            platform = entry.get("platform") or {}
            blob = _blob(entry, root / "index.json")
            images.append(_image(root, blob, Platform(platform.get("os", "?"), platform.get("architecture", "?"),
                                                      platform.get("variant")), check))
    elif top.media_type == MANIFEST:
        images.append(_image(root, top, None, check))
    else:
        raise BadInput(f"{root / 'index.json'}: unsupported media type {top.media_type}")
    return Layout(root, top, ref, tuple(images), name)


def _image(root: Path, manifest: Blob, platform: Platform | None, check: bool) -> Image:
    doc = _json(_checked(root, manifest, check))
    config = _blob(doc["config"], root)
    config_data = _json(_checked(root, config, check))
    layers = tuple(_blob(d, root) for d in doc.get("layers", []))
    if check:
        for layer in layers:
            _checked(root, layer, check)
    if platform is None:
        platform = Platform(config_data.get("os", "?"), config_data.get("architecture", "?"),
                            config_data.get("variant"))
    return Image(platform, manifest, config, config_data, layers)


def _blob(descriptor: Any, where: Path) -> Blob:
    try:
        return Blob(str(descriptor["mediaType"]), str(descriptor["digest"]), int(descriptor["size"]))
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{where}: a descriptor without mediaType, digest and size: {descriptor!r:.200}") from None


def _checked(root: Path, blob: Blob, check: bool) -> Path:
    path = root / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
    if not path.is_file():
        raise CheckFailed(f"{root}: blob {blob.digest} is missing")
    if check:
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
        if "sha256:" + sha.hexdigest() != blob.digest or path.stat().st_size != blob.size:
            raise CheckFailed(f"{path}: content does not match its digest {blob.digest} (the layout was changed "
                              "after it was written)")
    return path


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


# --- docker-archive -----------------------------------------------------------------------------

def write_docker_archive(layout: Layout, image: Image, dest: Path, repo_tag: str | None) -> None:
    """A `docker load` archive of one platform's image, reusing the layout's blobs (gzip layers load as they are).

    Entries are sorted and carry mtime 0, so the archive is as reproducible as the layout.
    """
    manifest = [{"Config": f"blobs/sha256/{image.config.digest.removeprefix('sha256:')}",
                 "RepoTags": [repo_tag] if repo_tag else [],
                 "Layers": [f"blobs/sha256/{b.digest.removeprefix('sha256:')}" for b in image.layers]}]
    entries = [TarEntry("manifest.json", "data", 0o644, data=canonical_json(manifest))]
    for blob in (*image.layers, image.config):
        entries.append(TarEntry(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}", "file", 0o644,
                                source=layout.blob_path(blob.digest)))
    tmp = dest.with_name(dest.name + ".tmp")
    write_tar(entries, tmp)
    os.replace(tmp, dest)
