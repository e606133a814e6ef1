"""Builder images made locally, byte for byte, from pinned inputs (no registry involved).

Each image is described by `builders/<name>/image.yaml` (base, packages, env). An image is written
as a docker-archive by hand: one layer tarball with sorted entries, mtime 0, uid/gid 0 and
normalized modes, and a config JSON whose `created` is 1970-01-01. The image ID is the sha256 of the
config bytes, so the same inputs give the same image ID on every machine and every run.

    go      FROM scratch + the verified toolchain tree at /rb/toolchain + an empty /tmp
    debian  `debootstrap --variant=minbase` + a package set; the installed versions are pinned in
            toolchains.lock (`images:`), and a build whose versions differ from the lock is refused

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
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from filelock import FileLock

from reprobuild import proc
from reprobuild.backends import CACHE, HOME, OUT, SRC, TMP, TOOLCHAIN
from reprobuild.config.model import Lock
from reprobuild.config.yamlload import Fields, load_one
from reprobuild.errors import BadInput, CheckFailed, EnvironmentFailure
from reprobuild.fsutil import atomic_write_text, remove_tree, temp_dir_in
from reprobuild.progress import say

# Bump when the way images are written changes: it changes every image ID on purpose.
FORMAT = 3  # 3: /rb/tmp (mode 1777) joined the mount points
CREATED = "1970-01-01T00:00:00Z"
SPEC_VERSION = 1
BASES = ("scratch", "debootstrap")
LOCALE_RE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?\.UTF-8$")
BUILTIN_LOCALES = ("C", "C.UTF-8", "POSIX")
# Files that record "today" while debootstrap runs (pwconv's password-change dates) get this
# date instead: bookworm's release day. Only used inside the image, never for output bytes.
DEBIAN_EPOCH = 1686355200
REPO_BUILDERS = Path(__file__).resolve().parents[3] / "builders"
# Mount points every image carries, so a read-only root filesystem still has them.
# Part of every image (and of the cached debian rootfs layer): changing them needs a FORMAT bump.
MOUNT_POINTS = tuple(p.lstrip("/") for p in (SRC, OUT, TOOLCHAIN, CACHE, HOME, TMP))
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nbuilder:x:1000:1000:builder:/rb/home:/sbin/nologin\n"
GROUP = "root:x:0:\nbuilder:x:1000:\n"


# --- what an image is made of (builders/<name>/image.yaml) ---------------------------------------

@dataclass(frozen=True)
class ImageSpec:
    name: str
    base: str  # scratch | debootstrap
    toolchain: str  # layered (in the image at /rb/toolchain) | mounted (read-only at run time)
    env: dict[str, str]
    path: Path
    suite: str | None = None
    variant: str | None = None
    packages: tuple[str, ...] = ()
    mirror: str = "apt"  # `apt`: the mirror apt is configured with, read at run time; or a URL
    locales: tuple[str, ...] = ()  # compiled into the image besides the built-in C.UTF-8

    def digest(self) -> str:
        """The inputs of the image, for the lock (`lock --check`) and the caches."""
        data = {"name": self.name, "base": self.base, "toolchain": self.toolchain, "env": self.env,
                "suite": self.suite, "variant": self.variant, "packages": sorted(self.packages),
                "mirror": self.mirror, "locales": sorted(self.locales), "format": FORMAT}
        return _sha256_json(data)


def default_builders_dir(lock_path: Path | None = None) -> Path:
    """`builders/` next to the lock, else the one in the repository reprobuild runs from."""
    if lock_path is not None:
        candidate = lock_path.resolve().parent / "builders"
        if candidate.is_dir():
            return candidate
    return REPO_BUILDERS


def spec_names(builders_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in builders_dir.glob("*/image.yaml"))


def load_spec(builders_dir: Path, name: str) -> ImageSpec:
    path = builders_dir / name / "image.yaml"
    if not path.exists():
        known = ", ".join(spec_names(builders_dir)) or "none"
        raise BadInput(f"no builder image `{name}` ({path} does not exist; images: {known})")
    root = load_one(path)
    what = f"builder image `{name}`"
    f = Fields(root, what, {"version", "base", "toolchain", "env", "suite", "variant", "packages", "mirror",
                            "locales"})
    if f.required("version").integer(f"{what}: version") != SPEC_VERSION:
        raise f.required("version").error(f"{what}: unsupported version; this reprobuild reads {SPEC_VERSION}")
    base_node = f.required("base")
    base = base_node.string(f"{what}: base")
    if base not in BASES:
        raise base_node.error(f"{what}: unknown base `{base}`", f"one of: {', '.join(BASES)}")
    tc_node = f.optional("toolchain")
    toolchain = tc_node.string(f"{what}: toolchain") if tc_node else "mounted"
    if toolchain not in ("layered", "mounted"):
        raise tc_node.error(f"{what}: toolchain must be `layered` or `mounted`")  # type: ignore[union-attr]
    env: dict[str, str] = {}
    env_node = f.optional("env")
    if env_node is not None:
        for key, value in env_node.mapping(f"{what}: env").items():
            env[key] = value.string(f"{what}: env {key}")
    if base == "scratch":
        for key in ("suite", "variant", "packages", "mirror", "locales"):
            if f.optional(key) is not None:
                raise f.required(key).error(f"{what}: `{key}` only applies to base `debootstrap`")
        return ImageSpec(name, base, toolchain, env, path)
    suite = f.required("suite").string(f"{what}: suite")
    variant_node = f.optional("variant")
    variant = variant_node.string(f"{what}: variant") if variant_node else "minbase"
    packages_node = f.required("packages")
    packages = tuple(packages_node.strings(f"{what}: packages"))
    for pkg, pnode in zip(packages, packages_node.sequence("packages"), strict=True):
        if not re.match(r"^[a-z0-9][a-z0-9+.-]+$", pkg):
            raise pnode.error(f"{what}: `{pkg}` is not a Debian package name",
                              "list names only; the versions are pinned by `reprobuild lock`")
    mirror_node = f.optional("mirror")
    mirror = mirror_node.string(f"{what}: mirror") if mirror_node else "apt"
    if mirror != "apt" and not re.match(r"^(https?|file)://", mirror):
        raise mirror_node.error(f"{what}: mirror must be `apt` or an http(s)/file URL",  # type: ignore[union-attr]
                                "e.g. a dated snapshot archive, so the pins never rot")
    locales: tuple[str, ...] = ()
    locales_node = f.optional("locales")
    if locales_node is not None:
        locales = tuple(locales_node.strings(f"{what}: locales"))
        for loc, lnode in zip(locales, locales_node.sequence("locales"), strict=True):
            if not LOCALE_RE.match(loc):
                raise lnode.error(f"{what}: `{loc}` is not a UTF-8 locale name", "e.g. fr_CH.UTF-8")
        if locales and "locales" not in packages:
            raise locales_node.error(f"{what}: compiling locales needs the `locales` package in `packages`")
    return ImageSpec(name, base, toolchain, env, path, suite, variant, packages, mirror, locales)


# --- the lock's `images:` section ----------------------------------------------------------------

@dataclass(frozen=True)
class ImageLock:
    """What `reprobuild lock` pinned for a debootstrap image: its inputs and every installed version."""

    name: str
    inputs: str
    suite: str
    variant: str
    mirror: str
    packages: dict[str, str] = field(default_factory=dict)  # name -> exact version

    def to_data(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "suite": self.suite, "variant": self.variant, "mirror": self.mirror,
                "packages": dict(sorted(self.packages.items()))}

    def key(self) -> str:
        return _sha256_json({"format": FORMAT, **self.to_data()})


def parse_image_locks(lock: Lock) -> dict[str, ImageLock]:
    """Validate the lock's `images:` section (kept verbatim by lockfile.py)."""
    raw = lock.sections.get("images")
    if raw is None:
        return {}
    where = f"{lock.path}: images"
    if not isinstance(raw, dict):
        raise BadInput(f"{where} must be a mapping", "regenerate it with `reprobuild lock`")
    result: dict[str, ImageLock] = {}
    allowed = {"inputs", "suite", "variant", "mirror", "packages"}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise BadInput(f"{where}.{name} must be a mapping", "regenerate it with `reprobuild lock`")
        unknown = set(entry) - allowed
        missing = allowed - set(entry)
        if unknown or missing:
            problems = [f"unknown keys {sorted(unknown)}"] * bool(unknown) + [
                f"missing keys {sorted(missing)}"] * bool(missing)
            raise BadInput(f"{where}.{name}: " + "; ".join(problems), "regenerate it with `reprobuild lock`")
        packages = entry["packages"]
        if not isinstance(packages, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in packages.items()):
            raise BadInput(f"{where}.{name}.packages must map package names to version strings",
                           "quote versions such as `4:12.2.0-3`; or regenerate with `reprobuild lock`")
        for key in ("inputs", "suite", "variant", "mirror"):
            if not isinstance(entry[key], str):
                raise BadInput(f"{where}.{name}.{key} must be a string")
        result[name] = ImageLock(name, entry["inputs"], entry["suite"], entry["variant"], entry["mirror"],
                                 dict(packages))
    return result


class ImageDrift(CheckFailed):
    """The mirror now installs other versions than the lock pins (exit 1)."""

    def __init__(self, name: str, changes: list[str], lock_path: str) -> None:
        shown = "; ".join(changes[:20]) + (f"; and {len(changes) - 20} more" if len(changes) > 20 else "")
        super().__init__(
            f"builder image `{name}`: the installed packages differ from {lock_path}: {shown}",
            f"run `reprobuild lock --lock {lock_path}` to pin what the mirror serves now, or set a dated "
            f"snapshot mirror (`mirror:`) in builders/{name}/image.yaml so the pins never rot")
        self.changes = changes


def version_changes(locked: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Human lines naming every package whose version differs, sorted by package."""
    changes = []
    for pkg in sorted(set(locked) | set(actual)):
        want, have = locked.get(pkg), actual.get(pkg)
        if want == have:
            continue
        if want is None:
            changes.append(f"{pkg} {have} is installed but not in the lock")
        elif have is None:
            changes.append(f"{pkg} (locked {want}) is no longer installed")
        else:
            changes.append(f"{pkg} {have} (locked {want})")
    return changes


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


# --- deterministic tarballs ----------------------------------------------------------------------

class _HashingFile:
    """A write-only file that hashes what goes through it (so a layer is hashed while written)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.pos += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.fh.flush()


@dataclass(frozen=True)
class _Entry:
    name: str  # relative, no leading slash
    kind: str  # dir | file | symlink | data
    mode: int
    source: Path | None = None
    data: bytes = b""
    link: str = ""
    inode: tuple[int, int] | None = None


def _normal_mode(st_mode: int, is_dir: bool) -> int:
    """0755/0644 by the executable bit; sticky directories (/tmp, /var/tmp) stay 1777, set-id bits stay."""
    if is_dir:
        return 0o1777 if st_mode & 0o1000 else 0o755
    return (0o755 if st_mode & 0o111 else 0o644) | (st_mode & 0o6000)


def tree_entries(root: Path, prefix: str) -> Iterator[_Entry]:
    """Every entry under `root`, named under `prefix`; device files and sockets are left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            arc = f"{prefix}/{rel}" if prefix else rel
            st = path.lstat()
            if path.is_symlink():
                yield _Entry(arc, "symlink", 0o777, link=os.readlink(path))
            elif path.is_dir():
                yield _Entry(arc, "dir", _normal_mode(st.st_mode, True))
            elif path.is_file():
                inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
                yield _Entry(arc, "file", _normal_mode(st.st_mode, False), source=path, inode=inode)


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def write_layer(entries: Iterable[_Entry], dest: Path) -> str:
    """Write a layer tarball deterministically; return its sha256 (the layer's diff_id)."""
    by_name: dict[str, _Entry] = {}
    for entry in entries:
        for parent in _parents(entry.name):
            by_name.setdefault(parent, _Entry(parent, "dir", 0o755))
        by_name[entry.name] = entry
    first_of_inode: dict[tuple[int, int], str] = {}
    with open(dest, "wb") as raw:
        out = _HashingFile(raw)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            for name in sorted(by_name):
                e = by_name[name]
                info = tarfile.TarInfo(name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = e.mode
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.link
                    tf.addfile(info)
                elif e.kind == "data":
                    info.size = len(e.data)
                    tf.addfile(info, _BytesReader(e.data))
                elif e.inode is not None and e.inode in first_of_inode:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first_of_inode[e.inode]
                    tf.addfile(info)
                else:
                    assert e.source is not None
                    if e.inode is not None:
                        first_of_inode[e.inode] = name
                    with open(e.source, "rb") as fh:
                        info.size = os.fstat(fh.fileno()).st_size
                        tf.addfile(info, fh)
        out.flush()
    return out.sha.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk


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
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, data: bytes | None = None, path: Path | None = None, is_dir: bool = False) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = 0o755 if is_dir else 0o644
            if is_dir:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif path is not None:
                with open(path, "rb") as fh:
                    info.size = os.fstat(fh.fileno()).st_size
                    tf.addfile(info, fh)
            else:
                assert data is not None
                info.size = len(data)
                tf.addfile(info, _BytesReader(data))

        for diff, path in layers:
            add(diff, is_dir=True)
            add(f"{diff}/layer.tar", path=path)
        add(f"{image_id}.json", data=config)
        add("manifest.json", data=json.dumps(manifest, sort_keys=True).encode())
    return image_id


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- the Debian mirror, from apt's own configuration ---------------------------------------------

def apt_mirror(suite: str, etc_apt: Path = Path("/etc/apt")) -> str:
    """The URI of the first enabled `deb` source serving `suite` with `main`, as apt is configured here."""
    for uri, suites, components in _apt_sources(etc_apt):
        if suite in suites and "main" in components:
            return uri
    raise EnvironmentFailure(
        f"apt has no source for Debian `{suite}` main in {etc_apt}/sources.list*",
        "add one, or set `mirror:` in builders/<image>/image.yaml (e.g. a dated snapshot archive)")


def _apt_sources(etc_apt: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", raw.split("#", 1)[0]).split()
            if len(line) >= 4 and line[0] == "deb":
                yield line[1].rstrip("/"), [line[2]], line[3:]
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw:
                    continue
                key, _, value = raw.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri.rstrip("/"), fields.get("suites", "").split(), fields.get("components", "").split()


def mirror_url(spec: ImageSpec) -> str:
    assert spec.suite is not None
    return apt_mirror(spec.suite) if spec.mirror == "apt" else spec.mirror


def mirror_state(spec: ImageSpec) -> str | None:
    """sha256 of the mirror's signed suite index (`dists/<suite>/InRelease`); None when it cannot be read.

    The same index means the same Packages files, so the same versions get installed.
    """
    import requests

    try:
        url = f"{mirror_url(spec).rstrip('/')}/dists/{spec.suite}/InRelease"
        if url.startswith("file://"):
            data = Path(url.removeprefix("file://")).read_bytes()
        else:
            with requests.get(url, timeout=(10, 30)) as resp:
                resp.raise_for_status()
                data = resp.content
    except (OSError, requests.RequestException, EnvironmentFailure):
        return None
    return hashlib.sha256(data).hexdigest()


# --- the debian rootfs ---------------------------------------------------------------------------

def debootstrap(spec: ImageSpec, target: Path) -> None:
    """`debootstrap --variant=minbase --include=...` into `target` (needs root), then clean it."""
    assert spec.suite is not None and spec.variant is not None
    proc.which("debootstrap", "debootstrap")
    if os.geteuid() != 0:
        raise EnvironmentFailure("making the `debian` builder image runs debootstrap, which needs root",
                                 "run `reprobuild lock`/the build as root once; the image is reused afterwards")
    mirror = mirror_url(spec)
    say(f"image {spec.name}: debootstrap {spec.suite} ({spec.variant}, {len(spec.packages)} packages); "
        "about a minute")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "http_proxy", "https_proxy", "no_proxy",
                                                         "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")}
    env.update({"LC_ALL": "C", "SOURCE_DATE_EPOCH": str(DEBIAN_EPOCH), "DEBIAN_FRONTEND": "noninteractive"})
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    argv = ["debootstrap", f"--variant={spec.variant}", "--components=main",
            f"--include={','.join(spec.packages)}", spec.suite, str(target), mirror]
    tail: list[str] = []

    def keep(line: str) -> None:
        tail.append(line)
        del tail[:-40]

    done = proc.run(argv, env=env, check=False, umask=0o022, on_line=keep)
    if done.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else "\n".join(tail)
        raise EnvironmentFailure(f"debootstrap failed (exit {done.returncode}) for image `{spec.name}`:\n{detail}",
                                 "check the mirror (apt's sources or `mirror:` in builders/"
                                 f"{spec.name}/image.yaml) and the network")
    for loc in spec.locales:
        lang = loc.split(".", 1)[0]
        # --no-archive: one directory per locale, the same bytes every time (an archive is a hash table).
        proc.run(["chroot", str(target), "localedef", "--no-archive", "-c", "-i", lang, "-f", "UTF-8", loc],
                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}, umask=0o022)
    clean_rootfs(target)


def clean_rootfs(root: Path) -> None:
    """Remove or fix the files that differ between two debootstrap runs (or name the host)."""
    for rel in ("dev", "var/log", "var/cache/apt", "var/lib/apt/lists", "run", "tmp", "proc", "sys"):
        base = root / rel
        if base.is_dir():
            for path in sorted(base.rglob("*"), reverse=True):
                if path.is_symlink() or not path.is_dir():
                    path.unlink()
    for rel in ("var/cache/ldconfig/aux-cache", "etc/resolv.conf", "etc/machine-id", "var/lib/dbus/machine-id"):
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
    for pattern in ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-"):
        for path in root.glob(pattern):
            path.unlink()
    # Byte-compiled Python differs from run to run (marshal's reference flags, mtime vs hash
    # headers); Python compiles from source when the .pyc is missing.
    for cache_dir in sorted((root / "usr").rglob("__pycache__")):
        remove_tree(cache_dir)
    (root / "etc" / "hostname").write_text("reprobuild\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost reprobuild\n::1\tlocalhost ip6-localhost\n")
    days = str(DEBIAN_EPOCH // 86400)
    for rel in ("etc/shadow", "etc/gshadow"):
        path = root / rel
        if rel == "etc/shadow" and path.exists():
            lines = []
            for line in path.read_text().splitlines():
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    parts[2] = days
                lines.append(":".join(parts))
            path.write_text("\n".join(lines) + "\n")


def _unmount_under(root: Path) -> None:
    """Unmount whatever is mounted below `root` (deepest first), so removing the tree stays inside it."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        proc.run(["umount", "-l", point], check=False)


def installed_versions(root: Path) -> dict[str, str]:
    """Every package dpkg says is installed in the rootfs, with its exact version."""
    done = proc.run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W",
                     "-f=${db:Status-Abbrev}\\t${Package}\\t${Version}\\n"])
    versions: dict[str, str] = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("\t")
        if status.strip() == "ii":
            name, _, version = rest.partition("\t")
            versions[name] = version
    return versions


# --- building and reusing images -----------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    image_id: str
    reference: str  # repository:tag
    reused: bool


class ImageStore:
    """Makes builder images from pinned inputs and loads them into an engine; reuses what is there."""

    def __init__(self, engine: Engine, cache_root: Path, builders_dir: Path | None = None) -> None:
        self.engine = engine
        self.cache_root = cache_root
        self.builders_dir = builders_dir or REPO_BUILDERS

    @property
    def dir(self) -> Path:
        return self.cache_root / "images"

    # --- go ----------------------------------------------------------------------------------
    def go_key(self, spec: ImageSpec, toolchain_root: Path) -> str:
        return _sha256_json({"format": FORMAT, "spec": spec.digest(), "toolchain": toolchain_identity(toolchain_root)})

    def ensure_go(self, toolchain_root: Path, name: str = "go", spec: ImageSpec | None = None) -> Built:
        spec = spec or load_spec(self.builders_dir, name)
        if spec.base != "scratch":
            raise BadInput(f"builder image `{name}` is not a scratch image")
        key = self.go_key(spec, toolchain_root)
        return self._ensure(spec, key, lambda work: self._go_layer(spec, toolchain_root, work))

    def _go_layer(self, spec: ImageSpec, toolchain_root: Path, work: Path) -> tuple[str, Path]:
        layer = work / "layer.tar"
        entries: list[_Entry] = [*_skeleton()]
        if spec.toolchain == "layered":
            entries.extend(tree_entries(toolchain_root, TOOLCHAIN.lstrip("/")))
        say(f"image {spec.name}: writing the layer ({toolchain_root})")
        return write_layer(entries, layer), layer

    # --- debian ------------------------------------------------------------------------------
    def ensure_debian(self, lock: Lock, name: str = "debian", spec: ImageSpec | None = None) -> Built:
        spec = spec or load_spec(self.builders_dir, name)
        entry = self.locked_entry(spec, lock)
        key = self.debian_key(spec, entry)
        return self._ensure(spec, key, lambda work: self.rootfs_layer(spec, entry, lock.path))

    @staticmethod
    def debian_key(spec: ImageSpec, entry: ImageLock) -> str:
        return _sha256_json({"format": FORMAT, "spec": spec.digest(), "lock": entry.key()})

    @staticmethod
    def locked_entry(spec: ImageSpec, lock: Lock) -> ImageLock:
        entries = parse_image_locks(lock)
        entry = entries.get(spec.name)
        if entry is None:
            raise BadInput(f"{lock.path}: no `images: {spec.name}` entry pins the `{spec.name}` builder image",
                           f"run `reprobuild lock --lock {lock.path}`")
        if entry.inputs != spec.digest():
            raise CheckFailed(f"{lock.path}: the `{spec.name}` image entry is stale ({spec.path} changed)",
                              f"run `reprobuild lock --lock {lock.path}`")
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
                raise ImageDrift(spec.name, changes, lock_path)
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
                _unmount_under(stale)
            remove_tree(stale)
        with temp_dir_in(self.dir / "tmp", f"{spec.name}-rootfs.") as work:
            root = work / "root"
            try:
                debootstrap(spec, root)
            finally:
                _unmount_under(root)  # an interrupted debootstrap leaves /proc and /sys mounted in it
            versions = installed_versions(root)
            say(f"image {spec.name}: {len(versions)} packages installed; writing the layer")
            layer = self.dir / "tmp" / f"{work.name}.tar"
            try:
                diff_id = write_layer([*tree_entries(root, ""), *_skeleton(with_tmp=False)], layer)
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


def _skeleton(with_tmp: bool = True) -> list[_Entry]:
    """What every image carries for the run contract: mount points, /tmp, a `builder` user (uid 1000)."""
    # The engine copies a mount point's mode into the tmpfs it mounts there: $TMPDIR must be 1777 like /tmp.
    entries = [_Entry(p, "dir", 0o1777 if p == TMP.lstrip("/") else 0o755) for p in MOUNT_POINTS]
    if with_tmp:
        entries += [_Entry("tmp", "dir", 0o1777), _Entry("etc", "dir", 0o755),
                    _Entry("etc/passwd", "data", 0o644, data=PASSWD.encode()),
                    _Entry("etc/group", "data", 0o644, data=GROUP.encode())]
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
