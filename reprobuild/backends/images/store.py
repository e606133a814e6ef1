"""Builder images made locally, byte for byte, from pinned inputs (no registry involved).

Each image is described by `builders/<name>/image.yaml` (spec.py). An image is written as a
docker-archive by hand: one layer tarball with sorted entries, mtime 0, uid/gid 0 and normalized
modes (reprobuild.formats.archives), and a config JSON whose `created` is 1970-01-01. The image ID is
the sha256 of the config bytes, so the same inputs give the same image ID on every machine and every run.

    go      FROM scratch + the verified toolchain tree at /rb/toolchain + an empty /tmp
    debian  `debootstrap --variant=minbase` + a package set (debian.py); the installed versions are
            pinned in toolchains.lock (`images:`), and a build whose versions differ from the lock is refused

Work is cached under the reprobuild cache root (`images/`): the expected image ID keyed by the
inputs (so reusing a present image costs one engine round trip, no hashing), and the debian
rootfs layer keyed by its lock entry (so debootstrap runs once per lock entry).

Talking to the engine goes through the small `Engine` protocol; the Docker backend implements
it, so this module never imports the Docker SDK.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from reprobuild.backends import CACHE, HOME, OUT, SRC, TMP, TOOLCHAIN
from reprobuild.backends.images import uses
from reprobuild.backends.images.debian import debootstrap, installed_versions, mirror_state, unmount_under
from reprobuild.backends.images.spec import (
    FORMAT,
    REPO_BUILDERS,
    ImageDrift,
    ImageLock,
    ImageSpec,
    inputs_digest,
    load_spec,
    parse_image_locks,
    spec_names,
    version_changes,
)
from reprobuild.config.model import Lock
from reprobuild.errors import BadInput, CheckFailed, EnvironmentFailure
from reprobuild.formats.archives import TarEntry, tree_entries, write_tar
from reprobuild.fsutil import atomic_write_text, remove_tree, temp_dir_in
from reprobuild.progress import activity, say

CREATED = "1970-01-01T00:00:00Z"
# Mount points every image carries, so a read-only root filesystem still has them.
# Part of every image (and of the cached debian rootfs layer): changing them needs a FORMAT bump.
MOUNT_POINTS = tuple(p.lstrip("/") for p in (SRC, OUT, TOOLCHAIN, CACHE, HOME, TMP))
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nbuilder:x:1000:1000:builder:/rb/home:/sbin/nologin\n"
GROUP = "root:x:0:\nbuilder:x:1000:\n"


# --- the engine, as far as images need it -------------------------------------------------------

class Engine(Protocol):
    def has_image(self, image_id: str) -> bool: ...

    def load_archive(self, path: Path) -> list[str]:
        """Load a docker-archive; the IDs of the images it held."""
        ...

    def tag(self, image_id: str, repository: str, tag: str) -> None: ...

    def images(self, repository: str) -> dict[str, str]:
        """The images tagged `repository:*`: ID -> the inputs key they were made from (their label)."""
        ...


def image_config(spec: ImageSpec, diff_ids: list[str], labels: dict[str, str]) -> bytes:
    """The image config: fixed creation time, sorted keys, compact separators."""
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    env = [f"{k}={v}" for k, v in sorted(spec.env.items())]
    config = {
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {"Env": env, "WorkingDir": SRC, "User": "1000:1000", "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": CREATED, "created_by": f"reprobuild images: {spec.name} (format {FORMAT})"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def write_archive(dest: Path, config: bytes, layers: list[tuple[str, Path]], reference: str) -> str:
    """A docker-archive (`docker save` layout) holding one image; returns the image ID (sha256 of the config)."""
    image_id = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [reference],
                 "Layers": [f"{diff}/layer.tar" for diff, _ in layers]}]
    entries = [TarEntry(f"{image_id}.json", "data", 0o644, data=config),
               TarEntry("manifest.json", "data", 0o644, data=json.dumps(manifest, sort_keys=True).encode())]
    for diff, path in layers:
        entries += [TarEntry(diff, "dir", 0o755), TarEntry(f"{diff}/layer.tar", "file", 0o644, source=path)]
    write_tar(entries, dest)
    return image_id


# --- building and reusing images -----------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    image_id: str
    reference: str  # repository:tag
    reused: bool


class ImageStore:
    """Makes builder images from pinned inputs and loads them into an engine; reuses what is there."""

    def __init__(self, engine: Engine, cache_root: Path, builders_dir: Path | None = None,
                 lock_path: Path | None = None) -> None:
        """`lock_path`: the lock whose builds use these images; each image used is recorded for it (see
        `uses`), so that `doctor --fix` run for another checkout's lock keeps it."""
        self.engine = engine
        self.cache_root = cache_root
        self.builders_dir = builders_dir or REPO_BUILDERS
        self.lock_path = lock_path

    @property
    def dir(self) -> Path:
        return self.cache_root / "images"

    # --- go ----------------------------------------------------------------------------------
    def go_key(self, spec: ImageSpec, toolchain_root: Path) -> str:
        return inputs_digest({"format": FORMAT, "spec": spec.digest(), "toolchain": toolchain_identity(toolchain_root)})

    def ensure_go(self, toolchain_root: Path, name: str = "go", spec: ImageSpec | None = None) -> Built:
        spec = spec or load_spec(self.builders_dir, name)
        if spec.base != "scratch":
            raise BadInput(f"builder image `{name}` is not a scratch image")
        key = self.go_key(spec, toolchain_root)
        return self._ensure(spec, key, lambda work: self._go_layer(spec, toolchain_root, work))

    def _go_layer(self, spec: ImageSpec, toolchain_root: Path, work: Path) -> tuple[str, Path]:
        layer = work / "layer.tar"
        entries: list[TarEntry] = [*_skeleton()]
        if spec.toolchain == "layered":
            entries.extend(tree_entries(toolchain_root, TOOLCHAIN.lstrip("/")))
        with activity(f"image {spec.name}: writing the layer ({toolchain_root})"):
            return write_tar(entries, layer), layer

    # --- debian ------------------------------------------------------------------------------
    def ensure_debian(self, lock: Lock, name: str = "debian", spec: ImageSpec | None = None) -> Built:
        spec = spec or load_spec(self.builders_dir, name)
        entry = self.locked_entry(spec, lock)
        key = self.debian_key(spec, entry)
        return self._ensure(spec, key, lambda work: self.rootfs_layer(spec, entry, lock.path))

    @staticmethod
    def debian_key(spec: ImageSpec, entry: ImageLock) -> str:
        return inputs_digest({"format": FORMAT, "spec": spec.digest(), "lock": entry.key()})

    @staticmethod
    def locked_entry(spec: ImageSpec, lock: Lock) -> ImageLock:
        entries = parse_image_locks(lock)
        entry = entries.get(spec.name)
        # The hint names the root holding builders/, so the lock it runs reads the same image.yaml (no loop).
        relock = f"run `reprobuild lock --lock {lock.path} --root {spec.path.parent.parent.parent}`"
        if entry is None:
            raise BadInput(f"{lock.path}: no `images: {spec.name}` entry pins the `{spec.name}` builder image", relock)
        if entry.inputs != spec.digest():
            raise CheckFailed(f"{lock.path}: the `{spec.name}` image entry is stale ({spec.path} changed)", relock)
        return entry

    def rootfs_cache(self, entry: ImageLock) -> tuple[Path, Path]:
        base = self.dir / "rootfs" / f"{entry.name}-{entry.key()[:32]}"
        return base.with_suffix(".tar"), base.with_suffix(".json")

    def rootfs_layer(self, spec: ImageSpec, entry: ImageLock, lock_path: str) -> tuple[str, Path]:
        """The rootfs layer for a lock entry: from the cache, or debootstrapped and checked against the lock."""
        tar, meta = self.rootfs_cache(entry)
        if tar.exists() and meta.exists():
            return json.loads(meta.read_text())["diff_id"], tar
        with self._lock(f"rootfs-{spec.name}"):
            if tar.exists() and meta.exists():
                return json.loads(meta.read_text())["diff_id"], tar
            versions, diff_id, made = self.make_rootfs(spec)
            changes = version_changes(entry.packages, versions)
            # Keep what was made under the entry it really is: refused now, it is reused as soon as
            # `reprobuild lock` pins these versions.
            actual = replace(entry, packages=versions)
            self._keep_rootfs(actual, made, diff_id)
            if changes:
                raise ImageDrift(spec.name, changes, lock_path, spec.path.parent.parent.parent)
        return diff_id, tar

    def _keep_rootfs(self, entry: ImageLock, made: Path, diff_id: str) -> None:
        tar, meta = self.rootfs_cache(entry)
        tar.parent.mkdir(parents=True, exist_ok=True)
        os.replace(made, tar)
        atomic_write_text(meta, json.dumps({"diff_id": diff_id, "packages": entry.packages}, sort_keys=True) + "\n")

    def make_rootfs(self, spec: ImageSpec) -> tuple[dict[str, str], str, Path]:
        """debootstrap a fresh rootfs and write its layer tarball (in the cache's tmp dir).

        Callers hold the `rootfs-<name>` lock, so any work in progress found in tmp/ belongs to a
        process that died: it is unmounted and removed first.
        """
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        for stale in sorted((self.dir / "tmp").glob(f"{spec.name}-rootfs.*")):
            if stale.is_dir():
                unmount_under(stale)
            remove_tree(stale)
        with temp_dir_in(self.dir / "tmp", f"{spec.name}-rootfs.") as work:
            root = work / "root"
            try:
                debootstrap(spec, root)
            finally:
                unmount_under(root)  # an interrupted debootstrap leaves /proc and /sys mounted in it
            versions = installed_versions(root)
            say(f"image {spec.name}: {len(versions)} packages installed")
            layer = self.dir / "tmp" / f"{work.name}.tar"
            try:
                with activity(f"image {spec.name}: writing the layer"):
                    diff_id = write_tar([*tree_entries(root, ""), *_skeleton(with_tmp=False)], layer)
            except BaseException:
                layer.unlink(missing_ok=True)
                raise
        return versions, diff_id, layer

    def lock_entry(self, spec: ImageSpec) -> ImageLock:
        """For `reprobuild lock`: debootstrap now, pin what got installed, keep the layer in the cache.

        When the mirror's signed index (`dists/<suite>/InRelease`) is byte-for-byte the one a previous
        resolution saw, the mirror serves the same versions: that resolution is reused, no debootstrap.
        """
        assert spec.suite is not None and spec.variant is not None
        state = mirror_state(spec)
        memo = self.dir / "resolved" / f"{spec.name}-{spec.digest()[:16]}-{state}.json" if state else None
        with self._lock(f"rootfs-{spec.name}"):
            if memo is not None and memo.exists():
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    data = json.loads(memo.read_text())
                    entry = ImageLock(spec.name, spec.digest(), spec.suite, spec.variant, spec.mirror,
                                      dict(data["packages"]))
                    tar, meta = self.rootfs_cache(entry)
                    if tar.exists() and meta.exists():
                        say(f"image {spec.name}: the mirror's index is unchanged since the last resolution; "
                            "reusing its pins and rootfs")
                        return entry
            versions, diff_id, made = self.make_rootfs(spec)
            entry = ImageLock(spec.name, spec.digest(), spec.suite, spec.variant, spec.mirror, versions)
            self._keep_rootfs(entry, made, diff_id)
            if memo is not None and mirror_state(spec) == state:  # unchanged while we worked
                atomic_write_text(memo, json.dumps({"packages": versions}, sort_keys=True) + "\n")
        return entry

    # --- shared ------------------------------------------------------------------------------
    def reference(self, spec: ImageSpec, key: str) -> tuple[str, str]:
        return f"reprobuild-{spec.name}", key[:16]

    def expected(self, spec: ImageSpec, key: str) -> str | None:
        """The image ID these inputs gave before (from the cache), without touching any file of the image."""
        record = self.dir / "ids" / f"{spec.name}-{key}.json"
        try:
            value = json.loads(record.read_text())["id"]
            return str(value)
        except (OSError, ValueError, KeyError):
            return None

    def state(self, spec: ImageSpec, key: str) -> str:
        """present | missing | stale (only images made from other inputs are present). Reads labels, hashes nothing."""
        repo, _ = self.reference(spec, key)
        made_from = self.engine.images(repo)
        if key in made_from.values():
            return "present"
        return "stale" if made_from else "missing"

    def _ensure(self, spec: ImageSpec, key: str, make_layer: Any) -> Built:
        repo, tag = self.reference(spec, key)
        if self.lock_path is not None:
            uses.record_use(self.cache_root, self.lock_path, spec.name, key)
        expected = self.expected(spec, key)
        if expected is not None and self.engine.has_image(expected):
            return Built(expected, f"{repo}:{tag}", reused=True)
        with self._lock(f"image-{spec.name}-{key}"), temp_dir_in(self.dir / "tmp", f"{spec.name}-image.") as work:
            expected = self.expected(spec, key)  # another process may have made it while we waited
            if expected is not None and self.engine.has_image(expected):
                return Built(expected, f"{repo}:{tag}", reused=True)
            diff_id, layer = make_layer(work)
            labels = {"org.reprobuild.image": spec.name, "org.reprobuild.inputs": key}
            config = image_config(spec, [diff_id], labels)
            image_id = hashlib.sha256(config).hexdigest()
            if not self.engine.has_image(image_id):
                archive = work / "image.tar"
                with activity(f"image {spec.name}: writing and loading the image"):
                    write_archive(archive, config, [(diff_id, layer)], f"{repo}:{tag}")
                    loaded = self.engine.load_archive(archive)
                if f"sha256:{image_id}" not in loaded and image_id not in loaded:
                    raise EnvironmentFailure(
                        f"image {spec.name}: the engine loaded {loaded}, expected sha256:{image_id}")
                say(f"image {spec.name}: loaded sha256:{image_id[:12]} as {repo}:{tag}")
            else:
                self.engine.tag(image_id, repo, tag)
            atomic_write_text(self.dir / "ids" / f"{spec.name}-{key}.json",
                              json.dumps({"id": image_id, "reference": f"{repo}:{tag}"}, sort_keys=True) + "\n")
        return Built(image_id, f"{repo}:{tag}", reused=False)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / "locks" / f"{name}.lock")):
            yield


def _skeleton(with_tmp: bool = True) -> list[TarEntry]:
    """What every image carries for the run contract: mount points, /tmp, a `builder` user (uid 1000)."""
    # The engine copies a mount point's mode into the tmpfs it mounts there: $TMPDIR must be 1777 like /tmp.
    entries = [TarEntry(p, "dir", 0o1777 if p == TMP.lstrip("/") else 0o755) for p in MOUNT_POINTS]
    if with_tmp:
        entries += [TarEntry("tmp", "dir", 0o1777), TarEntry("etc", "dir", 0o755),
                    TarEntry("etc/passwd", "data", 0o644, data=PASSWD.encode()),
                    TarEntry("etc/group", "data", 0o644, data=GROUP.encode())]
    return entries


def toolchain_identity(root: Path) -> str:
    """What a toolchain tree is, cheaply: the tree hash recorded by the toolchain cache when it installed it."""
    root = root.resolve()
    for parent in (root.parent, root.parent.parent, root.parent.parent.parent):
        record = parent / "entry.json"
        tree = parent / "tree"
        if record.is_file() and tree.is_dir() and root.is_relative_to(tree):
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(record.read_text())
                return f"{data['tree_sha256']}:{root.relative_to(tree).as_posix()}"
    # Not from the cache: hash the tree itself (slow, but only for hand-made toolchains).
    from reprobuild.toolchains.extract import tree_hash, tree_records

    return tree_hash(tree_records(root))


# --- `reprobuild lock` ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImagePlan:
    """Which pinned images `reprobuild lock` keeps, (re)resolves or drops (pure: no I/O beyond the specs)."""

    keep: tuple[str, ...]
    resolve: tuple[str, ...]
    drop: tuple[str, ...]
    specs: tuple[ImageSpec, ...]


def plan_images(builders_dir: Path | None, current: Lock | None) -> ImagePlan:
    """Images with a base that needs pins (debootstrap) get a lock entry; the others are pinned by their toolchain."""
    specs = [load_spec(builders_dir, n) for n in spec_names(builders_dir)] if builders_dir else []
    pinned = [s for s in specs if s.base == "debootstrap"]
    have = parse_image_locks(current) if current is not None else {}
    keep = tuple(s.name for s in pinned if s.name in have and have[s.name].inputs == s.digest())
    resolve = tuple(s.name for s in pinned if s.name not in keep)
    drop = tuple(n for n in have if n not in {s.name for s in pinned})
    return ImagePlan(keep, resolve, drop, tuple(pinned))


def lock_section(plan: ImagePlan, current: Lock | None, cache_root: Path, offline: bool) -> dict[str, Any]:
    """The `images:` section for the lock: kept entries as they are, the others resolved now (debootstrap)."""
    have = parse_image_locks(current) if current is not None else {}
    section: dict[str, Any] = {}
    for spec in plan.specs:
        if spec.name in plan.keep:
            section[spec.name] = have[spec.name].to_data()
            continue
        if offline:
            raise EnvironmentFailure(f"pinning the `{spec.name}` builder image runs debootstrap against the "
                                     "Debian mirror, which offline mode forbids")
        store = ImageStore(_NoEngine(), cache_root)
        section[spec.name] = store.lock_entry(spec).to_data()
    return section


class _NoEngine:
    """Locking writes the rootfs layer to the cache only; nothing is loaded into an engine."""

    def has_image(self, image_id: str) -> bool:
        return False

    def load_archive(self, path: Path) -> list[str]:
        raise EnvironmentFailure("internal error: no engine while locking")

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        raise EnvironmentFailure("internal error: no engine while locking")

    def images(self, repository: str) -> dict[str, str]:
        return {}
