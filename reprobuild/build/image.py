"""A Go target's container image, assembled from its verified binaries without any engine (and a command
pipeline's, from its artifacts: the same assembly, with no per-platform binary).

    bases (scratch, or the pinned .debs of a `kind: base` lock entry, unpacked by the toolchain cache)
    → one base layer per base → one app layer per platform (binary, listed files, /etc/passwd, /tmp)
    → config (fixed `created` = SOURCE_DATE_EPOCH, OCI labels) → manifest per platform
    → an image index when there are several platforms → `<target>.oci/` + `<target>_<os>_<arch>.docker.tar`

Layers are written by the one deterministic tar writer (formats/archives: sorted entries, mtime 0, uid/gid 0,
normalized modes), gzip'd with no name and mtime 0 (formats/oci.py): the same inputs give the same
image digest on every machine, whatever its paths, umask or time zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.config.image import BINARY_DIR, DEFAULT_PATH, SCRATCH, ArtifactImage, ImageSpec
from reprobuild.config.model import Lock
from reprobuild.errors import FileError, Location
from reprobuild.formats import oci
from reprobuild.formats.archives import TarEntry, normal_mode, tree_entries, write_tar
from reprobuild.fsutil import atomic_write_text
from reprobuild.kinds import BuildContext

LAYOUT_SUFFIX = ".oci"
DOCKER_SUFFIX = ".docker.tar"
BASE_KIND = "base"
PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
          "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
GROUP = "root:x:0:\nnonroot:x:65532:\n"


@dataclass(frozen=True)
class Base:
    """A base's unpacked tree for one platform (None: scratch) and what it was made from."""

    name: str
    tree: Path | None
    packages: tuple[str, ...] = ()  # name=version, for the config's history


@dataclass(frozen=True)
class ImageJob:
    """Everything one target's image is made from (the plan; `assemble` does the writing)."""

    name: str  # the target: names the layout and the archives
    spec: ImageSpec
    binaries: tuple[tuple[str, Path | None], ...]  # (linux/amd64, binary) in the target's platform order;
    # None: no binary at /usr/local/bin/<name> (a command pipeline's image: its artifacts are among `files`)
    files: tuple[tuple[str, Path], ...]  # (path in the image, file on disk)
    bases: tuple[tuple[str, Base], ...]  # platform -> base
    version: str
    source_date_epoch: int
    revision: str | None
    tag: str


def created(sde: int) -> str:
    return dt.datetime.fromtimestamp(sde, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels(job: ImageJob) -> dict[str, str]:
    result = dict(job.spec.labels)
    result["org.opencontainers.image.created"] = created(job.source_date_epoch)
    result["org.opencontainers.image.version"] = job.version
    if job.revision:
        result["org.opencontainers.image.revision"] = job.revision
    if job.spec.source:
        result["org.opencontainers.image.source"] = job.spec.source
    return dict(sorted(result.items()))


def image_config(job: ImageJob, platform: oci.Platform, diff_ids: list[str], history: list[str]) -> dict[str, Any]:
    spec = job.spec
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    entrypoint = list(spec.entrypoint or (f"{BINARY_DIR}/{job.name}",))
    config: dict[str, Any] = {"User": spec.user, "Env": [f"{k}={v}" for k, v in env.items()],
                              "Entrypoint": entrypoint, "WorkingDir": spec.workdir, "Labels": labels(job)}
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.ports:
        config["ExposedPorts"] = {p: {} for p in spec.ports}
    when = created(job.source_date_epoch)
    data: dict[str, Any] = {
        **platform.to_json(), "created": when, "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": when, "created_by": h} for h in history],
    }
    return data


def assemble(job: ImageJob, out: Path, cache: Path | None = None) -> oci.Layout:
    """Write `out/<name>.oci/` and one docker archive per platform; return the layout as read back.

    Layers are compressed at once (zlib releases the GIL), or taken from `cache` (compressed layers by
    digest): compression is most of the time spent here.
    """
    root = out / f"{job.name}{LAYOUT_SUFFIX}"
    if root.exists():
        shutil.rmtree(root)
    writer = oci.LayoutWriter(root)
    bases = dict(job.bases)
    trees = sorted({b.tree for b in bases.values() if b.tree is not None})  # a tree may serve several platforms
    with tempfile.TemporaryDirectory(prefix=f".{job.name}-image-", dir=out) as tmp:
        work = Path(tmp)

        def base_layer(i: int) -> oci.Layer:
            entries = itertools.chain(tree_entries(trees[i], ""), base_extras(trees[i]))
            return _layer(writer, entries, work / f"base{i}.tar", cache)

        def app_layer(i: int) -> oci.Layer:
            return _layer(writer, app_entries(job, job.binaries[i][1]), work / f"app{i}.tar", cache)

        with ThreadPoolExecutor(max(1, min(len(job.binaries) + len(trees), os.cpu_count() or 1))) as pool:
            base_jobs = [pool.submit(base_layer, i) for i in range(len(trees))]
            app_jobs = [pool.submit(app_layer, i) for i in range(len(job.binaries))]
            base_layers = dict(zip(trees, (j.result() for j in base_jobs), strict=True))
            app_layers = [j.result() for j in app_jobs]
    manifests: list[tuple[oci.Blob, oci.Platform]] = []
    for (plat, _), app in zip(job.binaries, app_layers, strict=True):
        base = bases[plat]
        layers = [base_layers[base.tree]] if base.tree is not None else []
        history = [f"reprobuild base {base.name}: " + " ".join(base.packages)] if base.tree is not None else []
        layers.append(app)
        history.append(f"reprobuild {job.name} {job.version} ({plat})")
        platform = oci.Platform.parse(plat)
        config = writer.add_json(oci.CONFIG, image_config(job, platform, [x.diff_id for x in layers], history))
        manifests.append((writer.add_json(oci.MANIFEST, oci.image_manifest(config, layers)), platform))
    top = manifests[0][0] if len(manifests) == 1 else writer.add_json(oci.INDEX, oci.image_index(manifests))
    ref = job.tag.rpartition(":")[2] if ":" in job.tag else "latest"
    writer.finish([top.descriptor(annotations={oci.REF_NAME: ref, oci.NAME: job.tag})])
    layout = oci.read_layout(root, check=False)
    for image in layout.images:
        arch = f"{image.platform.os}_{image.platform.architecture}"
        oci.write_docker_archive(layout, image, out / f"{job.name}_{arch}{DOCKER_SUFFIX}", job.tag)
    return layout


def _layer(writer: oci.LayoutWriter, entries: Any, tar: Path, cache: Path | None) -> oci.Layer:
    """Write a layer; its gzip'd blob comes from `cache` when the same tar was compressed before.

    Compression is most of an image's cost. The cache is keyed by the tar's digest, zlib's version and
    the level (what the gzip bytes depend on), and an entry is used only if it still hashes to the
    digest recorded beside it.
    """
    diff_id = "sha256:" + write_tar(entries, tar)
    key = None
    if cache is not None:
        key = cache / f"{diff_id.removeprefix('sha256:')}-zlib{zlib.ZLIB_RUNTIME_VERSION}-{oci.GZIP_LEVEL}"
    if key is not None and key.with_suffix(".json").is_file():
        try:
            recorded = str(json.loads(key.with_suffix(".json").read_text())["digest"])
            blob = writer.add_file(oci.LAYER, key.with_suffix(".gz"), recorded)
        except (OSError, ValueError, KeyError, TypeError):
            blob = None
        if blob is not None:
            tar.unlink()
            return oci.Layer(blob, diff_id)
    layer = writer.add_layer(tar)
    tar.unlink()
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(f".{key.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.copyfile(writer.path(layer.blob.digest), tmp)
        os.replace(tmp, key.with_suffix(".gz"))
        atomic_write_text(key.with_suffix(".json"), json.dumps({"digest": layer.blob.digest}))
    return layer


def base_extras(tree: Path) -> list[TarEntry]:
    """What the packages' maintainer scripts would have made, which unpacking alone does not.

    ca-certificates: `/etc/ssl/certs/ca-certificates.crt`, the bundle Go and OpenSSL read, made as
    update-ca-certificates makes it: every `.crt` under /usr/share/ca-certificates in sorted order.
    """
    certs = tree / "usr" / "share" / "ca-certificates"
    if not certs.is_dir():
        return []
    pems = sorted((p.relative_to(certs).as_posix(), p) for p in certs.rglob("*.crt") if p.is_file())
    chunks = [p.read_bytes() for _, p in pems]
    bundle = b"".join(c if c.endswith(b"\n") else c + b"\n" for c in chunks)
    return [TarEntry("etc/ssl/certs/ca-certificates.crt", "data", 0o644, data=bundle)]


def app_entries(job: ImageJob, binary: Path | None) -> list[TarEntry]:
    """The app layer: the binary, the listed files, /etc/passwd and /etc/group, a writable /tmp, the workdir.

    Modes are set here and owners, times and order by the tar writer: the host's umask does not count."""
    entries = [TarEntry(f"{BINARY_DIR.lstrip('/')}/{job.name}", "file", 0o755, source=binary)] if binary else []
    entries += [TarEntry("etc/passwd", "data", 0o644, data=PASSWD.encode()),
               TarEntry("etc/group", "data", 0o644, data=GROUP.encode()),
               TarEntry("tmp", "dir", 0o1777)]  # writable by the non-root user
    entries += [TarEntry(dest, "file", normal_mode(os.stat(src).st_mode), source=src) for dest, src in job.files]
    if job.spec.workdir != "/":
        entries.append(TarEntry(job.spec.workdir.strip("/"), "dir", 0o755))
    return entries


# --- from a pipeline (called by the Go and command builders) --------------------------------------

def plan_job(name: str, spec: ImageSpec, binaries: Sequence[tuple[str, Path | None]], source: Path,
             bases: dict[str, Base], version: str, sde: int, revision: str | None, where: Location) -> ImageJob:
    files = [(dest, _regular(source, rel, where, f"image `{name}`: file `{rel}`")) for dest, rel in spec.files]
    tag = spec.tag or f"{name}:{version}"
    return ImageJob(name, spec, tuple(binaries), tuple(files), tuple(sorted(bases.items())), version, sde,
                    revision, tag)


def plan_artifact_job(image: ArtifactImage, out: Path, source: Path, bases: dict[str, Base], version: str,
                      sde: int, revision: str | None, where: Location) -> ImageJob:
    """A command pipeline's image: its listed artifacts (regular files under `out`) and files, no binary."""
    job = plan_job(image.name, image.spec, [(image.platform, None)], source, bases, version, sde, revision, where)
    artifacts = tuple((dest, _regular(out, rel, where, f"container image `{image.name}`: artifact `{rel}`"))
                      for dest, rel in image.artifacts)
    return dataclasses.replace(job, files=artifacts + job.files)


def _regular(root: Path, rel: str, where: Location, what: str) -> Path:
    """root/rel when it is a regular file reached through no symbolic link (an image never takes a host file)."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            raise FileError(where, f"{what} is (or lies under) a symbolic link; images take regular files only")
    if not path.is_file():
        raise FileError(where, f"{what} is not a file in {root}")
    return path


def bases_for(spec: ImageSpec, platforms: tuple[str, ...], ctx: BuildContext, where: Location) -> dict[str, Base]:
    """Each platform's base: scratch, or the base entry's pinned .debs, verified and unpacked by the cache.

    A platform the entry has no pins of is served by pins made only of architecture-independent
    packages (`_all.deb`: ca-certificates, tzdata), which are the same files for every platform.
    """
    if spec.base == SCRATCH:
        return {p: Base(SCRATCH, None) for p in platforms}
    entry = ctx.overrides.get(spec.base, spec.base)
    tc = ctx.lock.toolchains.get(entry)
    if tc is None:
        raise FileError(where, f"image base `{entry}` is not an entry of {ctx.lock.path}",
                        "declare it in toolchains.yaml (`kind: base`, `source: deb`) and run `reprobuild lock`")
    if tc.kind != BASE_KIND:
        raise FileError(where, f"image base `{entry}` is a `{tc.kind}` entry of the lock, not a `{BASE_KIND}` entry",
                        "declare the base in toolchains.yaml with `kind: base` and `source: deb`")
    arch_free = [p for p in tc.platforms if all(f.name.endswith("_all.deb") for f in p.files)]
    result: dict[str, Base] = {}
    for plat in platforms:
        pin = tc.pin(plat.replace("/", "-")) or (arch_free[0] if arch_free else None)
        if pin is None:
            raise FileError(where, f"image base `{entry}` pins no packages for {plat}",
                            f"add {plat.replace('/', '-')} to its platforms in toolchains.yaml and run "
                            "`reprobuild lock`")
        inst = ctx.cache.ensure(tc, pin.platform)
        result[plat] = Base(entry, inst.root, tuple(f"{f.package}={f.version}" for f in pin.files))
        ctx.toolchains[spec.base] = {
            "entry": entry, "substituted": entry != spec.base, "version": tc.version, "source": tc.source,
            "platform": pin.platform, "files": [{"name": f.name, "sha256": f.sha256} for f in pin.files]}
    return result


@functools.lru_cache(maxsize=8)
def git_revision(repo_root: Path) -> str | None:
    from reprobuild.build.provenance import git_commit

    return git_commit(repo_root)


def key_inputs(spec: ImageSpec, lock: Lock, overrides: dict[str, str], repo_root: Path) -> dict[str, Any]:
    """What an image depends on beyond its target's definition, for the action cache's key."""
    entry = overrides.get(spec.base, spec.base)
    tc = lock.toolchains.get(entry) if spec.base != SCRATCH else None
    pins = {p.platform: [f.sha256 for f in p.files] for p in tc.platforms} if tc else None
    return {"base": entry, "pins": pins, "revision": git_revision(repo_root) if spec.revision else None}
