"""Wheelhouses: the exact wheel set of a hashed requirements lock, for installing with the network off.

`download_wheelhouse(lock_file, dest)` runs `pip download --require-hashes` (through pip's own
configuration, so whatever index this machine uses) and prunes `dest` to exactly one wheel per pin
of the lock, for this Python and platform: nothing extra, nothing missing. `check_wheelhouse`
lists what drifted (a missing wheel, a wheel whose bytes changed, a file the lock does not name),
each naming the file. The build installs from a wheelhouse with
`pip install --no-index --find-links WHEELHOUSE --require-hashes -r LOCK`.

A build resolves its wheelhouses before any unit builds (`ensure_wheelhouse`, from build/preflight.py):
present, else downloaded now, else exit 3 naming the missing wheels and the ways out (`reprobuild
toolchain import` of wheels got elsewhere, `import_wheels`). Every wheelhouse file is 0644 and its
directory 0755 whatever the caller's umask: the build user of a container reads them.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from reprobuild.config.model import Lock
from reprobuild.config.pylock import Requirement, read_requirements_lock
from reprobuild.errors import BadInput, CheckFailed, EnvironmentFailure
from reprobuild.formats.archives import normalize_modes
from reprobuild.fsutil import remove_tree, sha256_file
from reprobuild.progress import say


@dataclass(frozen=True)
class WheelFile:
    path: Path
    name: str  # canonical (packaging.utils.canonicalize_name), as the lock's pins are
    version: Version


class WheelhouseDrift(CheckFailed):
    """The wheelhouse does not hold exactly the locked wheels (exit 1 from `vendor --check`)."""

    def __init__(self, dest: Path, problems: list[str]) -> None:
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"wheelhouse {dest} does not match its lock:\n{listed}",
                         "run `reprobuild vendor` to download it again")
        self.problems = problems


def parse_wheel_name(path: Path) -> WheelFile | None:
    """Name and version from a wheel's file name (PEP 427, by `packaging`); None when it is not one."""
    try:
        name, version, _build, _tags = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return WheelFile(path, name, version)


def _pin(req: Requirement) -> tuple[str, Version | str]:
    """What a wheel's (name, version) must equal to be this pin's (`1.0` and `1.0.0` are one version)."""
    try:
        return req.name, Version(req.version)
    except InvalidVersion:
        return req.name, req.version  # matches no wheel: reported as missing


class WheelsUnavailable(EnvironmentFailure):
    """Locked wheels a build needs are in no wheelhouse here and cannot be downloaded (exit 3)."""

    def __init__(self, lock_file: Path, dest: Path, missing: list[Requirement], why: str) -> None:
        shown = ", ".join(f"{r.name}=={r.version}" for r in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        super().__init__(
            f"{len(missing)} wheel(s) locked by {lock_file} are not in the wheelhouse {dest} and {why}: {shown}{more}",
            "on a machine that reaches pip's index, run `reprobuild vendor` (or `pip download --require-hashes "
            f"--no-deps --only-binary=:all: -d DIR -r {lock_file.name}`), copy the wheels here and run "
            "`reprobuild toolchain import DIR`; or build without `--offline` where pip's index is reachable")
        self.missing = missing


def missing_wheels(lock_file: Path, dest: Path) -> list[Requirement]:
    """The pins with no wheel of their name and version in `dest` (or no such directory); whether the wheels
    there have hashes the lock allows is `check_wheelhouse`'s to say."""
    have = set()
    if dest.is_dir():
        for path in dest.iterdir():
            wheel = parse_wheel_name(path) if path.is_file() else None
            if wheel is not None:
                have.add((wheel.name, wheel.version))
    return [r for r in read_requirements_lock(lock_file) if _pin(r) not in have]


def check_wheelhouse(lock_file: Path, dest: Path, missing: bool = True) -> list[str]:
    """What differs between the wheelhouse and the lock, one line per problem naming the file; empty when
    the wheelhouse holds exactly one wheel per pin, each with a hash the lock allows. `missing=False`:
    only what is wrong with the files there (changed, extra), not what is absent."""
    reqs = read_requirements_lock(lock_file)
    if not dest.is_dir():
        return [f"{dest}: the wheelhouse does not exist"]
    problems: list[str] = []
    by_pin: dict[tuple[str, Version | str], list[Path]] = {}
    for path in sorted(dest.iterdir()):
        wheel = parse_wheel_name(path) if path.is_file() else None
        if wheel is None:
            problems.append(f"{path}: not a wheel; a wheelhouse holds only the locked wheels")
            continue
        by_pin.setdefault((wheel.name, wheel.version), []).append(path)
    wanted = {_pin(r): r for r in reqs}
    for key, paths in sorted(by_pin.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        if key not in wanted:
            problems += [f"{p}: not in {lock_file} (extra)" for p in paths]
    for req in reqs:
        paths = by_pin.get(_pin(req), [])
        if not paths:
            if not missing:
                continue
            problems.append(f"{req.name}=={req.version}: no wheel in {dest} (missing; {lock_file}:{req.line})")
            continue
        if len(paths) > 1:
            problems.append(f"{req.name}=={req.version}: {len(paths)} wheels ({', '.join(p.name for p in paths)}); "
                            "a wheelhouse holds one per pin, for one platform")
        for path in paths:
            digest = sha256_file(path)
            if digest not in req.hashes:
                problems.append(f"{path}: sha256 {digest} is not a hash {lock_file}:{req.line} allows for "
                                f"{req.name}=={req.version} (changed)")
    return problems


def download_wheelhouse(lock_file: Path, dest: Path, python_version: str | None = None,
                        platforms: tuple[str, ...] = ()) -> list[Path]:
    """Download the locked wheels into `dest` (verified with --require-hashes), then prune it to exactly the lock.

    Wheels already in `dest` with a hash the lock allows are kept (pip skips them); anything else is removed
    first. `python_version`/`platforms` select another target than this interpreter (pip's --python-version
    and --platform). Raises EnvironmentFailure when pip cannot get a wheel, WheelhouseDrift when the result
    still differs from the lock.
    """
    from reprobuild import proc

    reqs = read_requirements_lock(lock_file)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_unlocked(dest, reqs)
    argv = [sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--dest", str(dest), "-r", str(lock_file)]
    if python_version:
        argv += ["--python-version", python_version]
    for plat in platforms:
        argv += ["--platform", plat]
    say(f"downloading the wheels of {lock_file} into {dest}")
    done = proc.run(argv, check=False)
    if done.returncode != 0:
        tail = "\n".join("    " + line for line in (done.stderr or done.stdout).strip().splitlines()[-15:])
        raise EnvironmentFailure(f"pip could not download the wheels of {lock_file} (exit {done.returncode}):\n{tail}",
                                 "check that pip reaches its index (`pip config list`), or import a wheelhouse "
                                 "made on a machine that does")
    _remove_unlocked(dest, reqs)
    problems = check_wheelhouse(lock_file, dest)
    if problems:
        raise WheelhouseDrift(dest, problems)
    normalize_modes(dest)  # pip wrote them with the caller's umask
    return sorted(p for p in dest.iterdir())


def _remove_unlocked(dest: Path, reqs: list[Requirement]) -> None:
    """Remove every file that is not a locked wheel with an allowed hash (pip would otherwise trust it)."""
    wanted = {_pin(r): r for r in reqs}
    for path in sorted(dest.iterdir()):
        wheel = parse_wheel_name(path) if path.is_file() else None
        req = wanted.get((wheel.name, wheel.version)) if wheel else None
        if req is None or sha256_file(path) not in req.hashes:
            if path.is_dir() and not path.is_symlink():
                remove_tree(path)
            else:
                path.unlink()


def ensure_wheelhouse(lock_file: Path, dest: Path, offline: bool) -> Path:
    """The wheelhouse a build installs from, every locked wheel present: checked when it exists, the
    missing wheels downloaded (wheels already there, e.g. imported, are kept) unless offline.

    A wheel that changed or a file the lock does not name is never silently repaired during a build:
    EnvironmentFailure (exit 3) naming each file, so a tampered or truncated wheel is seen. Missing wheels
    that cannot be downloaded (offline, or pip fails) are WheelsUnavailable (exit 3) naming them.
    """
    problems = check_wheelhouse(lock_file, dest, missing=False) if dest.exists() else []
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise EnvironmentFailure(f"wheelhouse {dest} does not match {lock_file}:\n{listed}",
                                 f"remove {dest} and build again (or run `reprobuild vendor`) to download it again")
    missing = missing_wheels(lock_file, dest)
    if not missing:
        return dest
    if offline:
        raise WheelsUnavailable(lock_file, dest, missing, "offline mode forbids the network")
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):  # one download per wheelhouse at a time
        if not missing_wheels(lock_file, dest):
            return dest  # another process got them meanwhile
        tmp = dest.with_name(dest.name + ".partial")
        if tmp.exists():
            remove_tree(tmp)
        if dest.exists():  # some wheels were imported: download the rest beside them, then swap
            shutil.copytree(dest, tmp)
        try:
            download_wheelhouse(lock_file, tmp)
        except EnvironmentFailure as exc:
            remove_tree(tmp)
            raise WheelsUnavailable(lock_file, dest, missing, f"pip could not download them:\n{exc.message}") from None
        if dest.exists():
            remove_tree(dest)
        tmp.rename(dest)
    return dest


def import_wheels(lock: Lock, repo_root: Path, cache_root: Path, source: Path) -> dict[str, list[str]]:
    """`reprobuild toolchain import` of wheels: a wheel file, or a directory of them (a wheelhouse made
    elsewhere), each verified against the hashes of the lock's Python environments and stored in the
    wheelhouse of every environment that pins it. Returns environment -> wheel names stored.

    A file that no environment pins (name, version and sha256) is refused (exit 2); in a directory such
    files are skipped, and a directory with no locked wheel at all is refused.
    """
    if not source.exists():
        raise BadInput(f"{source}: no such file or directory")
    files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    stored: dict[str, list[str]] = {}
    for name, lock_file, dest in locked_wheelhouses(lock, repo_root, cache_root):
        wanted = {_pin(r): r for r in read_requirements_lock(lock_file)}
        for path in files:
            wheel = parse_wheel_name(path)
            req = wanted.get((wheel.name, wheel.version)) if wheel else None
            if req is None or sha256_file(path) not in req.hashes:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{path.name}.{os.getpid()}.tmp"  # never a stray file inside the wheelhouse
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest / path.name)
            normalize_modes(dest)
            stored.setdefault(name, []).append(path.name)
    if not stored:
        raise BadInput(f"{source}: {'no file in it is' if source.is_dir() else 'not'} a wheel pinned (name, version "
                       f"and sha256) by the python environments of {lock.path}",
                       "import the exact wheels the requirements lock names (`reprobuild vendor --check` lists them)")
    return stored


def default_wheelhouse(cache_root: Path, env_name: str, lock_sha256: str) -> Path:
    """Where builds keep the wheelhouse of a locked environment: one per lock content."""
    return cache_root / "wheelhouse" / env_name / lock_sha256[:16]


def locked_wheelhouses(lock: Lock, repo_root: Path, cache_root: Path) -> list[tuple[str, Path, Path]]:
    """(environment, requirements.lock, wheelhouse directory) for every environment of the lock's `python`
    section, in name order: what `reprobuild vendor` downloads and `vendor --check` checks."""
    from reprobuild.config.pylock import parse_python_section

    result = []
    for name, env in sorted(parse_python_section(lock).items()):
        result.append((name, repo_root / env.lock_file, default_wheelhouse(cache_root, name, env.lock_sha256)))
    return result


def vendor_wheelhouses(lock: Lock, repo_root: Path, cache_root: Path, check: bool) -> dict[str, list[str]]:
    """`reprobuild vendor` for Python environments: download every locked wheelhouse (or, with `check`, only
    check it); returns the problems per environment (empty lists when all is well).

    Downloading raises EnvironmentFailure (exit 3) when pip cannot get a wheel; the caller turns non-empty
    problems under `check` into exit 1 (see WheelhouseDrift).
    """
    problems: dict[str, list[str]] = {}
    for name, lock_file, dest in locked_wheelhouses(lock, repo_root, cache_root):
        if check:
            problems[name] = check_wheelhouse(lock_file, dest)
        else:
            download_wheelhouse(lock_file, dest)
            problems[name] = []
    return problems
