"""The Docker backend: each step in a fresh container, network off. It reaches the engine through `dockerapi`.

The run contract: no network (see `_network`), a read-only root filesystem, a tmpfs at /tmp and at $TMPDIR (and at
/rb/home unless the step mounts one), the step's mounts (the toolchain read-only at /rb/toolchain),
a fixed hostname, uid/gid 1000, umask 022, exactly the step's environment, a time limit (the
container is killed when it runs out) and a memory limit. Output is streamed line by line and
captured. The container is removed in every case: success, failure, timeout, Ctrl-C or SIGTERM
(the CLI turns SIGTERM into KeyboardInterrupt).

Outputs written by uid 1000 are handed back to the invoking user (when reprobuild runs as root,
which a rootful engine usually means; otherwise the invoking user should be uid 1000).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprobuild.backends import CACHE, HOME, TMP, TOOLCHAIN, ImageRef, Mount, RunResult, RunSpec, disorder
from reprobuild.backends.dockerapi import STDERR, Engine, EngineError, NotFound, engine_address
from reprobuild.config.model import Lock
from reprobuild.errors import BadInput, EnvironmentFailure
from reprobuild.fsutil import atomic_write_text, remove_tree

if TYPE_CHECKING:
    from reprobuild.backends.images.spec import ImageSpec

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
LABEL = "org.reprobuild.run"  # every container reprobuild starts carries it (doctor and tests look for it)
TMPFS_SIZE = "2g"
# Where an image's libfaketime is (Debian's multiarch path; images are built for the host's architecture).
IMAGE_FAKETIME = f"/usr/lib/{platform.machine()}-linux-gnu/faketime/libfaketime.so.1"
# `umask` needs a shell in the image, `time` its libfaketime, `locales` the locale compiled into it (see
# builders/debian/image.yaml): a step in an image without (the scratch `go` image) reports the variation
# as not applied, and verify lists it as skipped.
SUPPORTED_VARIATIONS = frozenset({"build_path", "environment", "home", "cache", "timezone", "umask", "time",
                                  "locales", "num_cpus", "user_group", "domain_host", "exec_path"})


def umask_wrapper(umask: int) -> tuple[str, ...]:
    """Images with a shell get the umask through this wrapper; a scratch image relies on the runtime's
    default umask (0022, checked by the tests) and on mount points made with fixed modes. The shell
    exports PWD: unset it, so the step's environment is exactly the RunSpec's."""
    return ("/bin/sh", "-c", f'umask {umask:04o} && unset PWD && exec "$@"', "reprobuild-step")


def probe(timeout: float = 5.0) -> tuple[bool, str]:
    """(True, "Docker engine 20.10 at ...") when an engine answers; (False, why) otherwise."""
    where = engine_address()
    try:
        version = Engine(timeout=timeout).ping()
    except EngineError as exc:
        return False, f"{where}: {_short(exc)}"
    return True, f"Docker engine {version} at {where}"


def engine_info(timeout: float = 5.0) -> dict[str, Any]:
    """Version and storage details for `reprobuild doctor` (raises EnvironmentFailure without an engine)."""
    try:
        client = Engine(timeout=timeout)
        version, info = client.version(), client.info()
    except EngineError as exc:
        raise EnvironmentFailure(f"no Docker engine answers at {engine_address()}: {_short(exc)}") from None
    return {"address": engine_address(), "version": version.get("Version"), "api": version.get("ApiVersion"),
            "storage_driver": info.get("Driver"), "cgroup_version": info.get("CgroupVersion")}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class DockerEngine:
    """The `images.Engine` protocol over the Engine API."""

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
            return self.client.load(fh, os.fstat(fh.fileno()).st_size)

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
                 builders_dir: Path | None = None) -> None:
        """`lock` pins the debootstrapped images (its `images:` entries); `builders_dir` holds the image
        descriptions of steps whose ImageRef carries none. Both are given: the backend reads neither the
        lock nor the repository on its own (a build passes each image's description in its ImageRef)."""
        from reprobuild.backends.images.spec import default_builders_dir
        from reprobuild.backends.images.store import ImageStore
        from reprobuild.toolchains.cache import default_cache_root

        self.client = Engine()
        self.lock = lock
        self.store = ImageStore(DockerEngine(self.client), cache_root or default_cache_root(),
                                builders_dir or default_builders_dir(Path(lock.path) if lock is not None else None))
        self._ids: dict[ImageRef, str] = {}
        self._specs: dict[str, ImageSpec] = {}  # descriptions read from builders_dir, once (steps ask on every run)
        self._images_guard = threading.Lock()  # parallel steps asking for one image build it once
        self._running: set[str] = set()  # containers running now, for `cancel` (steps run on many threads)
        self._running_guard = threading.Lock()
        self._cancelled = False
        self._hosts: Path | None = None

    def ensure_image(self, image: ImageRef) -> str:
        """Build the image from its pinned inputs unless the engine already has the expected ID."""
        with self._images_guard:
            if image not in self._ids:
                self._ids[image] = self._build_image(image)
            return self._ids[image]

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
        return variation in SUPPORTED_VARIATIONS

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        image_id = self.ensure_image(spec.image)
        p = spec.perturb
        uid, gid = p.uid, p.gid
        copies: list[Path] = []
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        name = f"reprobuild-{uuid.uuid4().hex[:16]}"
        mounts: list[Mount] = []
        views = contextlib.ExitStack()
        start = time.monotonic()
        try:
            for m in spec.mounts:
                if m.copy:  # a private, writable copy of the source, removed afterwards
                    copy = Path(tempfile.mkdtemp(prefix="reprobuild-copy-"))
                    copies.append(copy)
                    os.chmod(copy, 0o711)  # disorderfs creates files as the build user, by path: it must get through
                    shutil.copytree(m.source, copy / "tree", symlinks=True)
                    m = Mount(copy / "tree", m.target, read_only=False)
                if p.fileordering and m.target == p.src:
                    m = Mount(views.enter_context(disorder.reversed_view(m.source)), m.target, m.read_only)
                mounts.append(m)
            if spec.image.toolchain_root is not None and not any(m.target == TOOLCHAIN for m in mounts):
                mounts.append(Mount(spec.image.toolchain_root, TOOLCHAIN))
            tmpfs = {path: f"rw,exec,nosuid,nodev,size={TMPFS_SIZE},mode=1777" for path in ("/tmp", TMP)}
            if not any(m.target == HOME for m in mounts):
                tmpfs[HOME] = f"rw,nosuid,nodev,size=256m,uid={uid},gid={gid},mode=0755"
            argv = list(spec.argv)
            unapplied = self._unapplied(spec)
            if self._has_shell(spec.image):
                argv = [*umask_wrapper(p.umask), *argv]
            # Outputs go to the build user and back; a cache stays the build user's between runs.
            writable = [m.source for m in mounts if not m.read_only and m.target != CACHE]
            labels = {LABEL: name, "org.reprobuild.pid": str(os.getpid()), "org.reprobuild.label": spec.label}
            limits: dict[str, Any] = {}
            if spec.memory_bytes is not None:
                limits.update(Memory=spec.memory_bytes, MemorySwap=spec.memory_bytes)
            if p.cpus is not None:
                limits["CpusetCpus"] = ",".join(str(i) for i in range(p.cpus))
            _hand_over(writable, uid, gid)
            for m in mounts:
                if m.target == CACHE and not m.read_only:
                    _own_cache(m.source, uid, gid)
            binds = [_bind(m.target, m.source, m.read_only) for m in mounts]
            if not spec.network:
                binds.append(_bind("/etc/hosts", self._hosts_file(), True))
            host_config = {**_network(spec.network), "ReadonlyRootfs": True, "Tmpfs": tmpfs, "Mounts": binds,
                           "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "PidsLimit": 4096,
                           "LogConfig": {"Type": "none", "Config": {}}, **limits}
            variables = {**spec.env, **p.variation_env()}
            if p.faketime is not None and "time" not in unapplied:
                variables["LD_PRELOAD"] = IMAGE_FAKETIME
            env = [f"{k}={v}" for k, v in variables.items()]
            config = {"Image": image_id, "Cmd": argv, "Labels": labels, "Env": env, "WorkingDir": spec.workdir,
                      "User": f"{uid}:{gid}", "Hostname": p.hostname, "Domainname": p.domainname,
                      "NetworkDisabled": not spec.network, "AttachStdin": False, "AttachStdout": True,
                      "AttachStderr": True, "OpenStdin": False, "Tty": False, "HostConfig": host_config}
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
                raise EnvironmentFailure(f"step `{spec.label}` timed out after {spec.timeout:.0f} s and was killed: "
                                         f"{' '.join(spec.argv)}")
            if code == 137 and spec.memory_bytes is not None and self.client.inspect(name)["State"].get("OOMKilled"):
                raise EnvironmentFailure(f"step `{spec.label}` ran out of memory "
                                         f"(limit {spec.memory_bytes // (1 << 20)} MiB) and was killed")
            return RunResult(code, output, time.monotonic() - start, hermetic=True, unapplied=unapplied)
        except EngineError as exc:
            what = "refused" if exc.status else "was lost during"
            raise EnvironmentFailure(f"the Docker engine at {engine_address()} {what} step `{spec.label}`: "
                                     f"{_short(exc)}") from None
        finally:
            if timer is not None:
                timer.cancel()
            self._remove(name)
            with self._running_guard:
                self._running.discard(name)
            views.close()
            _hand_over([m.source for m in mounts if not m.read_only and m.target != CACHE], os.getuid(), os.getgid())
            for copy in copies:
                remove_tree(copy)

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


def _network(allowed: bool) -> dict[str, Any]:
    """The HostConfig network of a step. One without the network gets a network namespace of its own holding
    only the loopback interface.

    `NetworkDisabled` (set in the container's config beside this) keeps the engine's network stack out of
    it altogether: the container start costs half (0.067 s vs 0.153 s for `NetworkMode: none` alone,
    measured here), and no file from the host's network setup (its /etc/resolv.conf, which "none" copies
    in) reaches the build; `_hosts_file` gives it `localhost`. `NetworkMode: none` stays set, so an engine
    that ignored the flag would still give none. Only `vendor` asks for the network, through the host's.
    """
    return {"NetworkMode": "host" if allowed else "none"}


def _bind(target: str, source: Path, read_only: bool) -> dict[str, Any]:
    return {"Target": target, "Source": str(source), "Type": "bind", "ReadOnly": read_only}


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


def _own_cache(path: Path, uid: int, gid: int) -> None:
    """A cache mount belongs to the build user and stays so: walked (and fixed) only when its top is not."""
    if os.geteuid() == 0 and path.exists():
        st = path.stat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            _hand_over([path], uid, gid)


def _hand_over(paths: list[Path], uid: int, gid: int) -> None:
    """Give writable mounts to the build user before a run, and back to the invoking user after it.

    Only root can change owners; anyone else runs as (and should be) uid 1000 on a rootful engine.
    """
    if os.geteuid() != 0:
        return
    for top in paths:
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(name)
                    if st.st_uid != uid or st.st_gid != gid:
                        os.lchown(name, uid, gid)


def leftover_containers(pid: int | None = None) -> list[str]:
    """Names of containers reprobuild started that still exist (all of them, or those of one process)."""
    label = f"org.reprobuild.pid={pid}" if pid is not None else LABEL
    return sorted(Engine().containers(label))


def engine() -> DockerEngine:
    """The engine DOCKER_HOST names, for callers that only look at images (`reprobuild doctor`)."""
    return DockerEngine()
