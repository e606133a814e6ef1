"""What a killed build leaves behind, and who may remove it: containers and private directories of builds whose
owner is dead on this host, and (for `doctor --fix`) reprobuild's own builder images nothing expects any more.

Every container and private directory a build makes names its owner (`Owner`): the run's id, the owner's PID,
that PID's start time (from /proc/PID/stat, so a reused PID is not taken for the owner) and the host (hostname,
/etc/machine-id, the boot id and the PID namespace). A container carries it as labels; a directory under the
temp dir as a small file inside it (`.reprobuild-owner`). A leftover is removed only when its owner is dead:

- same host, boot and PID namespace, and no process with that PID and start time runs; or
- same host (hostname and machine id), an earlier boot: no process outlives a reboot.

Anything else is never touched: another host's container on a shared or remote engine, one made in another PID
namespace (a build in a container sharing the engine), one with no or an incomplete owner record (an older
reprobuild's, a test's), anything without reprobuild's label, a directory owned by another user.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Set
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprobuild import proc
from reprobuild.errors import ReprobuildError
from reprobuild.fsutil import read_json_object, remove_tree

if TYPE_CHECKING:
    from reprobuild.backends.engine import Engine
    from reprobuild.config.model import Lock
    from reprobuild.toolchains.cache import ToolchainCache

LABEL = "org.reprobuild.run"  # every container reprobuild starts carries it (its name)
IMAGE_LABEL = "org.reprobuild.image"  # every builder image reprobuild makes carries it (the image's name)
PREFIX = "org.reprobuild."
MARKER = ".reprobuild-owner"  # the owner record inside a private directory
DIR_PREFIX = "reprobuild-"  # every private directory under the temp dir is named so

ALIVE, DEAD, FOREIGN, UNKNOWN = "alive", "dead", "foreign", "unknown"
IN_CONTAINER = "mounted in a container"  # a directory's detail: removed only after its container is


@dataclass(frozen=True)
class Owner:
    """The process a container or directory belongs to, and where it runs."""

    build: str  # the reprobuild run's id (one per process)
    pid: int
    started: int  # the PID's start time: /proc/PID/stat field 22, clock ticks after boot
    hostname: str
    machine: str  # /etc/machine-id ("" where there is none)
    boot: str  # /proc/sys/kernel/random/boot_id
    pidns: str  # the PID namespace, as /proc/self/ns/pid names it

    def record(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    def labels(self) -> dict[str, str]:
        return {PREFIX + k: v for k, v in self.record().items()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], prefix: str = "") -> Owner | None:
        """The owner a record (labels with `prefix`, or a marker file's JSON) names; None when it is incomplete."""
        try:
            values = {k: str(record[prefix + k]) for k in cls.__dataclass_fields__}
            return cls(values["build"], int(values["pid"]), int(values["started"]), values["hostname"],
                       values["machine"], values["boot"], values["pidns"])
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"build {self.build}, pid {self.pid} on {self.hostname}"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None when no such process is visible."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        # The command name (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=4)
def _owner_of(pid: int) -> Owner:
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return Owner(uuid.uuid4().hex[:16], pid, start_time(pid) or 0, socket.gethostname(),
                 _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id"),
                 _read("/proc/sys/kernel/random/boot_id"), pidns)


def this_process() -> Owner:
    """The owner this process writes on everything it makes (computed once per process)."""
    return _owner_of(os.getpid())


def judge(owner: Owner | None, me: Owner | None = None) -> str:
    """ALIVE, DEAD (removable), FOREIGN (another host or PID namespace) or UNKNOWN (no full owner record, or this
    host cannot tell: no boot id, no PID namespace, or other users' processes hidden from /proc)."""
    me = me or this_process()
    if owner is None or not all((me.boot, me.pidns, me.started, owner.boot, owner.pidns, owner.started)):
        return UNKNOWN
    if (owner.hostname, owner.machine) != (me.hostname, me.machine):
        return FOREIGN
    if owner.boot != me.boot:
        return DEAD if me.machine else FOREIGN  # the same machine, rebooted since; else another one
    if owner.pidns != me.pidns:
        return FOREIGN
    if not os.path.exists("/proc/1/stat"):
        return UNKNOWN  # /proc hides other processes (hidepid): a live owner would look dead
    return ALIVE if start_time(owner.pid) == owner.started else DEAD


# --- private directories ----------------------------------------------------------------------------

def private_dir(prefix: str, *, in_container: bool = False) -> Path:
    """A new private directory under the temp dir (`prefix` starts with `reprobuild-`), carrying this process's
    owner record. `in_container`: a container mounts it, so it is removed only after the container is (by a
    sweep that asks the engine)."""
    assert prefix.startswith(DIR_PREFIX), prefix
    path = Path(tempfile.mkdtemp(prefix=prefix))
    record = {**this_process().record(), "in_container": in_container}
    fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, sort_keys=True)
    return path


def _marker(path: Path) -> dict[str, Any] | None:
    return read_json_object(path / MARKER, 4096)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or under `path` (this mount namespace's), deepest first."""
    top = os.path.realpath(path)
    found = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
            if point == top or point.startswith(top + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


# --- what is left, and its removal -------------------------------------------------------------------

@dataclass(frozen=True)
class Leftover:
    kind: str  # "container", "dir" or "image"
    name: str  # the container's name, the directory's path, the image's reference
    state: str  # ALIVE, DEAD, FOREIGN, UNKNOWN; "stale" for an image nothing expects
    owner: Owner | None = None
    detail: str = ""  # the container's state, the image's ID, why a leftover was kept

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "state": self.state, "detail": self.detail,
                "owner": self.owner.record() if self.owner is not None else None}

    def describe(self) -> str:
        whose = f" ({self.owner.describe()}, {self.state})" if self.owner is not None else f" ({self.state})"
        return f"{self.kind} {self.name}{whose}" + (f": {self.detail}" if self.detail else "")


def find_dirs(temp_root: Path | None = None, me: Owner | None = None) -> list[Leftover]:
    """This user's private directories under the temp dir that carry an owner record, judged."""
    root = Path(temp_root or tempfile.gettempdir())
    found = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
        except OSError:
            continue
        record = _marker(Path(entry.path))
        if record is None:
            continue  # not made by a reprobuild that records its owner: never judged
        owner = Owner.from_record(record)
        detail = IN_CONTAINER if record.get("in_container") else ""
        found.append(Leftover("dir", entry.path, judge(owner, me), owner, detail))
    return found


def find_containers(engine: Engine, me: Owner | None = None) -> list[Leftover]:
    """Every container carrying reprobuild's label on the engine (one label-filtered list call), judged."""
    found = []
    for record in engine.container_records(LABEL):
        names = record.get("Names") or [record.get("Id", "?")]
        owner = Owner.from_record(record.get("Labels") or {}, PREFIX)
        found.append(Leftover("container", str(names[0]).lstrip("/"), judge(owner, me), owner,
                              str(record.get("State", ""))))
    return found


def remove(found: Iterable[Leftover], engine: Engine | None) -> list[Leftover]:
    """Remove the DEAD ones (containers first: their mounts are the directories), and stale images; what was
    removed. A directory a container mounts waits for a sweep that asks the engine (`engine` given); one that
    still has something mounted in it after unmounting is kept."""
    from reprobuild.backends.engine import EngineError, NotFound

    items = [f for f in found if f.state in (DEAD, "stale")]
    removed = []
    for item in sorted(items, key=lambda f: ("container", "dir", "image").index(f.kind)):
        if item.kind == "container" and engine is not None:
            try:
                engine.remove(item.name)
            except NotFound:
                continue
            except EngineError:
                continue  # the engine refused (being removed already, ...): the next sweep tries again
        elif item.kind == "dir":
            if item.detail == IN_CONTAINER and engine is None:
                continue
            path = Path(item.name)
            for point in _mounts_under(path):  # a dead build's disorderfs view: never remove through it
                with contextlib.suppress(ReprobuildError):  # (no fusermount: the check below keeps the dir)
                    proc.run(["fusermount", "-u", "-z", "-q", point], check=False)
            if _mounts_under(path):
                continue
            try:
                remove_tree(path)
            except OSError:
                continue
        elif item.kind == "image" and engine is not None:
            try:
                engine.remove_image(item.name, force=False)  # refused while a container uses it
            except EngineError:
                continue
        else:
            continue
        removed.append(item)
    return removed


def sweep(engine: Engine | None = None, temp_root: Path | None = None) -> list[Leftover]:
    """Remove what dead builds left: their private directories, and their containers when `engine` is given (one
    label-filtered list call); what was removed. Cheap: a scan of the temp dir's `reprobuild-*` entries."""
    from reprobuild.backends.engine import EngineError

    found = find_dirs(temp_root)
    if engine is not None:
        try:
            found = find_containers(engine) + found
        except EngineError:
            engine = None  # the build itself will say what the engine said
    return remove(found, engine)


# --- reprobuild's own stale builder images -------------------------------------------------------------

def stale_images(engine: Engine, expected: Mapping[str, frozenset[str] | None], made_here: Set[str],
                 keep: Set[tuple[str, str]] = frozenset()) -> list[Leftover]:
    """reprobuild's builder images (its label, a `reprobuild-NAME:` name) of the images `expected` describes whose
    inputs are none of the expected ones and that no container (of anyone) uses; one entry per name to remove.
    Only images this cache made (`made_here`: IDs) are candidates, and none whose (name, inputs) another checkout's
    lock still uses (`keep`): on an engine shared by users or checkouts, theirs stay. A name whose expected inputs
    could not be computed (None) is left alone, as are names `expected` lacks."""
    used = {str(c.get("ImageID", "")).removeprefix("sha256:") for c in engine.container_records(None)}
    found = []
    for image in engine.image_records(IMAGE_LABEL):
        labels = image.get("Labels") or {}
        name, inputs, image_id = labels.get(IMAGE_LABEL, ""), labels.get(PREFIX + "inputs", ""), str(image["Id"])
        keys = expected.get(name)
        bare_id = image_id.removeprefix("sha256:")
        if keys is None or inputs in keys or bare_id in used or bare_id not in made_here or (name, inputs) in keep:
            continue
        # (Podman names an unqualified image `localhost/NAME:TAG`)
        tags = image.get("RepoTags") or []
        ours = [t for t in tags if t.removeprefix("localhost/").startswith(f"reprobuild-{name}:")]
        for tag in ours:
            found.append(Leftover("image", tag, "stale", None, image_id))
        if not tags or tags == ["<none>:<none>"]:
            found.append(Leftover("image", image_id, "stale", None, image_id))
    return found


# --- `doctor --fix` -----------------------------------------------------------------------------------

def fix(lock_path: Path, cache: ToolchainCache, builders_dir: Path | None = None) -> tuple[Leftover, ...]:
    """Remove what builds killed outright left behind (containers and private directories whose owner is dead on
    this host) and the builder images this cache made that the lock and builders/ no longer expect, no container
    uses and no other checkout's lock still uses; what was removed. Nothing else: never a running build's, another
    host's or another cache's, or any other image."""
    from reprobuild.backends import engine as engines
    from reprobuild.backends.images.spec import default_builders_dir

    client: engines.Engine | None = None
    try:
        if engines.configured() is not None:
            client = engines.Engine(timeout=30)
            client.connect()
    except engines.EngineError:
        client = None  # nothing to ask: the findings say why
    try:
        removed = sweep(client)
        if client is not None:
            from reprobuild.backends.images import uses

            builders = builders_dir or default_builders_dir(lock_path)
            expected = expected_images(_lock_or_none(lock_path), cache, builders)
            stale = stale_images(client, expected, uses.made_here(cache.root),
                                 uses.used_by_other_locks(cache.root, lock_path))
            removed += remove(stale, client)
    finally:
        if client is not None:
            client.close()
    return tuple(removed)


def expected_images(lock: Lock | None, cache: ToolchainCache, builders: Path) -> dict[str, frozenset[str] | None]:
    """Per image builders/ describes, the inputs keys of the images the lock expects; None where they cannot be
    known here (no valid lock, a stale or missing lock entry, a toolchain of the lock not installed in the cache)."""
    from reprobuild.backends.docker import DockerEngine
    from reprobuild.backends.images.spec import load_spec, spec_names
    from reprobuild.backends.images.store import ImageStore
    from reprobuild.config.model import host_platform
    from reprobuild.toolchains.cache import entry_key

    store = ImageStore(DockerEngine(), cache.root, builders)  # only computes keys: never asks the engine
    expected: dict[str, frozenset[str] | None] = {}
    for name in spec_names(builders):
        expected[name] = None
        try:
            spec = load_spec(builders, name)
            if lock is None:
                continue
            if spec.base == "debootstrap":
                expected[name] = frozenset({store.debian_key(spec, ImageStore.locked_entry(spec, lock))})
            elif spec.base == "scratch":  # one image per toolchain it is made with: every one must be known
                pins = [(tc, tc.pin(host_platform())) for tc in lock.toolchains.values()]
                installed = [(tc, pin) for tc, pin in pins if pin is not None]
                if all(cache.state(tc, pin) == "installed" for tc, pin in installed):
                    expected[name] = frozenset(store.go_key(spec, cache.entry_dir(entry_key(pin)) / "tree")
                                               for _, pin in installed)
        except Exception:  # a broken spec or lock entry: check_images reports it; its images stay
            expected[name] = None
    return expected


def _lock_or_none(lock_path: Path) -> Lock | None:
    from reprobuild.config.lock import load_lock
    from reprobuild.errors import ReprobuildError

    try:
        return load_lock(lock_path) if lock_path.exists() else None
    except ReprobuildError:
        return None
