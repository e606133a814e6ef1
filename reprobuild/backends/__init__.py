"""Backends run one build step hermetically. Both implement `Backend`, so builders say only *what* to run.

A `RunSpec` is written in container paths (the fixed paths below). The Docker backend mounts each
`Mount` at its target; the local backend runs on the host and maps each target prefix to its source,
which is why the fixed paths are distinctive (`/rb/...`). With `-trimpath` and the other flags
reprobuild sets, the output bytes do not depend on where those paths really are. The targets in
`PINNED` are the exception: every backend gives them to a step at exactly that path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from reprobuild.backends.images.spec import ImageSpec
    from reprobuild.backends.leftovers import Leftover
    from reprobuild.config.model import Lock

# Fixed paths inside every build.
SRC = "/rb/src"  # the source tree (read-only)
OUT = "/rb/out"  # where a step writes its outputs
TOOLCHAIN = "/rb/toolchain"  # the locked toolchain tree (read-only)
CACHE = "/rb/cache"  # build caches that never change output bytes (e.g. GOCACHE)
HOME = "/rb/home"  # an empty, writable HOME
# The build's temporary directory ($TMPDIR). Under /rb like the other fixed paths, so that the local
# backend's path mapping never rewrites a real host path (checkouts and venvs often live under /tmp);
# containers also get a private tmpfs at /tmp for tools that ignore TMPDIR.
TMP = "/rb/tmp"
# A locked Python environment (the Paddle venv). Its own path ends up in outputs (Paddle writes it into
# custom operators' RUNPATH, and it is in their debug info), so it cannot be mapped like the /rb paths:
# it is the same absolute path in every backend. Containers mount it there; the local backend, which
# cannot create /rb on a host, puts a symlink to the environment there for the duration of a run (under
# a lock). Under /tmp because that is the one directory every host lets every user create in.
PYENV = "/tmp/reprobuild-pyenv"
PINNED = (PYENV,)  # targets every backend gives a step at exactly that path, never mapped

HOSTNAME = "reprobuild"
UID = 1000
GID = 1000


@dataclass(frozen=True)
class Mount:
    source: Path  # on the host
    target: str  # inside the build
    read_only: bool = True
    copy: bool = False  # give the step a private, writable copy of `source` (the backend makes and removes it)


@dataclass(frozen=True)
class ImageRef:
    """A builder image the step runs in (`go`, `debian`, ...), with the toolchain it is made for.

    A build gives a backend that makes images (`Backend.builds_images`) the image's description too
    (`builders/<name>/image.yaml`, read once per build): backends never read the repository themselves.
    """

    name: str
    toolchain_root: Path | None = None
    spec: ImageSpec | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Perturbation:
    """How `verify` varies one build (reprotest's variations). The default is the normal, fixed build.

    Kinds apply `src` and `env`; backends apply the rest as far as they can (see `supports`), and report
    what a step could not apply in `RunResult.unapplied`.
    """

    name: str = "control"
    src: str = SRC  # build_path: where the source is inside the build
    env: Mapping[str, str] = field(default_factory=dict)  # replaces/extends the hermetic environment
    umask: int = 0o022
    home: str = HOME  # home: where the build's empty, writable HOME is
    hostname: str = HOSTNAME
    domainname: str = ""
    uid: int = UID
    gid: int = GID
    cpus: int | None = None  # num_cpus: restrict the build to this many CPUs
    cold_cache: bool = False  # cache: a fresh, empty build cache
    exec_path: str = ""  # exec_path: a directory appended to every step's PATH (reprotest's)
    fileordering: bool = False  # fileordering: the source is read through disorderfs (entries reversed)
    faketime: str | None = None  # time: libfaketime's offset for the build's clock (e.g. "+398d")
    locale: str | None = None  # locales: the build's LC_ALL/LANG (e.g. "fr_CH.UTF-8")

    def variation_env(self) -> dict[str, str]:
        """The variables that carry the time and locale variations to the build. A backend that can move
        the clock adds these and preloads libfaketime itself (LD_PRELOAD, at the path its build sees)."""
        env: dict[str, str] = {}
        if self.faketime is not None:
            env.update({"FAKETIME": self.faketime, "DONT_FAKE_MONOTONIC": "1", "FAKETIME_DISABLE_SHM": "1"})
        if self.locale is not None:
            language = self.locale.split(".")[0]
            env.update({"LC_ALL": self.locale, "LANG": self.locale, "LANGUAGE": f"{language}:{language.split('_')[0]}"})
        return env


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    image: ImageRef
    env: Mapping[str, str]  # the whole environment: see hermetic_env()
    mounts: tuple[Mount, ...]
    workdir: str = SRC
    timeout: float = 3600.0
    memory_bytes: int | None = None
    label: str = "build"
    network: bool = False  # only `vendor` ever asks for the network
    perturb: Perturbation = field(default_factory=Perturbation)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    output: str
    seconds: float
    hermetic: bool
    # Variations of the step's Perturbation this run could not apply, and why (verify lists them as skipped).
    unapplied: Mapping[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    hermetic: bool
    # Whether the backend makes its builder images from their descriptions (`builders/<name>/image.yaml`):
    # a build then hands each ImageRef its description, and the descriptions are inputs of every unit.
    builds_images: bool

    def supports(self, variation: str) -> bool:
        """Whether this backend can apply a `verify` variation (e.g. `domain_host` needs a UTS namespace)."""
        ...

    def ensure_image(self, image: ImageRef) -> str:
        """Make sure the image exists (built locally from pinned inputs); return its ID."""
        ...

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        """Run one step; the container (if any) is gone when this returns or raises."""
        ...

    def cancel(self) -> None:
        """End every step running now (from any thread) and refuse new ones: the build was interrupted."""
        ...

    def remove_leftovers(self) -> list[Leftover]:
        """Remove what builds killed outright left behind (their containers, their private directories under
        the temp dir), only of builds whose owner is dead on this host; what was removed (see leftovers.py)."""
        ...


@dataclass(frozen=True)
class EnvPolicy:
    """The allowlisted environment every step gets; nothing else from the host leaks in."""

    source_date_epoch: int
    extra: Mapping[str, str] = field(default_factory=dict)


def hermetic_env(policy: EnvPolicy) -> dict[str, str]:
    env = {
        "PATH": f"{TOOLCHAIN}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "TMPDIR": TMP,
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(policy.source_date_epoch),
        "USER": "builder",
        "HOSTNAME": HOSTNAME,
    }
    env.update(policy.extra)
    return env


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here: what was found, or why not and what to do about it."""

    name: str
    available: bool
    detail: str
    fix: str = ""


def probe_sandbox(cache_root: Path | None = None) -> Availability:
    from reprobuild.backends import sandbox

    found = sandbox.probe(cache_root)
    return Availability("sandbox", found.ok, found.detail, found.fix)


def probe_docker(cache_root: Path | None = None) -> Availability:
    from reprobuild.backends import docker

    reachable, why = docker.probe()
    return Availability("docker", reachable, why if reachable else f"no container engine answers ({why})",
                        "start one (`dockerd --bridge=none --iptables=false &` as root, after `apt-get install "
                        "docker.io`, or `podman system service --time=0 &`), or point DOCKER_HOST at a running engine")


def probe_local(cache_root: Path | None = None) -> Availability:
    return Availability("local", True, "the host itself (not hermetic)")


# The backends, most hermetic first: the default is the first one available (what --backend and
# REPROBUILD_BACKEND accept, too).
PROBES: tuple[tuple[str, Callable[[Path | None], Availability]], ...] = (
    ("sandbox", probe_sandbox), ("docker", probe_docker), ("local", probe_local))
BACKENDS = tuple(name for name, _ in PROBES)


def availability(cache_root: Path | None = None) -> list[Availability]:
    """Every backend, in order of preference, with whether it can run here (for `doctor`)."""
    return [check(cache_root) for _, check in PROBES]


def select_backend(requested: str | None, say: Callable[[str], None], lock: Lock | None = None,
                   cache_root: Path | None = None, builders_dir: Path | None = None) -> Backend:
    """`--backend sandbox|docker|local` (else REPROBUILD_BACKEND); by default the most hermetic backend the host
    offers: the sandbox where one can be made, else the configured container engine, else local. An engine named
    in the environment (DOCKER_HOST or DOCKER_CONTEXT) chooses docker, as REPROBUILD_REQUIRE_DOCKER=1 does.

    Fail closed: a requested backend that cannot run is exit 3 with the reason and the fix; an engine that is
    configured (DOCKER_HOST, a Docker context, a socket) must answer and accept the build, or this is exit 3
    naming it, what it said and the fix. Only a host with neither a sandbox nor any engine configured falls back
    to the local backend, with a warning block (the manifest and provenance then say `hermetic: false`).
    `lock`, `cache_root` and `builders_dir` tell the image-based backends which lock pins their roots, where their
    caches live and where the images are described (default ./toolchains.lock or REPROBUILD_LOCK, the reprobuild
    cache, the `builders/` beside the lock). The local backend checks the host's packages against the lock.
    """
    from reprobuild.errors import BadInput, EnvironmentFailure

    chosen = requested or os.environ.get("REPROBUILD_BACKEND", "").strip() or None
    if chosen is not None and chosen not in BACKENDS:
        raise BadInput(f"REPROBUILD_BACKEND={chosen}: not a backend", f"choose one of {', '.join(BACKENDS)}")
    if chosen is None and os.environ.get("REPROBUILD_REQUIRE_DOCKER", "") not in ("", "0"):
        chosen = "docker"
    if chosen is None and (os.environ.get("DOCKER_HOST") or os.environ.get("DOCKER_CONTEXT")):
        # An engine named in this environment is a choice: build there (or fail closed), not in a sandbox.
        chosen = "docker"
    if chosen == "local":
        from reprobuild.backends.local import LocalBackend

        return LocalBackend(lock=lock)
    sandbox: Availability | None = None
    if chosen in (None, "sandbox"):
        sandbox = probe_sandbox(cache_root)
        if sandbox.available:
            from reprobuild.backends.sandbox import SandboxBackend

            return SandboxBackend(lock=lock, cache_root=cache_root, builders_dir=builders_dir)
        if chosen == "sandbox":
            raise EnvironmentFailure(f"the sandbox backend is not available: {sandbox.detail}",
                                     f"{sandbox.fix}; or use `--backend docker` or `--backend local`")
    backend = _docker_backend(required=chosen == "docker", lock=lock, cache_root=cache_root,
                              builders_dir=builders_dir)
    if backend is not None:
        if sandbox is not None:
            say(f"sandbox: {sandbox.detail}; using the docker backend")
        return backend
    say(NO_ENGINE_WARNING + (f"\n  (no sandbox either: {sandbox.detail})" if sandbox is not None else ""))
    from reprobuild.backends.local import LocalBackend

    return LocalBackend(lock=lock)


NO_ENGINE_WARNING = """\
warning: no container engine is configured (no DOCKER_HOST, no Docker context, no Docker or Podman socket)
  and no sandbox can be made: building with the LOCAL backend: NOT hermetic (host tools, host network,
  host user and paths); manifest.json and the provenance record "hermetic": false
  for hermetic builds: install bubblewrap (the sandbox backend), start Docker (`dockerd`) or Podman
  (`podman system service`), or set DOCKER_HOST; `--backend local` (or REPROBUILD_BACKEND=local) chooses the
  local backend without this warning"""


def _docker_backend(required: bool, lock: Lock | None, cache_root: Path | None,
                    builders_dir: Path | None = None) -> Backend | None:
    """The Docker backend on the configured engine, connected; None when no engine is configured (and none is
    required). An engine that is configured but does not answer, or refuses, is exit 3."""
    from reprobuild.backends import engine
    from reprobuild.errors import EnvironmentFailure

    where: engine.Endpoint | None = None
    try:
        where = engine.configured()
        if where is None and not required:
            return None
        from reprobuild.backends.docker import DockerBackend

        backend = DockerBackend(lock=lock, cache_root=cache_root, builders_dir=builders_dir,
                                client=engine.Engine(where))
        backend.connect()
        return backend
    except engine.EngineError as exc:
        address = where.address if where is not None else f"unix://{engine.DEFAULT_SOCKET}"
        named = f" (from {where.origin})" if where is not None else ""
        if "ermission denied" in str(exc):
            raise _refused_this_user(address, named, str(exc)) from None
        if exc.status:
            raise EnvironmentFailure(
                f"the container engine at {address}{named} refused: {exc}",
                "upgrade or reconfigure the engine or the client as it says (a pinned DOCKER_API_VERSION can be "
                "unset), check permission on its socket, or choose `--backend local` (not hermetic)") from None
        raise EnvironmentFailure(
            f"no container engine answers at {address}{named}: {exc}",
            "start one (`dockerd --bridge=none --iptables=false &` as root, after `apt-get install docker.io`, or "
            "`podman system service --time=0 &`), point DOCKER_HOST at a running engine, "
            "or use `--backend local`") from None


def _refused_this_user(address: str, named: str, said: str) -> Exception:
    """Exit 3 for an engine socket that refuses this user (EACCES): which socket, what it said, whose it is, and the
    fixes: its group, a rootless engine of the user's own, DOCKER_HOST."""
    import grp
    import pwd

    from reprobuild.errors import EnvironmentFailure

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    said = said.removeprefix("no answer: ")
    group, whose = "", ""
    if address.startswith("unix://"):
        path = address.removeprefix("unix://")
        said = f"connecting to {path}: {said}"
        try:
            st = os.stat(path)
            group = grp.getgrgid(st.st_gid).gr_name
            owner = pwd.getpwuid(st.st_uid).pw_name
            whose = f" (the socket is {owner}:{group}, mode {st.st_mode & 0o7777:04o})"
        except (OSError, KeyError):
            pass
    join = (f"add {user} to the socket's `{group}` group (`sudo usermod -aG {group} {user}`, then log in again)"
            if group and group != "root" else "run as a user the engine's socket admits (root, or its group)")
    return EnvironmentFailure(
        f"the container engine at {address}{named} refused this user ({user}, uid {uid}): {said}{whose}",
        f"{join}; or run a rootless engine as {user} (rootless Docker: DOCKER_HOST=unix://$XDG_RUNTIME_DIR/"
        "docker.sock; Podman: `podman system service --time=0 &`, DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/"
        "podman.sock); or point DOCKER_HOST at an engine this user may use; or choose `--backend local` "
        "(not hermetic)")
