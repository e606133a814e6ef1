"""The `debootstrap` base: a Debian root filesystem from apt's own mirror, cleaned so two runs give the same tree.

    apt_mirror / mirror_url     the mirror apt is configured with (or the image's `mirror:`)
    mirror_state                sha256 of the mirror's signed suite index: same index, same versions
    debootstrap / clean_rootfs  make the tree (as root), compile locales, drop what differs between runs
    installed_versions          what dpkg says is installed: the pins of the lock's `images:` entry
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from reprobuild import proc
from reprobuild.backends.images.spec import ImageSpec
from reprobuild.errors import EnvironmentFailure
from reprobuild.fsutil import remove_tree
from reprobuild.progress import activity, say

# Files that record "today" while debootstrap runs (pwconv's password-change dates) get this
# date instead: bookworm's release day. Only used inside the image, never for output bytes.
DEBIAN_EPOCH = 1686355200


# --- the Debian mirror, from apt's own configuration ---------------------------------------------

def apt_mirror(suite: str, etc_apt: Path = Path("/etc/apt")) -> str:
    """The URI of the first enabled `deb` source serving `suite` with `main`, as apt is configured here."""
    for uri, suites, components in _apt_sources(etc_apt):
        if suite in suites and "main" in components:
            return uri
    raise EnvironmentFailure(
        f"apt has no source for Debian `{suite}` main in {etc_apt}/sources.list*",
        "add one, or set `mirror:` in builders/<image>/image.yaml (e.g. a dated snapshot archive)")


def _apt_sources(etc_apt: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    one_line = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", raw.split("#", 1)[0]).split()
            if len(line) >= 4 and line[0] == "deb":
                yield line[1].rstrip("/"), [line[2]], line[3:]
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw:
                    continue
                key, _, value = raw.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri.rstrip("/"), fields.get("suites", "").split(), fields.get("components", "").split()


def mirror_url(spec: ImageSpec) -> str:
    assert spec.suite is not None
    return apt_mirror(spec.suite) if spec.mirror == "apt" else spec.mirror


def mirror_state(spec: ImageSpec) -> str | None:
    """sha256 of the mirror's signed suite index (`dists/<suite>/InRelease`); None when it cannot be read.

    The same index means the same Packages files, so the same versions get installed.
    """
    import requests

    try:
        url = f"{mirror_url(spec).rstrip('/')}/dists/{spec.suite}/InRelease"
        if url.startswith("file://"):
            data = Path(url.removeprefix("file://")).read_bytes()
        else:
            with requests.get(url, timeout=(10, 30)) as resp:
                resp.raise_for_status()
                data = resp.content
    except (OSError, requests.RequestException, EnvironmentFailure):
        return None
    return hashlib.sha256(data).hexdigest()


# --- the debian rootfs ---------------------------------------------------------------------------

def debootstrap(spec: ImageSpec, target: Path) -> None:
    """`debootstrap --variant=minbase --include=...` into `target` (needs root), then clean it."""
    assert spec.suite is not None and spec.variant is not None
    proc.which("debootstrap", "debootstrap")
    if os.geteuid() != 0:
        raise EnvironmentFailure("making the `debian` builder image runs debootstrap, which needs root",
                                 "run `reprobuild lock`/the build as root once; the image is reused afterwards")
    mirror = mirror_url(spec)
    say(f"image {spec.name}: debootstrap {spec.suite} ({spec.variant}, {len(spec.packages)} packages); "
        "one to several minutes, depending on the mirror")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "http_proxy", "https_proxy", "no_proxy",
                                                         "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")}
    env.update({"LC_ALL": "C", "SOURCE_DATE_EPOCH": str(DEBIAN_EPOCH), "DEBIAN_FRONTEND": "noninteractive"})
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    argv = ["debootstrap", f"--variant={spec.variant}", "--components=main",
            f"--include={','.join(spec.packages)}", spec.suite, str(target), mirror]
    tail: list[str] = []

    with activity(f"image {spec.name}: debootstrap") as progress:
        def keep(line: str) -> None:
            tail.append(line)
            del tail[:-40]
            progress.note(line)

        done = proc.run(argv, env=env, check=False, umask=0o022, on_line=keep)
    if done.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else "\n".join(tail)
        raise EnvironmentFailure(f"debootstrap failed (exit {done.returncode}) for image `{spec.name}`:\n{detail}",
                                 "check the mirror (apt's sources or `mirror:` in builders/"
                                 f"{spec.name}/image.yaml) and the network")
    for loc in spec.locales:
        lang = loc.split(".", 1)[0]
        # --no-archive: one directory per locale, the same bytes every time (an archive is a hash table).
        proc.run(["chroot", str(target), "localedef", "--no-archive", "-c", "-i", lang, "-f", "UTF-8", loc],
                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}, umask=0o022)
    clean_rootfs(target)


def clean_rootfs(root: Path) -> None:
    """Remove or fix the files that differ between two debootstrap runs (or name the host)."""
    for rel in ("dev", "var/log", "var/cache/apt", "var/lib/apt/lists", "run", "tmp", "proc", "sys"):
        base = root / rel
        if base.is_dir():
            for path in sorted(base.rglob("*"), reverse=True):
                if path.is_symlink() or not path.is_dir():
                    path.unlink()
    for rel in ("var/cache/ldconfig/aux-cache", "etc/resolv.conf", "etc/machine-id", "var/lib/dbus/machine-id"):
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
    for pattern in ("var/cache/debconf/*-old", "var/lib/dpkg/*-old", "etc/*-"):
        for path in root.glob(pattern):
            path.unlink()
    # Byte-compiled Python differs from run to run (marshal's reference flags, mtime vs hash
    # headers); Python compiles from source when the .pyc is missing.
    for cache_dir in sorted((root / "usr").rglob("__pycache__")):
        remove_tree(cache_dir)
    (root / "etc" / "hostname").write_text("reprobuild\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost reprobuild\n::1\tlocalhost ip6-localhost\n")
    days = str(DEBIAN_EPOCH // 86400)
    for rel in ("etc/shadow", "etc/gshadow"):
        path = root / rel
        if rel == "etc/shadow" and path.exists():
            lines = []
            for line in path.read_text().splitlines():
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    parts[2] = days
                lines.append(":".join(parts))
            path.write_text("\n".join(lines) + "\n")


def unmount_under(root: Path) -> None:
    """Unmount whatever is mounted below `root` (deepest first), so removing the tree stays inside it."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        proc.run(["umount", "-l", point], check=False)


def installed_versions(root: Path) -> dict[str, str]:
    """Every package dpkg says is installed in the rootfs, with its exact version."""
    done = proc.run(["dpkg-query", f"--admindir={root / 'var/lib/dpkg'}", "-W",
                     "-f=${db:Status-Abbrev}\\t${Package}\\t${Version}\\n"])
    versions: dict[str, str] = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("\t")
        if status.strip() == "ii":
            name, _, version = rest.partition("\t")
            versions[name] = version
    return versions
