"""The paths `merge` reads and writes, from shard manifests nobody vouches for.

Every artifact path must be relative with no `..`, `.` or empty component, and no other artifact's
symbolic link may be a directory above it. Files are read and written through `fsutil`'s no-follow
helpers, so a link planted in a shard (or a parent that turned into one) cannot take a read or a
write outside the shard or the output dir.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from reprobuild.build.manifest import RESERVED, Artifact, link_artifact
from reprobuild.errors import BadInput, CheckFailed
from reprobuild.fsutil import (
    LinkInPath,
    copy_under,
    link_escapes,
    lstat_under,
    readlink_under,
    safe_relpath,
    sha256_under,
    symlink_under,
)


def check_artifact_paths(manifest: Path, artifacts: list[Artifact]) -> None:
    """BadInput naming the manifest and the path when any artifact path could leave the directory."""
    links = {a.path for a in artifacts if a.link is not None}
    for a in artifacts:
        problem = safe_relpath(a.path)
        if problem is None and a.path in RESERVED:
            problem = "a name reprobuild writes itself"
        if problem is None:
            parts = a.path.split("/")
            above = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None)
            if above is not None:
                problem = f"its parent `{above}` is a symbolic link"
        if problem is None and not re.fullmatch(r"0[0-7]{3}", a.mode):
            problem = f"mode {a.mode!r} is not an octal permission like \"0644\""
        if problem is None and a.link is not None:
            problem = _link_problem(a)
        if problem is not None:
            raise BadInput(f"{manifest}: artifact path {a.path!r} is refused: {problem}",
                           "a manifest lists plain relative paths inside its output dir")


def _link_problem(a: Artifact) -> str | None:
    assert a.link is not None
    if a != link_artifact(a.path, a.link):
        return "its recorded sha256, size or mode is not its link target's"
    problem = link_escapes(Path("/nonexistent-root"), a.path, a.link)
    return None if problem is None or "resolves outside" in problem else problem


def check_artifact_file(root: Path, a: Artifact) -> None:
    """CheckFailed unless root/a.path is what the manifest says (a file with its sha256, or the same link)."""
    try:
        st = lstat_under(root, a.path)
        if a.link is not None:
            same = stat.S_ISLNK(st.st_mode) and readlink_under(root, a.path) == a.link
            if same and link_escapes(root, a.path, a.link) is None:
                return
        elif stat.S_ISREG(st.st_mode):
            if sha256_under(root, a.path) == a.sha256:
                return
        elif not stat.S_ISLNK(st.st_mode):
            raise CheckFailed(f"{root}: {a.path} is listed in the manifest but is not a file")
    except FileNotFoundError:
        raise CheckFailed(f"{root}: {a.path} is listed in the manifest but missing") from None
    except LinkInPath as exc:
        raise CheckFailed(f"{root}: {a.path} is reached through a symbolic link ({exc}); refusing to read it") from None
    what = "link target" if a.link is not None else f"sha256 {a.sha256}"
    if a.link is None and stat.S_ISLNK(st.st_mode):
        what = "kind (it is a symbolic link, the manifest says a file)"
    raise CheckFailed(f"{root}: {a.path} does not match its recorded {what}; the output dir was modified after "
                      "the build")


def write_artifact(source: Path, staging: Path, a: Artifact) -> None:
    """Copy one checked artifact into staging: a new file (or link), no link followed on either side."""
    try:
        if a.link is not None:
            symlink_under(staging, a.path, a.link)
        elif copy_under(source, staging, a.path, int(a.mode, 8)) != a.sha256:
            raise CheckFailed(f"{source / a.path} changed while it was being merged")
    except LinkInPath as exc:
        raise CheckFailed(f"{source}: {a.path}: {exc}; refusing to merge through a symbolic link") from None
    except FileExistsError:
        raise CheckFailed(f"{a.path}: written twice while merging") from None
