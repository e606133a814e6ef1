"""Can a pinned toolchain that is not in the cache be had from its sources? Asked without downloading it.

`doctor` says what is true of this machine now, not what a build would try: each pinned file is looked for
where a fetch would get it, cheaply.

- url: a HEAD of the URL and then each mirror (a ranged GET of one byte where HEAD is not served), with
  short timeouts; a size the server states must be the pinned size. `file://` URLs: the file is there.
- wheel: pip resolves the pinned `package==version` for the platform through its own configuration
  (index, mirrors, proxies) without installing anything (`pip install --dry-run --report`); the file it
  would download must be the pinned one (name, and sha256 when the index states it).
- deb: apt names the pinned `package=version` from its configured sources (`apt-get download
  --print-uris`, which reads apt's lists and downloads nothing); the sha256 it lists must be the pinned one.

Offline (`--offline`, REPROBUILD_OFFLINE) nothing is asked: the answer says so.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reprobuild import proc
from reprobuild.config.model import Lock, PinnedFile, PlatformPin, Toolchain, host_platform
from reprobuild.errors import EnvironmentFailure
from reprobuild.toolchains.cache import ToolchainCache
from reprobuild.toolchains.download import DEB_ARCH, WHEEL_PLATFORM_TAGS

FETCHABLE, UNFETCHABLE, UNCHECKED = "fetchable", "unfetchable", "unchecked"


@dataclass(frozen=True)
class SourceCheck:
    """What asking a toolchain's sources found: `fetchable` (from `where`), `unfetchable` (`why`), or
    `unchecked` (`why`: offline, or nothing needed asking)."""

    status: str
    where: str = ""  # fetchable: the sources that would serve the files (host names, pip's index, apt's sources)
    why: str = ""  # unfetchable / unchecked: the reason, per file and source tried
    urls: tuple[str, ...] = ()  # fetchable: the URL each file would come from

    def to_json(self) -> dict[str, object]:
        return {"status": self.status, "where": self.where, "why": self.why, "urls": list(self.urls)}


@dataclass(frozen=True)
class _FileCheck:
    ok: bool
    where: str  # ok: where from; else why not
    url: str = ""


def _timeout() -> float:
    """Seconds per request: REPROBUILD_PROBE_TIMEOUT (default 5); a probe must not hang `doctor`."""
    try:
        return max(0.5, float(os.environ.get("REPROBUILD_PROBE_TIMEOUT", "5")))
    except ValueError:
        return 5.0


def imported_files(cache: ToolchainCache, pin: PlatformPin) -> frozenset[str]:
    """The sha256 of each file of `pin` already imported into the cache (nothing to fetch for those)."""
    return frozenset(f.sha256 for f in pin.files if (cache.root / "archives" / f.sha256).exists())


def check_missing(lock: Lock, cache: ToolchainCache, platform: str | None = None) -> dict[str, SourceCheck]:
    """Ask the sources of every toolchain of the lock that is neither installed nor imported, all at once (each
    answer waits on the network). Offline, nothing is asked and nothing is returned."""
    plat = platform or host_platform()
    todo = []
    for name, tc in sorted(lock.toolchains.items()):
        pin = tc.pin(plat)
        if pin is not None and cache.state(tc, pin) == "missing" and len(imported_files(cache, pin)) < len(pin.files):
            todo.append((name, tc, pin))
    if cache.offline or not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:
        checks = pool.map(lambda job: check_toolchain(job[1], job[2], False, imported_files(cache, job[2])), todo)
        return {name: check for (name, _, _), check in zip(todo, checks, strict=True)}


def check_toolchain(tc: Toolchain, pin: PlatformPin, offline: bool, have: frozenset[str] = frozenset()) -> SourceCheck:
    """Whether every file of `pin` not already at hand (sha256 in `have`: imported) can be fetched now."""
    wanted = [f for f in pin.files if f.sha256 not in have]
    if not wanted:
        return SourceCheck(UNCHECKED, why="every file is imported already")
    if offline:
        return SourceCheck(UNCHECKED, why="offline (--offline / REPROBUILD_OFFLINE): no source was asked")
    with ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
        found = list(pool.map(lambda f: _check_file(tc.source, f, pin.platform), wanted))
    bad = [f"{f.name}: {c.where}" for f, c in zip(wanted, found, strict=True) if not c.ok]
    if bad:
        return SourceCheck(UNFETCHABLE, why="; ".join(bad))
    where = ", ".join(dict.fromkeys(c.where for c in found))
    return SourceCheck(FETCHABLE, where=where, urls=tuple(c.url for c in found))


def _check_file(source: str, pinned: PinnedFile, platform: str) -> _FileCheck:
    """One pinned file from one kind of source; never raises for what the source answers."""
    try:
        if source == "url":
            return _check_urls(pinned)
        if source == "wheel":
            return _check_wheel(pinned, platform)
        if source == "deb":
            return _check_deb(pinned, platform)
    except EnvironmentFailure as exc:  # a tool that is missing or timed out
        return _FileCheck(False, exc.message)
    return _FileCheck(False, f"no way to check a `{source}` source")


# --- url ---------------------------------------------------------------------------------------------

def _check_urls(pinned: PinnedFile) -> _FileCheck:
    if not pinned.urls:
        return _FileCheck(False, "the lock gives no URL")
    tried = []
    for url in pinned.urls:
        problem = _check_url(url, pinned.size)
        if problem is None:
            return _FileCheck(True, _place(url), url)
        tried.append(f"{url}: {problem}")
    return _FileCheck(False, "; ".join(tried))


def _place(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or f"{parts.scheme}://{parts.path}"


def _check_url(url: str, size: int | None) -> str | None:
    """None when `url` serves the file (as far as its headers say), else what is wrong."""
    import requests  # here, not at the top: ~100 ms, and most commands never probe

    if url.startswith("file://"):
        path = Path(url[len("file://"):])
        if not path.is_file():
            return "no such file"
        return _size_problem(path.stat().st_size, size)
    timeout = _timeout()
    try:
        resp = requests.head(url, allow_redirects=True, timeout=(timeout, timeout))
        if resp.status_code in (403, 405, 501):  # HEAD not served here (or not signed for): one byte by GET
            with requests.get(url, headers={"Range": "bytes=0-0"}, stream=True, allow_redirects=True,
                              timeout=(timeout, timeout)) as resp:
                return _answer_problem(resp.status_code, resp.reason, resp.headers, size)
        return _answer_problem(resp.status_code, resp.reason, resp.headers, size)
    except requests.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.RequestException as exc:
        return _innermost(exc)


def _answer_problem(status: int, reason: str, headers: object, size: int | None) -> str | None:
    get = getattr(headers, "get", lambda _k: None)
    if status == 206:  # Content-Range: bytes 0-0/TOTAL
        total = str(get("Content-Range") or "").rpartition("/")[2]
        return _size_problem(int(total), size) if total.isdigit() else None
    if status != 200:
        return f"HTTP {status} {reason}"
    length = str(get("Content-Length") or "")
    return _size_problem(int(length), size) if length.isdigit() else None


def _size_problem(served: int, size: int | None) -> str | None:
    if size is not None and served != size:
        return f"serves {served} bytes, the lock pins {size}"
    return None


def _innermost(exc: BaseException) -> str:
    """The root cause of a requests/urllib3 error, without urllib3's object reprs and retry wording."""
    while exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    exc = getattr(exc, "reason", None) or exc  # urllib3's MaxRetryError wraps the cause
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\S*(\(.*?\)|<.*?>): ", "", text, count=1)


# --- wheel -------------------------------------------------------------------------------------------

def _check_wheel(pinned: PinnedFile, platform: str) -> _FileCheck:
    tag = WHEEL_PLATFORM_TAGS.get(platform)
    if tag is None or not pinned.package or not pinned.version:
        return _FileCheck(False, f"no wheel platform tag known for {platform}" if tag is None
                          else "the lock names no package and version for this wheel")
    with tempfile.TemporaryDirectory(prefix="reprobuild-probe-") as target:
        done = proc.run([sys.executable, "-m", "pip", "install", "--dry-run", "--report", "-", "--quiet",
                         "--no-deps", "--only-binary=:all:", "--platform", tag, "--target", target,
                         "--disable-pip-version-check", "--no-input", "--timeout", f"{_timeout():g}",
                         f"{pinned.package}=={pinned.version}"], check=False, timeout=120)
    if done.returncode != 0:
        last = [ln for ln in done.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        return _FileCheck(False, "pip's index (pip's own configuration) does not offer "
                          f"{pinned.package}=={pinned.version} for {tag}: " + (" ".join(last[-2:]) or
                                                                              f"pip exit {done.returncode}"))
    try:
        info = json.loads(done.stdout)["install"][0]["download_info"]
    except (ValueError, KeyError, IndexError, TypeError):
        return _FileCheck(False, "pip gave no installation report (pip 22.2 or later is needed to check)")
    url = str(info.get("url", ""))
    name = url.rsplit("/", 1)[-1].split("#", 1)[0]
    digest = (info.get("archive_info") or {}).get("hashes", {}).get("sha256")
    if name != pinned.name:
        return _FileCheck(False, f"pip's index offers {name or url}, not the pinned {pinned.name}")
    if digest and digest != pinned.sha256:
        return _FileCheck(False, f"pip's index lists {name} with sha256 {digest}, the lock pins {pinned.sha256}")
    return _FileCheck(True, f"pip's index ({_place(url)})", url)


# --- deb ---------------------------------------------------------------------------------------------

def _check_deb(pinned: PinnedFile, platform: str) -> _FileCheck:
    arch = DEB_ARCH.get(platform)
    if arch is None or not pinned.package or not pinned.version:
        return _FileCheck(False, f"no Debian architecture known for {platform}" if arch is None
                          else "the lock names no package and version for this .deb")
    done = proc.run(["apt-get", "download", "--print-uris", "-q", f"{pinned.package}:{arch}={pinned.version}"],
                    check=False, timeout=60)
    if done.returncode != 0:
        said = " ".join(ln for ln in done.stderr.splitlines() if ln.startswith("E:")) or done.stderr.strip()
        return _FileCheck(False, f"apt's sources do not offer {pinned.package} {pinned.version} ({arch}): {said} "
                          "(`apt-get update` first if apt's lists are old)")
    for line in done.stdout.splitlines():  # 'URI' FILE SIZE SHA256:HEX
        fields = line.split()
        if len(fields) >= 4 and fields[0].startswith("'"):
            url, digest = fields[0].strip("'"), fields[3].partition(":")[2].lower()
            if digest and digest != pinned.sha256:
                return _FileCheck(False, f"apt's sources list {fields[1]} with sha256 {digest}, the lock pins "
                                  f"{pinned.sha256}")
            return _FileCheck(True, f"apt's sources ({_place(url)})", url)
    return _FileCheck(False, f"apt named no file for {pinned.package} {pinned.version}")
