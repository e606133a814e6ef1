"""The Docker backend: each step in a fresh container, network off, on a Docker or Podman engine (reached
through `engine`, the one module that talks to it).

The run contract: no network (see `containers._network`), a read-only root filesystem, a tmpfs at /tmp and at
$TMPDIR (and at /rb/home unless the step mounts one), the step's mounts (the toolchain read-only at /rb/toolchain),
a fixed hostname, uid/gid 1000, umask 022, exactly the step's environment, a time limit (the
container is killed when it runs out) and a memory limit. Output is streamed line by line and
captured. The container is removed in every case: success, failure, timeout, Ctrl-C or SIGTERM
(the CLI turns SIGTERM into KeyboardInterrupt).

A step is planned by `container_config` (pure: the Engine API create body) over the mounts `step_mounts`
prepares (private copies, disorderfs views, ownership) and removes afterwards.

Outputs written by uid 1000 are handed back to the invoking user when reprobuild runs as root. Only root can
change owners, so a non-root caller has its steps run as whoever the engine maps to the caller (`for_this_user`):
on a rootful engine (the caller in its group) the caller's own uid/gid; on a rootless engine (Docker or Podman)
the container's root, which is the caller. The files a step writes are then the caller's. The output bytes do
not depend on it (verify's user_group variation checks that, as root).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprobuild.backends import GID, UID, ImageRef, RunResult, RunSpec, disorder, leftovers
from reprobuild.backends.containers import (
    DOCKER_QUIRKS,
    HOSTS,
    PODMAN_QUIRKS,
    container_config,
    step_mounts,
)
from reprobuild.backends.engine import STDERR, Engine, EngineError, EngineFacts, NotFound
from reprobuild.backends.leftovers import LABEL
from reprobuild.config.model import Lock
from reprobuild.errors import BadInput, EnvironmentFailure
from reprobuild.fsutil import atomic_write_text

if TYPE_CHECKING:
    from reprobuild.backends.images.spec import ImageSpec

# Where an image's libfaketime is (Debian's multiarch path; images are built for the host's architecture).
IMAGE_FAKETIME = f"/usr/lib/{platform.machine()}-linux-gnu/faketime/libfaketime.so.1"
# `umask` needs a shell in the image, `time` its libfaketime, `locales` the locale compiled into it (see
# builders/debian/image.yaml): a step in an image without (the scratch `go` image) reports the variation
# as not applied, and verify lists it as skipped.
SUPPORTED_VARIATIONS = frozenset({"build_path", "environment", "home", "cache", "timezone", "umask", "time",
                                  "locales", "num_cpus", "user_group", "domain_host", "exec_path"})


def probe(timeout: float = 5.0) -> tuple[bool, str]:
    """(True, "Docker engine 20.10.24 at ... (Engine API 1.41)") when an engine answers and accepts the negotiated
    API version; (False, why) otherwise."""
    try:
        client = Engine(timeout=timeout)
    except EngineError as exc:  # a Docker context that does not exist
        return False, _short(exc)
    try:
        return True, client.connect().describe()
    except EngineError as exc:
        return False, f"{client.address}: {_short(exc)}"
    finally:
        client.close()


def engine_info(timeout: float = 5.0) -> dict[str, Any]:
    """Engine facts for `reprobuild doctor` (raises EnvironmentFailure without an engine)."""
    client: Engine | None = None
    try:
        client = Engine(timeout=timeout)
        facts, info = client.connect(), client.info()
    except EngineError as exc:
        where = client.address if client is not None else "the configured engine"
        raise EnvironmentFailure(f"no container engine answers at {where}: {_short(exc)}") from None
    finally:
        if client is not None:
            client.close()
    return {"address": facts.address, "engine": facts.product, "version": facts.version, "api": facts.api_version,
            "server_api": facts.server_api, "server_min_api": facts.server_min_api,
            "storage_driver": info.get("Driver"), "cgroup_version": info.get("CgroupVersion")}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class DockerEngine:
    """The `images.Engine` protocol over the Engine API (Docker's or Podman's)."""

    def __init__(self, client: Engine | None = None) -> None:
        self.client = client or Engine()

    def has_image(self, image_id: str) -> bool:
        try:
            self.client.image(image_id if image_id.startswith("sha256:") else f"sha256:{image_id}")
        except NotFound:
            return False
        return True

    def load_archive(self, path: Path) -> list[str]:
        with open(path, "rb") as fh:
            return self.client.load(fh)

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self.client.tag(f"sha256:{image_id.removeprefix('sha256:')}", repository, tag)

    def images(self, repository: str) -> dict[str, str]:
        return {str(image["Id"]).removeprefix("sha256:"):
                str((image.get("Labels") or {}).get("org.reprobuild.inputs", ""))
                for image in self.client.images(repository)}

    def remove_image(self, image_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.client.remove_image(f"sha256:{image_id.removeprefix('sha256:')}")


class DockerBackend:
    name = "docker"
    hermetic = True
    builds_images = True

    def __init__(self, lock: Lock | None = None, cache_root: Path | None = None,
                 builders_dir: Path | None = None, client: Engine | None = None) -> None:
        """`lock` pins the debootstrapped images (its `images:` entries); `builders_dir` holds the image
        descriptions of steps whose ImageRef carries none. Both are given: the backend reads neither the
        lock nor the repository on its own (a build passes each image's description in its ImageRef).
        `client`: the engine (default: the configured one)."""
        from reprobuild.backends.images.spec import default_builders_dir
        from reprobuild.backends.images.store import ImageStore
        from reprobuild.toolchains.cache import default_cache_root

        self.client = client or Engine()
        self.product = "container"  # "Docker" or "Podman" once connected (see `connect`)
        self.lock = lock
        lock_path = Path(lock.path) if lock is not None else None
        self.store = ImageStore(DockerEngine(self.client), cache_root or default_cache_root(),
                                builders_dir or default_builders_dir(lock_path), lock_path)
        self._ids: dict[ImageRef, str] = {}
        self._specs: dict[str, ImageSpec] = {}  # descriptions read from builders_dir, once (steps ask on every run)
        self._images_guard = threading.Lock()  # parallel steps asking for one image build it once
        self._running: set[str] = set()  # containers running now, for `cancel` (steps run on many threads)
        self._running_guard = threading.Lock()
        self._cancelled = False
        self._hosts: Path | None = None
        self._quirks = DOCKER_QUIRKS

    def connect(self) -> EngineFacts:
        """Reach the engine and agree on the API version (EngineError when it does not answer or refuses)."""
        facts = self.client.connect()
        self.product = facts.product
        if facts.product == "Podman":
            self._quirks = PODMAN_QUIRKS
        return facts

    def ensure_image(self, image: ImageRef) -> str:
        """Build the image from its pinned inputs unless the engine already has the expected ID."""
        try:
            if self.product == "container":
                self.connect()
            with self._images_guard:
                if image not in self._ids:
                    self._ids[image] = self._build_image(image)
                return self._ids[image]
        except EngineError as exc:
            raise EnvironmentFailure(f"the {self.product} engine at {self.client.address} could not provide the "
                                     f"`{image.name}` builder image: {_short(exc)}",
                                     "see the engine's log; `reprobuild doctor` checks the engine") from None

    def _spec(self, image: ImageRef) -> ImageSpec:
        """The image's description: the one the step carries, else builders_dir's, parsed once. No lock
        (ensure_image holds `_images_guard` when it asks): two threads may both parse it, the first is kept."""
        from reprobuild.backends.images.spec import load_spec

        if image.spec is not None:
            return image.spec
        if image.name not in self._specs:
            self._specs.setdefault(image.name, load_spec(self.store.builders_dir, image.name))
        return self._specs[image.name]

    def _build_image(self, image: ImageRef) -> str:
        spec = self._spec(image)
        if spec.base == "scratch":
            if image.toolchain_root is None:
                raise BadInput(f"builder image `{image.name}` is made from a toolchain, but the step names none")
            built = self.store.ensure_go(image.toolchain_root, image.name, spec)
        else:
            if self.lock is None:
                raise BadInput(f"builder image `{image.name}` is pinned by a lock's `images:` section, and the "
                               "Docker backend was given no lock", "pass `--lock FILE` (or build in the repository)")
            built = self.store.ensure_debian(self.lock, image.name, spec)
        return built.image_id

    def _hosts_file(self) -> Path:
        """The fixed /etc/hosts of a network-less step (the engine writes none when networking is disabled),
        checked once per backend rather than read again for every step."""
        with self._images_guard:
            if self._hosts is None:
                path = self.store.cache_root / "docker" / "hosts"
                if not path.is_file() or path.read_text() != HOSTS:
                    atomic_write_text(path, HOSTS)
                self._hosts = path
            return self._hosts

    def remove_leftovers(self) -> list[leftovers.Leftover]:
        """Remove the containers and private directories of builds whose owner is dead on this host (one
        label-filtered list call to the engine); what was removed."""
        return leftovers.sweep(self.client)

    def cancel(self) -> None:
        """Kill every container this backend runs now; later steps are refused (the build was interrupted)."""
        with self._running_guard:
            self._cancelled = True
            running = sorted(self._running)
        for name in running:
            with contextlib.suppress(EngineError):
                self.client.kill(name)

    def _has_shell(self, image: ImageRef) -> bool:
        return self._spec(image).base != "scratch"

    def _unapplied(self, spec: RunSpec) -> dict[str, str]:
        """The variations of the step's Perturbation its image cannot apply, and why."""
        from reprobuild.backends.images.spec import BUILTIN_LOCALES

        image = self._spec(spec.image)
        p, where = spec.perturb, f"step `{spec.label}`: image `{image.name}`"
        found = {}
        if p.umask != 0o022 and image.base == "scratch":
            found["umask"] = f"{where} has no shell to set umask {p.umask:04o} (the runtime's is 0022)"
        if p.faketime is not None and "libfaketime" not in image.packages:
            found["time"] = f"{where} has no libfaketime to move the clock"
        if p.locale is not None and p.locale not in BUILTIN_LOCALES and p.locale not in image.locales:
            found["locales"] = f"{where} has no {p.locale} locale (builders/{image.name}/image.yaml `locales`)"
        return found

    def supports(self, variation: str) -> bool:
        """`verify` variations a container can apply (see SUPPORTED_VARIATIONS); fileordering when the host
        can make a disorderfs view to mount."""
        if variation == "fileordering":
            return disorder.unavailable() is None
        if variation == "user_group" and os.geteuid() != 0:
            return False  # only root can hand another user's files back (see for_this_user)
        return variation in SUPPORTED_VARIATIONS

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        spec = for_this_user(spec, self.client.facts)
        image_id = self.ensure_image(spec.image)
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        name = f"reprobuild-{uuid.uuid4().hex[:16]}"
        start = time.monotonic()
        try:
            with step_mounts(spec) as mounts:
                try:
                    unapplied = self._unapplied(spec)
                    variables = {**spec.env, **spec.perturb.variation_env()}
                    if spec.perturb.faketime is not None and "time" not in unapplied:
                        variables["LD_PRELOAD"] = IMAGE_FAKETIME
                    config = container_config(spec, image_id, mounts, name, has_shell=self._has_shell(spec.image),
                                              hosts_file=None if spec.network else self._hosts_file(),
                                              quirks=self._quirks, env=variables,
                                              owner_labels=leftovers.this_process().labels())
                    with self._running_guard:
                        if self._cancelled:
                            raise KeyboardInterrupt  # interrupted while this step was being set up
                        self._running.add(name)
                    self.client.create(name, config)
                    # Attached before it starts, straight to the process's stdout/stderr: no line can be missed,
                    # and the stream ends only after the last byte (following the log file could end early).
                    attached = self.client.attach(name)
                    self.client.start(name)

                    def kill() -> None:
                        timed_out.set()
                        with contextlib.suppress(EngineError):
                            self.client.kill(name)

                    timer = threading.Timer(spec.timeout, kill)
                    timer.daemon = True
                    timer.start()
                    output = _stream(attached, on_line or (lambda line: None))
                    code = self.client.wait(name)
                    if self._cancelled:
                        raise KeyboardInterrupt  # killed by `cancel`: not a failure of the step
                    if timed_out.is_set():
                        raise EnvironmentFailure(f"step `{spec.label}` timed out after {spec.timeout:.0f} s and was "
                                                 f"killed: {' '.join(spec.argv)}")
                    if code == 137 and spec.memory_bytes is not None \
                            and self.client.inspect(name)["State"].get("OOMKilled"):
                        raise EnvironmentFailure(f"step `{spec.label}` ran out of memory "
                                                 f"(limit {spec.memory_bytes // (1 << 20)} MiB) and was killed")
                    return RunResult(code, output, time.monotonic() - start, hermetic=True, unapplied=unapplied)
                finally:
                    if timer is not None:
                        timer.cancel()
                    self._remove(name)
                    with self._running_guard:
                        self._running.discard(name)
        except EngineError as exc:
            what = "refused" if exc.status else "was lost during"
            raise EnvironmentFailure(f"the {self.product} engine at {self.client.address} {what} step "
                                     f"`{spec.label}`: {_short(exc)}") from None

    def _remove(self, name: str) -> None:
        """Remove the container, by name (also when the create call was interrupted before it returned); one
        never asked for (the step was cancelled before) is not in `_running`."""
        if name not in self._running:
            return
        for _ in range(3):
            try:
                self.client.remove(name)
                return
            except NotFound:
                return
            except EngineError as exc:
                if "already in progress" in str(exc):
                    return
                time.sleep(0.2)
            except KeyboardInterrupt:
                continue  # a second Ctrl-C must not leave the container behind


def for_this_user(spec: RunSpec, engine: EngineFacts) -> RunSpec:
    """The step as it runs for this caller.

    Root: unchanged (the fixed build user; its files are handed back). Anyone else cannot give back the files a
    container's user writes, so the step runs as the engine maps the caller: its own uid/gid on a rootful engine;
    the container's root on a rootless engine, Docker or Podman, which is the caller. (Podman's `keep-id` would keep
    the caller's uid instead, but needs subordinate ids that Podman finds for the user when the container is made;
    a Podman with a single mapping, e.g. a user without /etc/subuid entries, refuses it. The container's root works
    with any mapping: reprobuild's image layers are owned by uid/gid 0.)"""
    p = spec.perturb
    if os.geteuid() == 0 or (p.uid, p.gid) != (UID, GID):
        return spec
    uid, gid = (0, 0) if engine.rootless else (os.getuid(), os.getgid())
    return dataclasses.replace(spec, perturb=dataclasses.replace(p, uid=uid, gid=gid))


def _stream(frames: Iterable[tuple[int, bytes]], on_line: Callable[[str], None]) -> str:
    """Hand each line of the container's stdout and stderr over as it arrives (each stream split into
    lines on its own, so a partial line on one never glues onto the other); return them all, in arrival order."""
    lines: list[str] = []
    pending = [b"", b""]

    def emit(raw: bytes, end: str) -> None:
        line = raw.decode("utf-8", "replace")
        lines.append(line + end)
        on_line(line)

    for stream, chunk in frames:
        i = int(stream == STDERR)
        pending[i] += chunk
        *complete, pending[i] = pending[i].split(b"\n")
        for raw in complete:
            emit(raw, "\n")
    leftovers = [rest for rest in pending if rest]  # output that did not end with a newline
    for k, rest in enumerate(leftovers):
        emit(rest, "\n" if k < len(leftovers) - 1 else "")
    return "".join(lines)


def leftover_containers(pid: int | None = None) -> list[str]:
    """Names of containers reprobuild started that still exist (all of them, or those of one process)."""
    label = f"org.reprobuild.pid={pid}" if pid is not None else LABEL
    client = Engine()
    try:
        return sorted(client.containers(label))
    finally:
        client.close()


def engine() -> DockerEngine:
    """The engine DOCKER_HOST names, for callers that only look at images (`reprobuild doctor`)."""
    return DockerEngine()
