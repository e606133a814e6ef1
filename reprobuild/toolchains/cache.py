"""The content-addressed toolchain cache: fetch, import, list and verify pinned toolchains.

Layout under the cache root (`REPROBUILD_CACHE`, default the user cache dir):

    toolchains/<key>/tree/...       the unpacked toolchain (immutable once renamed into place)
    toolchains/<key>/entry.json     what it is and its tree hash, for `toolchain verify`
    archives/<sha256>               archives given with `toolchain import`, until installed
    locks/<key>.lock                cross-process lock, held while installing
    tmp/<key>.*                     work in progress; stale ones are removed under the lock

An entry exists only once complete: it is built in tmp/ and renamed into place, so a process
killed at any point leaves nothing a later run mistakes for a good entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild.config.model import Lock, PinnedFile, PlatformPin, Toolchain, host_platform
from reprobuild.errors import BadInput, EnvironmentFailure, IntegrityError, UnsafeArchive
from reprobuild.fsutil import atomic_write_text, remove_tree, sha256_file, temp_dir_in
from reprobuild.progress import say
from reprobuild.toolchains import download

# An archive may unpack to this many times its own size before it counts as a bomb
# (Go's archives unpack to about 3x; the Debian source package to about 5x).
MAX_UNPACK_RATIO = 12
MIN_UNPACK_ALLOWANCE = 64 << 20


def default_cache_root() -> Path:
    env = os.environ.get("REPROBUILD_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "reprobuild"


def offline_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("REPROBUILD_OFFLINE", "") not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Installed:
    """A toolchain ready to use."""

    name: str
    version: str
    platform: str
    key: str
    tree: Path  # the unpacked archive(s)
    root: Path  # GOROOT
    # The tree's content hash, recorded at install and confirmed by this process's check of the tree (stat
    # fingerprint, else a full rehash): what the action cache keys a unit's toolchain by, not the pin.
    tree_sha256: str = ""

    @property
    def go(self) -> Path:
        return self.root / "bin" / "go"


def entry_key(pin: PlatformPin) -> str:
    """Content address of a platform pin: its archives' sha256 (and the root inside them)."""
    if len(pin.files) == 1:
        return pin.files[0].sha256
    h = hashlib.sha256()
    for pf in pin.files:
        h.update(pf.sha256.encode() + b"\n")
    return h.hexdigest()


class ToolchainCache:
    def __init__(self, root: Path | None = None, offline: bool = False) -> None:
        self.root = root or default_cache_root()
        self.offline = offline_requested(offline)
        self._checked: dict[str, str] = {}  # entry -> tree hash, for the trees this process checked

    # --- paths -------------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / "toolchains" / key

    def _installed(self, tc: Toolchain, pin: PlatformPin, tree_sha256: str = "") -> Installed:
        key = entry_key(pin)
        tree = self.entry_dir(key) / "tree"
        return Installed(tc.name, tc.version, pin.platform, key, tree, tree / pin.root, tree_sha256)

    @staticmethod
    def pin_for(tc: Toolchain, platform: str | None = None) -> PlatformPin:
        plat = platform or host_platform()
        pin = tc.pin(plat)
        if pin is None:
            have = ", ".join(p.platform for p in tc.platforms)
            raise BadInput(f"toolchain `{tc.name}` has no pin for platform {plat} (pinned: {have})",
                           "add the platform to toolchains.yaml and run `reprobuild lock`")
        return pin

    # --- state -------------------------------------------------------------------------------
    def state(self, tc: Toolchain, pin: PlatformPin) -> str:
        """missing | installed | corrupt (cheap: reads entry.json only; `verify` hashes the tree)."""
        d = self.entry_dir(entry_key(pin))
        if not d.exists():
            return "missing"
        try:
            record = json.loads((d / "entry.json").read_text())
        except (OSError, ValueError):
            return "corrupt"
        if not (d / "tree" / pin.root).is_dir() or record.get("root") != pin.root:
            return "corrupt"
        return "installed"

    def verify(self, tc: Toolchain, pin: PlatformPin) -> tuple[str, str]:
        """Rehash an installed tree against its recorded hash: (state, detail)."""
        state = self.state(tc, pin)
        if state != "installed":
            return state, ""
        from reprobuild.toolchains.extract import tree_hash, tree_records

        d = self.entry_dir(entry_key(pin))
        record = json.loads((d / "entry.json").read_text())
        actual = tree_hash(tree_records(d / "tree"))
        if actual != record.get("tree_sha256"):
            return "corrupt", f"tree hash {actual}, recorded {record.get('tree_sha256')}"
        return "installed", actual

    # --- installing --------------------------------------------------------------------------
    def ensure(self, tc: Toolchain, platform: str | None = None) -> Installed:
        """The installed toolchain, fetching and installing it first if needed, its tree checked (see
        `_checked_tree`): `tree_sha256` is the content this process confirmed."""
        pin = self.pin_for(tc, platform)
        key = entry_key(pin)
        if self.state(tc, pin) == "installed":
            return self._installed(tc, pin, self._checked_tree(tc, pin))  # fast path: stat calls, no lock
        with self._lock(key):
            state = self.state(tc, pin)
            if state == "corrupt":
                say(f"{tc.name}: cached entry {key[:12]} is damaged; reinstalling")
                self._discard(key)
            if state != "installed":
                self._install(tc, pin, self._installed(tc, pin))
        return self._installed(tc, pin, self._checked_tree(tc, pin))  # installed here or by another process

    def _checked_tree(self, tc: Toolchain, pin: PlatformPin) -> str:
        """The installed tree's recorded hash, once the tree is seen to be the one installed (its stat
        fingerprint, else a full rehash); checked once per process.

        Raises IntegrityError (exit 3) when its content changed: a tampered toolchain is never used.
        """
        from reprobuild.toolchains.treecheck import FINGERPRINT_KEY, fingerprint

        key = entry_key(pin)
        if key in self._checked:
            return self._checked[key]
        d = self.entry_dir(key)
        record = json.loads((d / "entry.json").read_text())
        now = fingerprint(d / "tree")
        if record.get(FINGERPRINT_KEY) != now:
            state, detail = self.verify(tc, pin)
            if state != "installed":
                raise IntegrityError(f"toolchain `{tc.name}` ({tc.version}, {pin.platform}): the cached tree at "
                                     f"{d / 'tree'} was modified after it was installed ({detail}); refusing to "
                                     "build with it", f"reinstall it with `reprobuild toolchain fetch {tc.name}`")
            record[FINGERPRINT_KEY] = now  # same content (e.g. touched): remember the tree as it is now
            atomic_write_text(d / "entry.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        self._checked[key] = str(record["tree_sha256"])
        return self._checked[key]

    def remove(self, tc: Toolchain, pin: PlatformPin) -> None:
        key = entry_key(pin)
        with self._lock(key):
            self._discard(key)

    def _discard(self, key: str) -> None:
        self._checked.pop(key, None)
        d = self.entry_dir(key)
        if d.exists():
            trash = self.root / "tmp" / f"{key}.discard"
            remove_tree(trash) if trash.exists() else None
            os.replace(d, trash)
            remove_tree(trash)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Any:
        from filelock import FileLock  # only when installing: the warm path takes no lock

        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "locks" / f"{key}.lock")):
            # Holding the lock, any tmp dir for this key belongs to a process that died.
            for stale in (self.root / "tmp").glob(f"{key}.*"):
                remove_tree(stale)
            yield

    def _install(self, tc: Toolchain, pin: PlatformPin, inst: Installed) -> None:
        # Imported here: the warm path (an installed entry) never unpacks anything.
        from reprobuild.toolchains.extract import extract, tree_hash

        with temp_dir_in(self.root / "tmp", f"{inst.key}.") as work:
            downloads = work / "downloads"
            downloads.mkdir()
            archives = [self._obtain(tc, pin, pf, downloads) for pf in pin.files]
            staged = work / "entry"
            tree = staged / "tree"
            tree.mkdir(parents=True)
            for made in (staged, tree):  # 0755 whatever the caller's umask: a build user of any uid reads the tree
                os.chmod(made, 0o755)
            records: dict[str, str] = {}
            for pf, archive in zip(pin.files, archives, strict=True):
                limit = max(archive.stat().st_size * MAX_UNPACK_RATIO, MIN_UNPACK_ALLOWANCE)
                say(f"{tc.name}: unpacking {pf.name}")
                records.update(extract(archive, tree, limit, rootfs=tc.kind == "base"))
            if not (tree / pin.root).is_dir():
                raise IntegrityError(f"{tc.name}: the archive has no `{pin.root}` directory (the lock's root)")
            digest = tree_hash(records)
            record = {"name": tc.name, "version": tc.version, "platform": pin.platform, "root": pin.root,
                      "files": [{"name": pf.name, "sha256": pf.sha256} for pf in pin.files],
                      "tree_sha256": digest, "files_count": len(records)}
            from reprobuild.toolchains.treecheck import FINGERPRINT_KEY, fingerprint

            record[FINGERPRINT_KEY] = fingerprint(tree)  # inodes and mtimes survive the rename below
            atomic_write_text(staged / "entry.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
            final = self.entry_dir(inst.key)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            self._checked[inst.key] = digest
        say(f"{tc.name}: installed Go {tc.version} ({pin.platform}) at {inst.root}")

    def _obtain(self, tc: Toolchain, pin: PlatformPin, pf: PinnedFile, downloads: Path) -> Path:
        """A verified copy of one pinned archive: imported earlier, or downloaded now."""
        dest = downloads / pf.name
        imported = self.root / "archives" / pf.sha256
        if imported.exists():
            download.check_file(imported, pf, "the import store")
            try:
                os.link(imported, dest)
            except OSError:
                shutil.copyfile(imported, dest)
            return dest
        if self.offline:
            raise EnvironmentFailure(
                f"toolchain `{tc.name}` ({tc.version}, {pin.platform}) is not in the cache and offline mode "
                f"forbids the network: need {pf.name} with sha256 {pf.sha256}",
                f"get {pf.name} on a connected machine and run `reprobuild toolchain import {pf.name}`")
        if tc.source == "url":
            download.fetch_url(pf, dest)
        elif tc.source == "wheel":
            download.fetch_wheel(pf, pin.platform, dest)
        else:
            download.fetch_deb(pf, pin.platform, dest)
        return dest

    def import_archive(self, lock: Lock, archive: Path) -> list[Installed]:
        """Verify a local archive against the lock and install every entry it completes."""
        if not archive.is_file():
            raise BadInput(f"{archive}: no such file")
        digest = sha256_file(archive)
        matches = [(tc, pin, pf) for tc in lock.toolchains.values() for pin in tc.platforms
                   for pf in pin.files if pf.sha256 == digest]
        if not matches:
            raise BadInput(f"{archive}: sha256 {digest} matches no archive pinned in {lock.path}",
                           "import the exact file the lock names (`reprobuild toolchain list` shows them)")
        _, _, pf = matches[0]
        download.check_file(archive, pf, str(archive))
        store = self.root / "archives"
        store.mkdir(parents=True, exist_ok=True)
        tmp = store / f".{digest}.tmp"
        shutil.copyfile(archive, tmp)
        os.replace(tmp, store / digest)
        installed: list[Installed] = []
        try:
            for tc, pin, _ in matches:
                if all((store / f.sha256).exists() or self.state(tc, pin) == "installed" for f in pin.files):
                    installed.append(self.ensure(tc, pin.platform))
                else:
                    missing = [f.name for f in pin.files if not (store / f.sha256).exists()]
                    say(f"{tc.name} ({pin.platform}): imported {pf.name}; still needs {', '.join(missing)}")
        except UnsafeArchive:
            (store / digest).unlink(missing_ok=True)  # a refused archive stays nowhere in the cache
            raise
        if all(self.state(tc, pin) == "installed" for tc, pin, _ in matches):
            (store / digest).unlink()  # installed everywhere it is needed: the tree is what we keep
        return installed
