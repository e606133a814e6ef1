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
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


MAX_DOCUMENT = 4 << 20
"""Bytes of one JSON document (index, manifest, config) a reader takes: ours are a few KB."""
MAX_IMAGES = 256
"""Image manifests one layout may name, over all its indexes."""
MAX_INDEX_DEPTH = 4
"""Image indexes inside image indexes (index.json's own level not counted)."""
MAX_LAYERS = 1000
"""Layers of one image (Docker's storage drivers stop at 128)."""
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_layout(path: Path) -> bool:
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


def read_layout(root: Path, check: bool = True) -> Layout:
    """Read a layout's one image (index.json must name exactly one); with `check`, every blob must hash to its name.

    Hostile layouts end in a BadInput, quickly: no path is followed through a symbolic link (or out of the
    layout through a digest), JSON documents are capped at MAX_DOCUMENT bytes (declared and actual), an index
    may nest MAX_INDEX_DEPTH deep and never in a cycle, and a layout names at most MAX_IMAGES images of at most
    MAX_LAYERS layers each.
    """
    if not is_layout(root):
        raise BadInput(f"{root}: not an OCI image layout (no oci-layout and index.json)")
    for part in ("oci-layout", "index.json", "blobs", "blobs/sha256"):
        if (root / part).is_symlink():
            raise BadInput(f"{root / part}: a symbolic link; a layout's files are read only as regular files")
    index = _json(root / "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or len(entries) != 1:
        raise BadInput(f"{root / 'index.json'}: expected exactly one image in `manifests`")
    top = _blob(entries[0], root / "index.json")
    annotations = entries[0].get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadInput(f"{root / 'index.json'}: annotations must be an object")
    ref, name = annotations.get(REF_NAME), annotations.get(NAME)
    images: list[Image] = []
    if top.media_type == INDEX:
        _walk_index(root, top, check, images, (top.digest,))
    elif top.media_type == MANIFEST:
        images.append(_image(root, top, None, check))
    else:
        raise BadInput(f"{root / 'index.json'}: unsupported media type {top.media_type}")
    return Layout(root, top, ref, tuple(images), name)


def _walk_index(root: Path, index: Blob, check: bool, images: list[Image], path: tuple[str, ...]) -> None:
    """The images of `index`, depth first; `path` is the chain of indexes that led here (for cycles and depth)."""
    doc = _json(_checked(root, index, check, document=True))
    entries = doc.get("manifests", [])
    if not isinstance(entries, list):
        raise BadInput(f"{root}: image index {index.digest}: `manifests` must be a list")
    for entry in entries:
        blob = _blob(entry, root)
        if blob.media_type == INDEX:
            if blob.digest in path:
                raise BadInput(f"{root}: image index {blob.digest} names itself through its own manifests "
                               "(a cycle); not read")
            if len(path) > MAX_INDEX_DEPTH:
                raise BadInput(f"{root}: image indexes nested more than {MAX_INDEX_DEPTH} deep; not read")
            _walk_index(root, blob, check, images, (*path, blob.digest))
            continue
        if blob.media_type != MANIFEST:
            raise BadInput(f"{root}: image index {index.digest} names a {blob.media_type!r}, not an image manifest")
        if len(images) >= MAX_IMAGES:
            raise BadInput(f"{root}: more than {MAX_IMAGES} images in one layout; not read")
        platform = entry.get("platform") or {}
        if not isinstance(platform, dict):
            raise BadInput(f"{root}: image index {index.digest}: platform must be an object")
        images.append(_image(root, blob, Platform(str(platform.get("os", "?")), str(platform.get("architecture", "?")),
                                                  platform.get("variant")), check))


def _image(root: Path, manifest: Blob, platform: Platform | None, check: bool) -> Image:
    doc = _json(_checked(root, manifest, check, document=True))
    if doc.get("mediaType", MANIFEST) != MANIFEST or not isinstance(doc.get("config"), dict):
        raise BadInput(f"{root}: blob {manifest.digest} is not an image manifest (no `config`), though its "
                       "descriptor says so")
    config = _blob(doc["config"], root)
    config_data = _json(_checked(root, config, check, document=True))
    descriptors = doc.get("layers", [])
    if not isinstance(descriptors, list):
        raise BadInput(f"{root}: manifest {manifest.digest}: `layers` must be a list")
    if len(descriptors) > MAX_LAYERS:
        raise BadInput(f"{root}: manifest {manifest.digest} names {len(descriptors)} layers, more than "
                       f"{MAX_LAYERS}; not read")
    layers = tuple(_blob(d, root) for d in descriptors)
    for layer in layers:
        _checked(root, layer, check)
    if platform is None:
        platform = Platform(str(config_data.get("os", "?")), str(config_data.get("architecture", "?")),
                            config_data.get("variant"))
    return Image(platform, manifest, config, config_data, layers)


def _blob(descriptor: Any, where: Path) -> Blob:
    try:
        blob = Blob(str(descriptor["mediaType"]), str(descriptor["digest"]), int(descriptor["size"]))
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{where}: a descriptor without mediaType, digest and size: {descriptor!r:.200}") from None
    if not _DIGEST_RE.match(blob.digest):
        raise BadInput(f"{where}: digest {blob.digest!r:.100} is not sha256:<64 hex digits>")
    if blob.size < 0:
        raise BadInput(f"{where}: blob {blob.digest} declares a negative size")
    return blob


def _checked(root: Path, blob: Blob, check: bool, document: bool = False) -> Path:
    """The blob's file: a regular file (never through a link) of the declared size; with `check`, of its digest."""
    path = root / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
    try:
        st = path.lstat()
    except OSError:
        raise CheckFailed(f"{root}: blob {blob.digest} is missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise BadInput(f"{path}: a symbolic link; a layout's blobs are read only as regular files")
    if not stat.S_ISREG(st.st_mode):
        raise CheckFailed(f"{root}: blob {blob.digest} is missing (not a regular file)")
    if document and (blob.size > MAX_DOCUMENT or st.st_size > MAX_DOCUMENT):
        raise BadInput(f"{path}: a JSON document of {max(blob.size, st.st_size)} bytes (declared "
                       f"{blob.size}); more than {MAX_DOCUMENT >> 20} MiB is not read")
    if check:
        if st.st_size != blob.size:
            raise CheckFailed(f"{path}: {st.st_size} bytes, but its descriptor declares {blob.size} (the layout was "
                              "changed after it was written)")
        sha = hashlib.sha256()
        with _open_regular(path) as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
        if "sha256:" + sha.hexdigest() != blob.digest:
            raise CheckFailed(f"{path}: content does not match its digest {blob.digest} (the layout was changed "
                              "after it was written)")
    return path


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading without following a final symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read as a regular file ({exc.strerror})") from None
    return os.fdopen(fd, "rb")


def _json(path: Path) -> dict[str, Any]:
    try:
        with _open_regular(path) as fh:
            raw = fh.read(MAX_DOCUMENT + 1)
        if len(raw) > MAX_DOCUMENT:
            raise BadInput(f"{path}: a JSON document of more than {MAX_DOCUMENT >> 20} MiB is not read")
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise BadInput(f"{path}: not readable JSON: {str(exc)[:200]}") from None
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
