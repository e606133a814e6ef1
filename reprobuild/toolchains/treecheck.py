"""The cheap check that an installed toolchain tree is still the one installed, run before every use.

At install, a fingerprint of every entry's path, kind, mode, size, mtime and inode is recorded in
entry.json (`stat_fingerprint`). Before a build uses the tree, the fingerprint is taken again (stat
calls only, no reads: about 0.1 s for a Go distribution); when it differs, the caller rehashes the
whole tree against `tree_sha256` and refuses the toolchain if the content changed. Appending to a
binary or adding a file to the standard library changes sizes, mtimes or the listing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

FINGERPRINT_KEY = "stat_fingerprint"


def fingerprint(tree: Path) -> str:
    """sha256 over (path, kind, mode, size, mtime_ns, inode) of every entry under tree, in sorted order."""
    h = hashlib.sha256()
    stack = [""]
    while stack:
        rel = stack.pop()
        base = tree / rel if rel else tree
        with os.scandir(base) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            path = f"{rel}/{entry.name}" if rel else entry.name
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            size = 0 if kind == "d" else st.st_size  # a directory's size changes with its listing, seen anyway
            h.update(f"{path}\0{kind}\0{st.st_mode:o}\0{size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
            if kind == "d":
                stack.append(path)
    return h.hexdigest()
