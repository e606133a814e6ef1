"""Builder roots as directories, for the sandbox backend: the same pinned content as the builder images.

    scratch      (`go`) a skeleton: the image's mount points, /tmp (1777), /etc/passwd and /etc/group with the
                 `builder` user, /etc/hosts; the toolchain is bound at /rb/toolchain at run time, as the
                 Docker backend mounts it over the image's copy
    debootstrap  (`debian`) the image's rootfs layer, the very tarball the Docker image is made of
                 (debootstrapped once per lock entry and refused when its versions differ from the lock),
                 unpacked once and checked again against the lock's package versions

Each root is made once under `<cache>/sandbox/roots/`, in a temporary directory renamed into place, so a
root that exists is complete; builds only read it (the sandbox binds it read-only). The modes are the
layer's (normalized: 0755/0644, sticky /tmp); as root the owners are the layer's too (0).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from reprobuild.backends import TMP, ImageRef
from reprobuild.backends.images.debian import installed_versions
from reprobuild.backends.images.spec import FORMAT, ImageDrift, ImageSpec, load_spec, version_changes
from reprobuild.backends.images.store import GROUP, MOUNT_POINTS, PASSWD, ImageStore, toolchain_identity
from reprobuild.config.model import Lock
from reprobuild.errors import BadInput, EnvironmentFailure
from reprobuild.fsutil import atomic_write_text, temp_dir_in
from reprobuild.progress import say

# The /etc/hosts of a network-less step (the Docker backend binds the same text).
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
ROOT_FORMAT = 1  # bump when the way roots are laid out changes


@dataclass(frozen=True)
class Root:
    path: Path  # the directory the sandbox binds read-only at /
    image_id: str  # what it is made of, for the manifest (the rootfs layer's diff_id, or the toolchain's hash)
    spec: ImageSpec


class RootStore:
    """Makes and keeps the roots of builder images; `lock` is asked for only when a debian root is needed."""

    def __init__(self, cache_root: Path, builders_dir: Path, lock: Callable[[], Lock]) -> None:
        self.cache_root = cache_root
        self.builders_dir = builders_dir
        self._lock = lock

    @property
    def dir(self) -> Path:
        return self.cache_root / "sandbox" / "roots"

    def hosts_file(self) -> Path:
        path = self.cache_root / "sandbox" / "hosts"
        if not path.is_file() or path.read_text() != HOSTS:
            atomic_write_text(path, HOSTS)
        return path

    def ensure(self, image: ImageRef) -> Root:
        """The root of `image`, from the description it carries (else builders_dir's)."""
        spec = image.spec if image.spec is not None else load_spec(self.builders_dir, image.name)
        if spec.base == "scratch":
            if image.toolchain_root is None:
                raise BadInput(f"builder image `{image.name}` is made from a toolchain, but the step names none")
            path = self._made(f"scratch-{_digest(spec.digest())[:24]}", _write_skeleton)
            return Root(path, f"scratch:{spec.digest()[:16]}+toolchain:{toolchain_identity(image.toolchain_root)}",
                        spec)
        return self._debian(spec)

    def _debian(self, spec: ImageSpec) -> Root:
        lock = self._lock()
        entry = ImageStore.locked_entry(spec, lock)
        store = ImageStore(_NoEngine(), self.cache_root, self.builders_dir)
        diff_id, layer = store.rootfs_layer(spec, entry, lock.path)  # refused when the versions differ

        def unpack(work: Path) -> None:
            say(f"sandbox: unpacking the `{spec.name}` rootfs (once per lock entry)")
            with tarfile.open(layer) as tf:
                _extract(tf, work)
            changes = version_changes(entry.packages, installed_versions(work))
            if changes:
                raise ImageDrift(spec.name, changes, lock.path)

        path = self._made(f"{spec.name}-{diff_id[:32]}", unpack)
        return Root(path, f"rootfs:sha256:{diff_id}", spec)

    def _made(self, name: str, make: Callable[[Path], None]) -> Path:
        """The root `name`, made by `make` into a temporary directory the first time (one process at a time)."""
        final = self.dir / f"{name}-v{ROOT_FORMAT}"
        if final.is_dir():
            return final
        with self._locked(name):
            if final.is_dir():
                return final
            with temp_dir_in(self.dir / "tmp", f"{name}.") as work:
                tree = work / "root"
                tree.mkdir()
                make(tree)
                os.chmod(tree, 0o755)
                os.replace(tree, final)
        return final

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / "locks" / f"{name}.lock")):
            yield


def _write_skeleton(root: Path) -> None:
    """What the scratch image carries besides the toolchain (its layer's skeleton), plus the mount points of
    /proc and /dev that the engine adds to every container."""
    for rel in (*MOUNT_POINTS, "tmp", "etc", "proc", "dev"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in ("rb", *MOUNT_POINTS, "etc", "proc", "dev"):
        os.chmod(root / rel, 0o755)
    for rel in ("tmp", TMP.lstrip("/")):
        os.chmod(root / rel, 0o1777)
    for rel, text in (("etc/passwd", PASSWD), ("etc/group", GROUP), ("etc/hosts", HOSTS)):
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o644)


def _extract(tf: tarfile.TarFile, dest: Path) -> None:
    """Unpack a layer written by reprobuild itself (absolute symlinks, hard links and sticky /tmp kept as they are)."""
    try:
        tf.extractall(dest, numeric_owner=True, filter="fully_trusted")
    except TypeError:  # a Python without extraction filters
        tf.extractall(dest, numeric_owner=True)


def _digest(text: str) -> str:
    return hashlib.sha256(json.dumps({"format": ROOT_FORMAT, "image": text, "layout": FORMAT,
                                      "hosts": HOSTS}).encode()).hexdigest()


class _NoEngine:
    """The sandbox reads the rootfs layer from the image cache only; nothing is loaded into an engine."""

    def has_image(self, image_id: str) -> bool:
        return False

    def load_archive(self, path: Path) -> list[str]:
        raise EnvironmentFailure("internal error: the sandbox loads no image into an engine")

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        raise EnvironmentFailure("internal error: the sandbox loads no image into an engine")

    def images(self, repository: str) -> dict[str, str]:
        return {}
