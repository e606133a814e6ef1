"""The local backend: the same steps on the host, in a scratch build root, with the same environment.

It cannot take the network away or make the root filesystem read-only, so its results are recorded
as `"hermetic": false`. Container paths in the spec are mapped to host paths by prefix.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reprobuild import proc
from reprobuild.backends import HOME, TMP, TOOLCHAIN, ImageRef, Mount, RunResult, RunSpec
from reprobuild.fsutil import remove_tree


class LocalBackend:
    name = "local"
    hermetic = False

    def ensure_image(self, image: ImageRef) -> str:
        return f"local:{image.name}"  # the host is the image

    def run(self, spec: RunSpec, on_line: Callable[[str], None] | None = None) -> RunResult:
        scratch = Path(tempfile.mkdtemp(prefix="reprobuild-local-"))
        try:
            (scratch / "home").mkdir()
            (scratch / "tmp").mkdir()
            mounts = [*list(spec.mounts), Mount(scratch / "home", HOME, False), Mount(scratch / "tmp", TMP, False)]
            if spec.image.toolchain_root is not None and not any(m.target == TOOLCHAIN for m in mounts):
                mounts.append(Mount(spec.image.toolchain_root, TOOLCHAIN))
            mapping = sorted(((m.target, str(m.source)) for m in mounts), key=lambda t: -len(t[0]))

            def host(value: str) -> str:
                return _map_paths(value, mapping)

            env = {k: host(v) for k, v in spec.env.items()}
            argv = [host(a) for a in spec.argv]
            cwd = Path(host(spec.workdir))
            start = time.monotonic()
            done = proc.run(argv, env=env, cwd=cwd, check=False, timeout=spec.timeout, umask=0o022,
                            on_line=on_line or (lambda line: None))
            return RunResult(done.returncode, done.stdout, time.monotonic() - start, hermetic=False)
        finally:
            remove_tree(scratch)


def _map_paths(value: str, mapping: list[tuple[str, str]]) -> str:
    """Replace container path prefixes (at the start or after `:`, `=`, a space, a comma or a quote) with
    host paths, in one pass, so a replacement is never itself rewritten."""
    table = dict(mapping)
    alternatives = "|".join(re.escape(t) for t in sorted(table, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^:= ,'\"])({alternatives})(?=$|[/:= ,'\"])")
    return pattern.sub(lambda m: table[m.group(1)], value)
