"""The sandbox backend: each step in a bubblewrap sandbox on the builder image's pinned root, no daemon.

The run contract is the Docker backend's, made with Linux namespaces by `bwrap` in about 10-20 ms:
- the root is the builder image's content (`images/roots.py`: the scratch skeleton with the toolchain bound at
  /rb/toolchain, or the lock's debian rootfs), bound read-only; /tmp and $TMPDIR are private tmpfs (1777), and
  /rb/home one unless the step mounts a HOME;
- the step's mounts under /rb sit on a private tmpfs that is made read-only once they are in place, in a mount
  namespace of the step's own: any number of builds use the same fixed paths at once, and nothing waits;
- new user (uid/gid 1000 mapped to the invoker, who so owns what the step writes), PID, IPC, UTS (hostname
  `reprobuild`), cgroup and network namespaces (only `lo`); `--clearenv` and exactly the step's environment;
  no capabilities; `--die-with-parent`, so killing the step's process group (a time limit, Ctrl-C, SIGTERM,
  `cancel`) takes every process of the sandbox with it;
- a memory limit through a cgroup of the step's own where this user may make one (root).

As root on a host that refuses user namespaces, the step runs as uid 0 without any capability instead (the
`user_group` variation is then not applied). Results are recorded as `"hermetic": true`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reprobuild import proc
from reprobuild.backends import HOME, TMP, TOOLCHAIN, ImageRef, Mount, RunResult, RunSpec, disorder, leftovers
from reprobuild.backends.images.roots import Root, RootStore
from reprobuild.backends.images.spec import BUILTIN_LOCALES, ImageSpec
from reprobuild.config.model import Lock
from reprobuild.errors import BadInput, EnvironmentFailure
from reprobuild.fsutil import atomic_write_text, remove_tree

# Where a root's libfaketime is (Debian's multiarch path; roots are made for the host's architecture).
ROOT_FAKETIME = f"/usr/lib/{platform.machine()}-linux-gnu/faketime/libfaketime.so.1"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # of the helpers around bwrap only
VARIATIONS = frozenset({"build_path", "environment", "home", "cache", "timezone", "umask", "time", "locales",
                        "exec_path", "num_cpus", "user_group", "domain_host"})
USERNS_FIX = ("allow unprivileged user namespaces (`sysctl -w kernel.unprivileged_userns_clone=1` on Debian, "
              "`sysctl -w user.max_user_namespaces=15000`, and on Ubuntu "
              "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`), or run reprobuild as root")


@dataclass(frozen=True)
class Probe:
    """Whether a sandbox can be made here, and how: `userns` (uid 1000 mapped) or `root` (no user namespace)."""

    ok: bool
    detail: str
    fix: str = ""
    mode: str = ""
    bwrap: str = ""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe(cache_root: Path | None = None) -> Probe:
    """Find bwrap and make one sandbox with it, once per boot (the answer is kept in the cache)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Probe(False, "bubblewrap (`bwrap`) is not installed or not on PATH",
                     "install it (Debian package `bubblewrap`)")
    if cache_root is None:
        from reprobuild.toolchains.cache import default_cache_root

        cache_root = default_cache_root()
    st = os.stat(bwrap)
    key = {"boot": boot_id(), "euid": os.geteuid(), "bwrap": bwrap, "bwrap_mtime": st.st_mtime_ns, "format": 1}
    record = cache_root / "sandbox" / f"probe-{os.geteuid()}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(record.read_text())
        if data["key"] == key:
            return Probe(data["ok"], data["detail"], data["fix"], data["mode"], bwrap)
    found = _try(bwrap)
    with contextlib.suppress(OSError):
        atomic_write_text(record, json.dumps({"key": key, "ok": found.ok, "detail": found.detail, "fix": found.fix,
                                              "mode": found.mode}, sort_keys=True) + "\n")
    return found


def _try(bwrap: str) -> Probe:
    version = proc.run([bwrap, "--version"], check=False).stdout.strip() or "bubblewrap"
    base = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    done = proc.run([*base, "--unshare-user", "--uid", "1000", "--gid", "1000", "true"], check=False,
                    env={"PATH": HOST_PATH})
    if done.returncode == 0:
        return Probe(True, f"{version}, user namespaces", mode="userns", bwrap=bwrap)
    why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    if os.geteuid() == 0:
        as_root = proc.run([*base, "--cap-drop", "ALL", "true"], check=False, env={"PATH": HOST_PATH})
        if as_root.returncode == 0:
            return Probe(True, f"{version}, as root without user namespaces ({why[0]})", mode="root", bwrap=bwrap)
    return Probe(False, f"bubblewrap cannot make a sandbox here: {why[0]}", USERNS_FIX)


class SandboxBackend:
    name = "sandbox"
    hermetic = True
    builds_images = True  # its roots are the builder images' content

    def __init__(self, lock: Lock | None = None, cache_root: Path | None = None, builders_dir: Path | None = None,
                 found: Probe | None = None) -> None:
        from reprobuild.backends.images.spec import default_builders_dir
        from reprobuild.toolchains.cache import default_cache_root

        self.cache_root = cache_root or default_cache_root()
        self.found = found or probe(self.cache_root)
        if not self.found.ok:
            raise EnvironmentFailure(f"the sandbox backend is not available: {self.found.detail}",
                                     f"{self.found.fix}; or use `--backend docker` or `--backend local`")
        self.lock = lock
        self.roots = RootStore(self.cache_root, builders_dir or default_builders_dir(
            Path(lock.path) if lock is not None else None), self._pinning_lock)
        self._roots: dict[ImageRef, Root] = {}
        self._roots_guard = threading.Lock()  # parallel steps asking for one root make it once
        self._guard = threading.Lock()
        self._cancelled = False
        self._hosts: Path | None = None

    def _pinning_lock(self) -> Lock:
        """The lock whose `images:` entries pin the debootstrapped roots (given, never guessed)."""
        if self.lock is None:
            raise BadInput("the `debian` root is pinned by a lock's `images:` section, and the sandbox backend was "
                           "given no lock", "pass `--lock FILE` (or build in the repository)")
        return self.lock

    def _root(self, image: ImageRef) -> Root:
        with self._roots_guard:
            if image not in self._roots:
                self._roots[image] = self.roots.ensure(image)
                self._hosts = self._hosts or self.roots.hosts_file()
            return self._roots[image]

    def ensure_image(self, image: ImageRef) -> str:
        return self._root(image).image_id

    def supports(self, variation: str) -> bool:
        if variation == "fileordering":
            return disorder.unavailable() is None
        if variation == "user_group":
            return self.found.mode == "userns"
        if variation == "num_cpus":
            return shutil.which("taskset") is not None
        if variation == "domain_host":
            return all(shutil.which(t) for t in ("unshare", "domainname"))
        return variation in VARIATIONS

    def remove_leftovers(self) -> list[leftovers.Leftover]:
        """Remove the private directories and memory cgroups of builds whose owner is dead on this host (no
        engine is asked)."""
        return [*leftovers.sweep(None), *remove_dead_cgroups()]

    def cancel(self) -> None:
        """End every running step (killing bwrap ends its whole sandbox) and refuse new ones."""
        self._cancelled = True
        proc.kill_running()

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        root = self._root(spec.image)
        assert self._hosts is not None
        p = spec.perturb
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            mounts: list[Mount] = []
            for m in spec.mounts:
                if m.copy:  # a private, writable copy of the tree, removed afterwards
                    copy = leftovers.private_dir("reprobuild-copy-")
                    stack.callback(remove_tree, copy)
                    os.chmod(copy, 0o711)  # disorderfs reads as the build user, by path
                    shutil.copytree(m.source, copy / "tree", symlinks=True)
                    m = Mount(copy / "tree", m.target, read_only=False)
                if p.fileordering and m.target == p.src:
                    m = Mount(stack.enter_context(disorder.reversed_view(m.source)), m.target, m.read_only)
                mounts.append(m)
            if spec.image.toolchain_root is not None and not any(m.target == TOOLCHAIN for m in mounts):
                mounts.append(Mount(spec.image.toolchain_root, TOOLCHAIN))
            unapplied = self._unapplied(spec, root.spec)
            variables = {**spec.env, **p.variation_env()}
            if p.faketime is not None and "time" not in unapplied:
                variables["LD_PRELOAD"] = ROOT_FAKETIME  # the build command only: bwrap itself is not preloaded
            argv = self._wrap(spec, self._bwrap(spec, variables, root.path, self._hosts, mounts))
            cgroup = stack.enter_context(_memory_cgroup(spec.memory_bytes))
            if cgroup is not None:
                argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs"), *argv]
            with self._guard:
                if self._cancelled:
                    raise KeyboardInterrupt  # interrupted while this step was being set up
            try:
                done = proc.run(argv, env={"PATH": HOST_PATH}, check=False, timeout=spec.timeout, umask=p.umask,
                                on_line=on_line or (lambda line: None))
            except EnvironmentFailure as exc:
                if "timed out" in exc.message:
                    raise EnvironmentFailure(f"step `{spec.label}` timed out after {spec.timeout:.0f} s and was "
                                             f"killed: {' '.join(spec.argv)}") from None
                raise
            if self._cancelled:
                raise KeyboardInterrupt  # killed by `cancel`: not a failure of the step
            if cgroup is not None and spec.memory_bytes is not None and _oom_killed(cgroup):
                raise EnvironmentFailure(f"step `{spec.label}` ran out of memory "
                                         f"(limit {spec.memory_bytes // (1 << 20)} MiB) and was killed")
            return RunResult(done.returncode, done.stdout, time.monotonic() - start, hermetic=True,
                             unapplied=unapplied)

    def _bwrap(self, spec: RunSpec, env: dict[str, str], root: Path, hosts: Path, mounts: list[Mount]) -> list[str]:
        p = spec.perturb
        argv = [self.found.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        if self.found.mode == "userns":
            argv += ["--unshare-user", "--uid", str(p.uid), "--gid", str(p.gid)]
        argv += ["--cap-drop", "ALL", "--hostname", p.hostname]
        if spec.network:
            argv.append("--share-net")
        argv.append("--clearenv")
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += ["--ro-bind", str(root), "/", "--ro-bind", str(hosts), "/etc/hosts", "--proc", "/proc",
                 "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/rb"]
        targets = {m.target for m in mounts}
        if TMP not in targets:
            argv += ["--perms", "1777", "--tmpfs", TMP]
        if HOME not in targets:  # (verify's `home` variation moves it)
            argv += ["--perms", "0755", "--tmpfs", p.home]
        for m in sorted(mounts, key=lambda m: m.target.rstrip("/").count("/")):  # parents before children
            argv += ["--ro-bind" if m.read_only else "--bind", str(m.source), m.target]
        return [*argv, "--remount-ro", "/rb", "--chdir", spec.workdir, "--", *spec.argv]

    @staticmethod
    def _wrap(spec: RunSpec, argv: list[str]) -> list[str]:
        """Helpers around bwrap on the host: the CPUs (num_cpus) and the NIS domain name (domain_host), which a
        new UTS namespace copies from the one it is made in."""
        p = spec.perturb
        if p.domainname:
            script = 'domainname "$0" && exec "$@"'
            unshare = ["unshare", "--uts"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--uts"]
            argv = [*unshare, "--", "/bin/sh", "-c", script, p.domainname, *argv]
        if p.cpus is not None:
            argv = ["taskset", "-c", ",".join(str(i) for i in range(p.cpus)), *argv]
        return argv

    @staticmethod
    def _unapplied(spec: RunSpec, image: ImageSpec) -> dict[str, str]:
        """What the root cannot vary: the clock without libfaketime, a locale it does not carry."""
        p, where = spec.perturb, f"step `{spec.label}`: root `{image.name}`"
        found = {}
        if p.faketime is not None and "libfaketime" not in image.packages:
            found["time"] = f"{where} has no libfaketime to move the clock"
        if p.locale is not None and p.locale not in BUILTIN_LOCALES and p.locale not in image.locales:
            found["locales"] = f"{where} has no {p.locale} locale (builders/{image.name}/image.yaml `locales`)"
        return found


# --- the memory limit ----------------------------------------------------------------------------

CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def _memory_cgroup(limit: int | None) -> Iterator[Path | None]:
    """A memory cgroup of the step's own (v1 or v2) holding `limit` bytes, when this user may make one;
    None otherwise (no limit asked, or an unprivileged user: the step then runs without one)."""
    if limit is None:
        yield None
        return
    v2 = (CGROUP_V2 / "cgroup.controllers").is_file() and "memory" in (CGROUP_V2 / "cgroup.controllers").read_text()
    parent = CGROUP_V2 if v2 else CGROUP_V1
    me = leftovers.this_process()  # the name says whose it is: a killed build's is removed by the next one
    group = parent / "reprobuild-sandbox" / f"{me.pid}-{me.started}-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir(parents=True)
        files = {"memory.max": limit, "memory.swap.max": 0} if v2 else {
            "memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit}
        for name, value in files.items():
            with contextlib.suppress(FileNotFoundError):
                (group / name).write_text(str(value))
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        yield None
        return
    try:
        yield group
    finally:
        for _ in range(50):  # the sandbox's processes are gone; the kernel may take a moment to say so
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def remove_dead_cgroups(parents: tuple[Path, ...] = (CGROUP_V2, CGROUP_V1)) -> list[leftovers.Leftover]:
    """rmdir the step cgroups (named `PID-STARTTIME-ID`) whose owner process is gone: a build killed outright
    leaves its step's empty cgroup behind. A live owner's are never touched (one may not hold its process yet);
    the kernel refuses to remove a cgroup that still holds processes."""
    removed = []
    for parent in parents:
        try:
            groups = sorted((parent / "reprobuild-sandbox").iterdir())
        except OSError:
            continue
        for group in groups:
            pid, _, rest = group.name.partition("-")
            started, _, _ = rest.partition("-")
            if not (pid.isdigit() and started.isdigit()) or leftovers.start_time(int(pid)) == int(started):
                continue  # not ours to judge, or its owner runs
            with contextlib.suppress(OSError):
                group.rmdir()
                removed.append(leftovers.Leftover("cgroup", str(group), leftovers.DEAD))
    return removed


def _oom_killed(group: Path) -> bool:
    for name, word in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
        with contextlib.suppress(OSError, ValueError):
            for line in (group / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == word and int(value) > 0:
                    return True
    return False
