"""One step's container, planned: the Engine API create body (`container_config`, pure) and the host side of its
mounts (`step_mounts`: private copies, disorderfs views, ownership handed to the build user and back).

The create body says only what Docker and Podman both accept, except where `EngineQuirks` records how they
differ; the Docker backend (docker.py) sends it through `engine`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.backends import CACHE, HOME, TMP, TOOLCHAIN, Mount, RunSpec, disorder
from reprobuild.backends.leftovers import LABEL, private_dir
from reprobuild.fsutil import remove_tree

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
TMPFS_SIZE = "2g"

def umask_wrapper(umask: int, unset: Sequence[str] = ()) -> tuple[str, ...]:
    """Images with a shell get the umask through this wrapper; a scratch image relies on the runtime's
    default umask (0022, checked by the tests) and on mount points made with fixed modes. The shell
    exports PWD: unset it (and `unset`, what the engine adds), so the step's environment is exactly the RunSpec's."""
    names = " ".join(["PWD", *unset])
    return ("/bin/sh", "-c", f'umask {umask:04o} && unset {names} && exec "$@"', "reprobuild-step")


@dataclass(frozen=True)
class EngineQuirks:
    """Where Docker and Podman differ in what a step's create body must say to get the same container: Podman
    refuses `uid=` on a tmpfs (its `U` chowns it to the container's user) and adds `container` and `TERM` to
    every environment."""

    home_owner: str = "uid={uid},gid={gid}"  # tmpfs option giving $HOME to the build user (Podman refuses uid=)
    ulimits: tuple[tuple[str, int], ...] = ()  # limits pinned to values the engine may apply
    added_env: tuple[str, ...] = ()  # variables the engine adds to every container


DOCKER_QUIRKS = EngineQuirks()


# Podman (rootful) gives a container open-file and process limits of its own choosing (1048576 files), which runc
# cannot apply with every capability dropped when they exceed the engine's own: pinned to modest values any engine
# allows (the process limit matches PidsLimit). Docker leaves them as its daemon's.
PODMAN_QUIRKS = EngineQuirks(home_owner="U", ulimits=(("nofile", 8192), ("nproc", 4096)),
                             added_env=("container", "TERM"))


@contextlib.contextmanager
def step_mounts(spec: RunSpec) -> Iterator[list[Mount]]:
    """The mounts a step's container gets: its own, with a private writable copy where it asks for one, a
    disorderfs view of the source for the fileordering variation, and the toolchain. Writable mounts belong
    to the build user while the step runs, and to the invoking user again afterwards; copies and views are
    gone when the block ends (after the container is removed)."""
    p = spec.perturb
    copies: list[Path] = []
    mounts: list[Mount] = []
    with contextlib.ExitStack() as views:
        try:
            for m in spec.mounts:
                if m.copy:  # a private, writable copy of the source, removed afterwards
                    copy = private_dir("reprobuild-copy-", in_container=True)
                    copies.append(copy)
                    os.chmod(copy, 0o711)  # disorderfs creates files as the build user, by path: it must get through
                    shutil.copytree(m.source, copy / "tree", symlinks=True)
                    m = Mount(copy / "tree", m.target, read_only=False)
                elif m.read_only and m.target == p.src and os.geteuid() == 0 and not _readable_by_all(m.source):
                    # A checkout made under umask 077: the build user (not its owner) gets a copy it can read.
                    copy = private_dir("reprobuild-copy-", in_container=True)
                    copies.append(copy)
                    os.chmod(copy, 0o711)
                    shutil.copytree(m.source, copy / "tree", symlinks=True)
                    _open_for_reading(copy / "tree")
                    m = Mount(copy / "tree", m.target)
                if p.fileordering and m.target == p.src:
                    m = Mount(views.enter_context(disorder.reversed_view(m.source, in_container=True)), m.target,
                              m.read_only)
                mounts.append(m)
            if spec.image.toolchain_root is not None and not any(m.target == TOOLCHAIN for m in mounts):
                mounts.append(Mount(spec.image.toolchain_root, TOOLCHAIN))
            # Outputs go to the build user and back; a cache stays the build user's between runs.
            _hand_over(_writable(mounts), p.uid, p.gid)
            for m in mounts:
                if m.target == CACHE and not m.read_only:
                    _own_cache(m.source, p.uid, p.gid)
            yield mounts
        finally:
            views.close()
            _hand_over(_writable(mounts), os.getuid(), os.getgid())
            for copy in copies:
                remove_tree(copy)


def _readable_by_all(top: Path) -> bool:
    """Whether every directory of the tree is 0555 or more for others, and every file 0444 or more."""
    for dirpath, _, filenames in os.walk(top):
        if os.stat(dirpath).st_mode & 0o005 != 0o005:
            return False
        for name in filenames:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if not mode & 0o004 and not stat.S_ISLNK(mode):
                return False
    return True


def _open_for_reading(top: Path) -> None:
    """Normalized modes (0755 directories and executables, 0644 other files) on a private copy."""
    for dirpath, _, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, 0o755 if mode & 0o100 else 0o644)


def _writable(mounts: Sequence[Mount]) -> list[Path]:
    return [m.source for m in mounts if not m.read_only and m.target != CACHE]


def container_config(spec: RunSpec, image_id: str, mounts: Sequence[Mount], name: str, *, has_shell: bool,
                     hosts_file: Path | None, quirks: EngineQuirks = DOCKER_QUIRKS,
                     env: Mapping[str, str] | None = None, owner_labels: Mapping[str, str] | None = None,
                     ) -> dict[str, Any]:
    """The Engine API create body of one step (pure: no I/O), for the engine `quirks` describe; `env` is the
    step's whole environment (default: the spec's); `owner_labels`: the labels naming the build that owns the container
    (leftovers.Owner.labels: run id, PID and its start time, host), by which a dead build's container is found."""
    variables = spec.env if env is None else env
    p = spec.perturb
    tmpfs = {path: f"rw,exec,nosuid,nodev,size={TMPFS_SIZE},mode=1777" for path in ("/tmp", TMP)}
    if not any(m.target == HOME for m in mounts):  # (verify's `home` variation moves it)
        owner = quirks.home_owner.format(uid=p.uid, gid=p.gid)
        tmpfs[p.home] = f"rw,nosuid,nodev,size=256m,{owner},mode=0755"
    unset = [k for k in quirks.added_env if k not in variables]
    argv = [*umask_wrapper(p.umask, unset), *spec.argv] if has_shell else list(spec.argv)
    labels = {"org.reprobuild.pid": str(os.getpid()), **(owner_labels or {}), LABEL: name,
              "org.reprobuild.label": spec.label}
    limits: dict[str, Any] = {}
    if spec.memory_bytes is not None:
        limits.update(Memory=spec.memory_bytes, MemorySwap=spec.memory_bytes)
    if p.cpus is not None:
        limits["CpusetCpus"] = ",".join(str(i) for i in range(p.cpus))
    if quirks.ulimits:
        limits["Ulimits"] = [{"Name": k, "Soft": v, "Hard": v} for k, v in quirks.ulimits]
    binds = [_bind(m.target, m.source, m.read_only) for m in mounts]
    if hosts_file is not None:
        binds.append(_bind("/etc/hosts", hosts_file, True))
    host_config = {**_network(spec.network), "ReadonlyRootfs": True, "Tmpfs": tmpfs, "Mounts": binds,
                   "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "PidsLimit": 4096,
                   "LogConfig": {"Type": "none", "Config": {}}, **limits}
    return {"Image": image_id, "Cmd": argv, "Labels": labels, "Env": [f"{k}={v}" for k, v in variables.items()],
            "WorkingDir": spec.workdir, "User": f"{p.uid}:{p.gid}", "Hostname": p.hostname,
            "Domainname": p.domainname, "NetworkDisabled": not spec.network, "HostConfig": host_config}


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
