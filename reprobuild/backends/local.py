"""The local backend: the same steps on the host, in a scratch build root, with the same environment.

It cannot take the network away or make the root filesystem read-only, so its results are recorded
as `"hermetic": false`. Container paths in the spec are mapped to host paths by prefix. Every step gets a
scratch root of its own, seen at one fixed path (`<tmp>/reprobuild-local/root`) through a private mount
namespace (bubblewrap binds it there for that step only), so a path a build sees (`pwd`, `$HOME`, `$OUT`) is
the same on every run, as it is in a container, and any number of steps, builds and users run at once: no
lock. Where no mount namespace can be made, the step sees its scratch root at its own path instead.
A `PINNED` target (the Python environment, whose path ends up in outputs) is not mapped: it is bound at exactly
that path in the step's mount namespace (where none can be made, it is made a symlink to its source for the
step, and such steps take turns under a lock), so local
and container outputs are the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from reprobuild import proc
from reprobuild.backends import (
    GID,
    OUT,
    PINNED,
    TMP,
    TOOLCHAIN,
    UID,
    ImageRef,
    Mount,
    Perturbation,
    RunResult,
    RunSpec,
    disorder,
    leftovers,
)
from reprobuild.errors import EnvironmentFailure
from reprobuild.fsutil import link_tree, others_can_reach, remove_tree
from reprobuild.progress import say

if TYPE_CHECKING:
    from reprobuild.config.model import Lock

log = logging.getLogger("reprobuild.backends.local")

# Variations this backend can apply, and what each needs on the host.
_NEEDS: dict[str, tuple[str, ...]] = {
    "build_path": (), "timezone": (), "locales": (), "umask": (), "environment": (), "home": (), "cache": (),
    "num_cpus": ("taskset",), "user_group": ("setpriv",), "domain_host": ("unshare", "hostname"),
    "time": (), "exec_path": (), "fileordering": (),
}
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")


def faketime_library() -> str | None:
    return next((lib for lib in FAKETIME_LIBS if os.path.exists(lib)), None)


class LocalBackend:
    name = "local"
    hermetic = False
    builds_images = False  # the host is the image

    def __init__(self, scratch_base: Path | None = None, lock: Lock | None = None) -> None:
        self.scratch_base = scratch_base or Path(tempfile.gettempdir()) / "reprobuild-local"
        self._lock = lock  # its `images:` pins are checked against the host's packages, once per image
        self._checked: set[str] = set()
        self._checking = threading.Lock()
        self._cancelled = False
        self._binder: list[str] | None = None  # how a step gets the fixed path: bwrap's argv, or [] (none)
        self._binder_guard = threading.Lock()

    def supports(self, variation: str) -> bool:
        if variation not in _NEEDS:
            return False
        if variation in ("user_group", "domain_host") and os.geteuid() != 0:
            return False
        if variation == "time" and faketime_library() is None:
            return False
        if variation == "fileordering" and disorder.unavailable() is not None:
            return False
        return all(shutil.which(tool) for tool in _NEEDS[variation])

    def ensure_image(self, image: ImageRef) -> str:
        with self._checking:
            if self._lock is not None and image.name not in self._checked:
                self._checked.add(image.name)
                _check_host_packages(self._lock, image.name)
        return f"local:{image.name}"  # the host is the image

    def remove_leftovers(self) -> list[leftovers.Leftover]:
        """Remove the private directories of builds whose owner is dead on this host (no engine is asked)."""
        return leftovers.sweep(None)

    def cancel(self) -> None:
        self._cancelled = True
        proc.kill_running()

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        # A scratch root of the step's own, seen at one fixed path (the build_path variation moves only the
        # source inside it) where a private mount namespace can be made.
        if self._cancelled:
            raise KeyboardInterrupt  # the build was interrupted
        fixed = self._fixed()
        private = leftovers.private_dir("reprobuild-local-")
        os.chmod(private, 0o755)
        try:
            return self._run_in(private, fixed or private, spec, on_line)
        finally:
            remove_tree(private)

    def _fixed(self) -> Path | None:
        """The fixed path steps see their scratch root at, or None where no mount namespace can be made."""
        # Only a mount point, never written: any user's steps bind over it. (Not `build`, which an older
        # reprobuild removed and remade under its lock: removing a mount point detaches every bind on it.)
        fixed = self.scratch_base / "root"
        with contextlib.suppress(OSError):
            fixed.mkdir(parents=True, exist_ok=True)
            if self.scratch_base.stat().st_uid == os.geteuid():
                os.chmod(self.scratch_base, 0o1777)
        with self._binder_guard:
            if self._binder is None:
                from reprobuild.backends.sandbox import probe

                found = probe()
                self._binder = [found.bwrap] if found.ok else []
        return fixed if self._binder and fixed.is_dir() else None

    def _run_in(self, scratch: Path, seen: Path, spec: RunSpec, on_line: Callable[[str], None] | None) -> RunResult:
        """Lay out the step's scratch root at `scratch`; the step sees it at `seen`."""
        p = spec.perturb
        home = scratch / Path(p.home).name  # verify's `home` variation: another path, as in a container
        for sub in (home, scratch / "tmp"):
            sub.mkdir(parents=True)
            os.chmod(sub, 0o777)
        mounts: list[Mount] = []
        hand_back: list[tuple[Path, Path]] = []
        with contextlib.ExitStack() as views:
            for m in spec.mounts:
                disordered = p.fileordering and m.target == p.src
                if m.target == OUT and not m.read_only:
                    # Outputs are written at a fixed path (as $OUT is in a container), then handed back.
                    fixed = scratch / "out"
                    fixed.mkdir()
                    os.chmod(fixed, 0o777)
                    hand_back.append((fixed, m.source))
                    m = Mount(fixed, m.target, read_only=False)
                elif m.copy:
                    name = m.target.strip("/").replace("/", "_")
                    copy = scratch / "work" / name
                    # fileordering: the copy lies underneath and the disorderfs view takes its place, so the
                    # build's own paths (`pwd`) are the control's.
                    tree = scratch / "under" / name if disordered else copy
                    shutil.copytree(m.source, tree, symlinks=True)
                    _open_up(tree)
                    if disordered:
                        copy.mkdir(parents=True)
                        views.enter_context(disorder.reversed_view(tree, at=copy))
                    m = Mount(copy, m.target, read_only=False)
                mounts.append(m)
            mounts += [Mount(home, p.home, False), Mount(scratch / "tmp", TMP, False)]
            if spec.image.toolchain_root is not None and not any(m.target == TOOLCHAIN for m in mounts):
                mounts.append(Mount(spec.image.toolchain_root, TOOLCHAIN))
            if _as_another_user(p):
                mounts = [_reachable(m, scratch / "ro" / str(i)) for i, m in enumerate(mounts)]
            if p.fileordering:  # a read-only source: a view of it (of the user's reachable copy, if any)
                mounts = [Mount(views.enter_context(disorder.reversed_view(m.source)), m.target)
                          if m.target == p.src and not m.copy and m.read_only else m for m in mounts]
            pinned: list[Mount] = []
            for i, m in enumerate(mounts):
                if m.target in PINNED:
                    if seen != scratch:  # the step's own mount namespace: bound there, no lock, nothing on the host
                        pinned.append(m)
                    else:
                        views.enter_context(_pinned(Path(m.target), m.source))
                    mounts[i] = Mount(Path(m.target), m.target, m.read_only)
            if seen != scratch:
                mounts = [Mount(seen / m.source.relative_to(scratch), m.target, m.read_only)
                          if m.source.is_relative_to(scratch) else m for m in mounts]
            return self._run_mounted(spec, mounts, hand_back, on_line, (scratch, seen), pinned)

    def _run_mounted(self, spec: RunSpec, mounts: list[Mount], hand_back: list[tuple[Path, Path]],
                     on_line: Callable[[str], None] | None, scratch: tuple[Path, Path],
                     pinned: list[Mount]) -> RunResult:
        p = spec.perturb
        mapping = [(m.target, str(m.source)) for m in mounts]

        def host(value: str) -> str:
            return _map_paths(value, mapping)

        env = {k: host(v) for k, v in spec.env.items()} | p.variation_env()
        argv = [host(a) for a in spec.argv]
        cwd = Path(host(spec.workdir))
        argv = self._wrap(argv, spec)
        unapplied = {"time": "libfaketime is not installed on this host (Debian package `libfaketime`)"
                     } if p.faketime is not None and faketime_library() is None else {}
        laid_out, seen = scratch
        bound = laid_out != seen and bool(self._binder)
        if bound and self._binder:  # the step's own mount namespace: its scratch root at the fixed path
            # (bwrap exports PWD: `env -u` takes it out again, so the environment is exactly the spec's)
            binds = [a for m in pinned for a in ("--ro-bind" if m.read_only else "--bind", str(m.source), m.target)]
            argv = [*self._binder, "--dev-bind", "/", "/", "--bind", str(laid_out), str(seen), *binds,
                    "--die-with-parent", "--chdir", str(cwd), "--", "env", "-u", "PWD", *argv]
        start = time.monotonic()
        done = proc.run(argv, env=env, cwd=None if bound else cwd, check=False, timeout=spec.timeout, umask=p.umask,
                        on_line=on_line or (lambda line: None))
        for fixed, real in hand_back:
            for entry in sorted(fixed.iterdir()):
                shutil.move(str(entry), str(real / entry.name))
        return RunResult(done.returncode, done.stdout, time.monotonic() - start, hermetic=False, unapplied=unapplied)

    @staticmethod
    def _wrap(argv: list[str], spec: RunSpec) -> list[str]:
        """Apply the variations that need a helper program around the command.

        libfaketime (the time variation) must reach the build command only, not the helpers around it
        (it breaks when the helper changes user), so it is preloaded by `env` innermost.
        """
        p = spec.perturb
        default = type(p)()
        library = faketime_library() if p.faketime is not None else None
        if library is not None:
            argv = ["env", f"LD_PRELOAD={library}", *argv]
        if p.cpus is not None:
            argv = ["taskset", "-c", ",".join(str(i) for i in range(p.cpus)), *argv]
        if _as_another_user(p):
            argv = ["setpriv", f"--reuid={p.uid}", f"--regid={p.gid}", "--clear-groups", *argv]
        if (p.hostname, p.domainname) != (default.hostname, default.domainname) and os.geteuid() == 0:
            script = 'hostname "$0" && { [ -z "$1" ] || domainname "$1" 2>/dev/null || true; } && shift && exec "$@"'
            argv = ["unshare", "--uts", "--", "/bin/sh", "-c", script, p.hostname, p.domainname, *argv]
        return argv


def _check_host_packages(lock: Lock, image: str) -> None:
    """Warn when the host lacks packages the lock pins for `image` (the host stands in for it)."""
    from reprobuild.backends import hostpackages
    from reprobuild.backends.images.spec import parse_image_locks

    pinned = parse_image_locks(lock).get(image)
    host = hostpackages.installed_packages() if pinned is not None else None
    if pinned is None or host is None:
        return
    difference = hostpackages.compare(image, pinned.packages, host)
    if (warning := difference.warning()) is not None:
        say(warning)
    if (versions := difference.versions()) is not None:
        log.debug("%s", versions)


def _as_another_user(p: Perturbation) -> bool:
    """The user_group variation: the step runs as another user (only root can switch)."""
    return (p.uid, p.gid) != (UID, GID) and os.geteuid() == 0


def _reachable(m: Mount, view: Path) -> Mount:
    """The user_group variation runs the build as another user, who cannot traverse a private directory
    such as root's home, where the toolchain and build caches usually are. Such a mount is given to that
    user as a tree of hard links in the scratch root (same files, no copy; on another filesystem, a copy).
    A writable one (a build cache) gets directories the user may add entries to; what it adds is dropped
    with the scratch root, and the files it shares stay the owner's, read-only to the build."""
    if others_can_reach(m.source) and (m.read_only or os.stat(m.source).st_mode & 0o002):
        return m
    view.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(view.parent, 0o755)
    link_tree(m.source, view)
    if not m.read_only:
        _open_up(view)
    return Mount(view, m.target, read_only=m.read_only)


@contextlib.contextmanager
def _pinned(path: Path, source: Path) -> Iterator[None]:
    """`path` (a PINNED target) is a symlink to `source` for one run; runs of all processes take turns."""
    with FileLock(f"{path}.lock", mode=0o666):
        _unpin(path)
        path.symlink_to(source, target_is_directory=True)
        try:
            yield
        finally:
            _unpin(path)


def _unpin(path: Path) -> None:
    try:
        if path.is_symlink():
            path.unlink()
            return
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # the empty mount point a step bound in its own namespace left
            return
    except PermissionError:
        pass
    if os.path.lexists(path):
        raise EnvironmentFailure(f"{path} exists and is not a link reprobuild may replace (the local backend puts "
                                 "the locked Python environment there for each run, so outputs name that path)",
                                 f"remove {path} (another user's build may have left it), or use `--backend docker`")


def _open_up(root: Path) -> None:
    """A private copy the (possibly unprivileged) build user may write in."""
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o777)


def _map_paths(value: str, mapping: list[tuple[str, str]]) -> str:
    """Replace container path prefixes (at the start or after `:`, `=`, a space, a comma or a quote) with
    host paths, in one pass, so a replacement is never itself rewritten."""
    table = dict(mapping)
    alternatives = "|".join(re.escape(t) for t in sorted(table, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^:= ,'\"])({alternatives})(?=$|[/:= ,'\"])")
    return pattern.sub(lambda m: table[m.group(1)], value)
