"""Getting pinned files: HTTP(S) with retries and mirrors, or the user's own pip / apt configuration.

Every path hashes the bytes and checks sha256 and size before the caller may extract anything.
Partial files live in a private temporary directory, never under their final name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reprobuild import proc
from reprobuild.config.model import PinnedFile
from reprobuild.errors import CommandFailed, DownloadError, EnvironmentFailure, IntegrityError
from reprobuild.fsutil import CHUNK, sha256_file
from reprobuild.progress import say, transfer

WHEEL_PLATFORM_TAGS = {"linux-amd64": "manylinux_2_17_x86_64", "linux-arm64": "manylinux_2_17_aarch64"}
DEB_ARCH = {"linux-amd64": "amd64", "linux-arm64": "arm64"}


def _timeouts() -> tuple[float, float]:
    connect = float(os.environ.get("REPROBUILD_CONNECT_TIMEOUT", "10"))
    read = float(os.environ.get("REPROBUILD_READ_TIMEOUT", "30"))
    return connect, read


def _retries() -> int:
    """Attempts per URL: REPROBUILD_RETRIES (default 3); 0 or less still makes one attempt."""
    try:
        return max(1, int(os.environ.get("REPROBUILD_RETRIES", "3")))
    except ValueError:
        return 3


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


class _NotThere(DownloadError):
    """The server answered, and the answer will not change on a retry (404, 403, 410...): next mirror."""


def fetch_url(pinned: PinnedFile, dest: Path) -> None:
    """Download `pinned` to `dest`, trying each URL in order with retries and backoff."""
    errors: list[str] = []
    wrong_bytes = 0  # URLs that served bytes other than the pinned ones
    for url in pinned.urls:
        for attempt in range(1, _retries() + 1):
            try:
                _download_once(url, pinned, dest)
                return
            except (IntegrityError, _NotThere) as exc:
                # Wrong bytes or a definite "no": a retry would get the same answer; try the next mirror.
                errors.append(f"{url}: {exc.message}")
                wrong_bytes += isinstance(exc, IntegrityError)
                break
            except DownloadError as exc:
                errors.append(f"{url} (attempt {attempt}): {exc.message}")
                if attempt < _retries():
                    time.sleep(min(0.5 * 2 ** (attempt - 1), 8))
    detail = "\n".join("    " + e for e in errors)
    cls = IntegrityError if wrong_bytes and wrong_bytes == len(pinned.urls) else DownloadError
    hint = ("every source served other bytes than the lock pins (tampered, truncated or replaced); nothing was "
            "installed: check the sources, or get the pinned file another way and run "
            f"`reprobuild toolchain import {pinned.name}`") if cls is IntegrityError else (
            f"check the network, or get the file another way and run `reprobuild toolchain import {pinned.name}`")
    raise cls(f"could not download {pinned.name} (sha256 {pinned.sha256}):\n{detail}", hint)


def _download_once(url: str, pinned: PinnedFile, dest: Path) -> None:
    # Here, not at the top: a warm `toolchain fetch` never needs them (~100 ms to import).
    import requests
    import urllib3

    if url.startswith("file://"):
        shutil.copyfile(url[len("file://"):], dest)
        check_file(dest, pinned, url)
        return
    h = hashlib.sha256()
    size = 0
    try:
        with requests.get(url, stream=True, timeout=_timeouts(), allow_redirects=True) as resp:
            if resp.status_code != 200:
                permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429)
                raise (_NotThere if permanent else DownloadError)(f"HTTP {resp.status_code} {resp.reason}")
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
        raise DownloadError(f"timed out after {_timeouts()[1]:g} s without data (server stalled)") from None
    except requests.RequestException as exc:
        # requests reports a read timeout in the middle of the body as a ConnectionError around urllib3's.
        if exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError):
            raise DownloadError(f"timed out after {_timeouts()[1]:g} s without data mid-body "
                                "(server stalled)") from None
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            raise DownloadError(f"the connection closed before the end of the body: {_innermost(exc)}") from None
        raise DownloadError(f"{type(exc).__name__}: {exc}") from None
    if pinned.size is not None and size != pinned.size:
        raise IntegrityError(f"got {size} bytes, the lock pins {pinned.size} (truncated?)")
    if h.hexdigest() != pinned.sha256:
        raise IntegrityError(f"sha256 {h.hexdigest()}, the lock pins {pinned.sha256}")


def _innermost(exc: BaseException) -> str:
    """The root cause of a wrapped requests/urllib3 error (`IncompleteRead(1000 bytes read, ...)`)."""
    while exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    return str(exc) or type(exc).__name__


def fetch_wheel(pinned: PinnedFile, platform: str, dest: Path) -> None:
    """`pip download` through pip's own configuration (index, mirrors, proxies), then verify."""
    tag = WHEEL_PLATFORM_TAGS.get(platform)
    if tag is None:
        raise EnvironmentFailure(f"no wheel platform tag known for {platform}")
    work = dest.parent / "pip-download"
    work.mkdir(exist_ok=True)
    say(f"pip download {pinned.package}=={pinned.version} ({tag})")
    try:
        pip_download(str(pinned.package), str(pinned.version), tag, work, on_line=lambda line: None)
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


def pip_download(package: str, version: str, tag: str, dest: Path,
                 on_line: Callable[[str], None] | None = None) -> None:
    """`pip download` of one binary wheel for a platform tag into the directory dest, through pip's own
    configuration (index, mirrors, proxies), with the Python running reprobuild. Raises CommandFailed."""
    proc.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", tag,
              "--disable-pip-version-check", "-d", str(dest), f"{package}=={version}"], on_line=on_line)
