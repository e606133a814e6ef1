"""verify's `fileordering` variation: the build reads its source through disorderfs (as reprotest does).

disorderfs is a FUSE overlay that hands out directory entries in reverse order; a build whose output
follows `readdir` order (an unsorted glob, `ls -U`, `find`) then differs. Both backends use the same
host-side view: the local backend points the build at it, the Docker backend bind-mounts it. The view is
made with `--multi-user=yes` so a build user other than the invoker (a container's uid 1000, the
user_group variation) can read it, which needs root; without root, disorderfs or /dev/fuse the variation
is reported as skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from reprobuild import proc
from reprobuild.backends import leftovers
from reprobuild.errors import EnvironmentFailure
from reprobuild.fsutil import link_tree, others_can_reach, remove_tree


def unavailable() -> str | None:
    """Why the variation cannot be applied on this host, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (disorderfs --multi-user, for a build user other than the invoker)"
    missing = [tool for tool in ("disorderfs", "fusermount") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian packages `disorderfs`, `fuse3`)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this host"
    return None


@contextlib.contextmanager
def reversed_view(source: Path, at: Path | None = None, in_container: bool = False) -> Iterator[Path]:
    """`source` seen through disorderfs (directory entries reversed), at `at` (an empty directory) or at a
    new temporary one (`in_container`: a container mounts it); unmounted when the block ends, also on errors.

    disorderfs reads the tree with the build user's rights, by path (a bind mount would not): a source the
    build user cannot reach (under root's home, or a private temporary directory) is seen through a tree of
    hard links made beside the view. Never put a view of a tree that must survive under a directory that is
    removed afterwards: a view that could not be unmounted would be removed *through*.
    """
    base = leftovers.private_dir("reprobuild-disorder-", in_container=in_container)
    os.chmod(base, 0o755)
    try:
        if not others_can_reach(source):
            link_tree(source, base / "tree")
            source = base / "tree"
        mountpoint = at if at is not None else base / "view"
        mountpoint.mkdir(exist_ok=True)
        os.chmod(mountpoint, 0o755)
        done = proc.run(["disorderfs", "--reverse-dirents=yes", "--multi-user=yes", "--quiet",
                         str(source), str(mountpoint)], check=False)
        if done.returncode != 0:
            raise EnvironmentFailure(f"disorderfs could not mount {source}: {(done.stderr or done.stdout).strip()}",
                                     "check /dev/fuse, or leave the variation out: --vary=-fileordering")
        try:
            yield mountpoint
        finally:
            _unmount(mountpoint)
    finally:
        if not os.path.ismount(base / "view"):  # never remove through a view that is still mounted
            remove_tree(base)


def _unmount(mountpoint: Path) -> None:
    """fusermount -u; a mount still busy for a moment (a container being torn down) is retried, then
    detached lazily so that nothing is left mounted."""
    for _ in range(20):
        if proc.run(["fusermount", "-u", "-q", str(mountpoint)], check=False).returncode == 0:
            return
        time.sleep(0.1)
    proc.run(["fusermount", "-u", "-z", "-q", str(mountpoint)], check=False)
