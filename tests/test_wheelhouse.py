"""Wheelhouses pruned to exactly a hashed lock; drift (missing, changed, extra) named by file; the lock itself."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from reprobuild.config import pylock
from reprobuild.errors import EnvironmentFailure, FileError
from reprobuild.toolchains.wheelhouse import WheelhouseDrift, check_wheelhouse, download_wheelhouse, ensure_wheelhouse
from tests.conftest import PADDLE_LOCK, REPO, make_paddle_checkout, run_cli, run_paddle_build


def make_wheel(dest: Path, name: str, version: str, payload: bytes = b"x = 1\n") -> Path:
    path = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", payload)
    return path


def write_lock(path: Path, wheels: list[Path]) -> Path:
    lines = []
    for w in wheels:
        name, version = w.name.split("-")[:2]
        digest = hashlib.sha256(w.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}\n")
    path.write_text("# test lock\n" + "".join(lines))
    return path


@pytest.fixture
def small_house(tmp_path: Path) -> tuple[Path, Path]:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    wheels = [make_wheel(house, "alpha", "1.0"), make_wheel(house, "beta_pkg", "2.3.1")]
    return write_lock(tmp_path / "requirements.lock", wheels), house


def test_exact_wheelhouse_has_no_problems(small_house: tuple[Path, Path]) -> None:
    lock, house = small_house
    assert check_wheelhouse(lock, house) == []


def test_missing_wheel_is_named(small_house: tuple[Path, Path]) -> None:
    lock, house = small_house
    (house / "beta_pkg-2.3.1-py3-none-any.whl").unlink()
    problems = check_wheelhouse(lock, house)
    assert len(problems) == 1 and "beta-pkg==2.3.1" in problems[0] and "missing" in problems[0]


def test_changed_byte_is_named(small_house: tuple[Path, Path]) -> None:
    lock, house = small_house
    wheel = house / "alpha-1.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    problems = check_wheelhouse(lock, house)
    assert len(problems) == 1 and str(wheel) in problems[0] and "changed" in problems[0]


def test_extra_file_is_named(small_house: tuple[Path, Path]) -> None:
    lock, house = small_house
    extra = make_wheel(house, "gamma", "0.1")
    (house / "notes.txt").write_text("hi")
    problems = check_wheelhouse(lock, house)
    assert any(str(extra) in p and "extra" in p for p in problems)
    assert any("notes.txt" in p for p in problems)


def test_wheel_names_and_versions_are_read_as_packaging_reads_them(tmp_path: Path) -> None:
    """`Beta.Pkg-2.3.1.0` is the wheel of the pin `beta-pkg==2.3.1` (PEP 503 names, PEP 440 versions);
    a file name that is no wheel's (a version `x`) is not taken for one."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    pinned = make_wheel(house, "beta_pkg", "2.3.1")
    lock = write_lock(tmp_path / "requirements.lock", [pinned])
    spelled = pinned.rename(house / "Beta.Pkg-2.3.1.0-py3-none-any.whl")
    assert check_wheelhouse(lock, house) == []
    assert pylock.read_requirements_lock(lock)[0].name == "beta-pkg"
    bogus = house / "alpha-x-py3-none-any.whl"
    bogus.write_bytes(spelled.read_bytes())
    assert check_wheelhouse(lock, house) == [f"{bogus}: not a wheel; a wheelhouse holds only the locked wheels"]


def test_build_time_check_is_an_environment_failure(small_house: tuple[Path, Path]) -> None:
    lock, house = small_house
    (house / "alpha-1.0-py3-none-any.whl").unlink()
    with pytest.raises(EnvironmentFailure, match=r"alpha==1\.0") as exc:
        ensure_wheelhouse(lock, house, offline=True)
    assert exc.value.exit_code == 3


def test_lock_with_index_lines_is_rejected(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("--index-url https://example.invalid/simple\nalpha==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n")
    with pytest.raises(FileError, match=r"requirements.lock:1: unexpected option line `--index-url`"):
        pylock.read_requirements_lock(lock)
    lock.write_text("alpha>=1.0\n")
    with pytest.raises(FileError, match="not pinned with =="):
        pylock.read_requirements_lock(lock)


def test_repository_lock_is_portable_and_fully_hashed() -> None:
    text = PADDLE_LOCK.read_text()
    for needle in ("--index-url", "--extra-index-url", "--find-links", "--trusted-host", "file://", "/opt/", "/etc/",
                   "/root/", "/tmp/"):
        assert needle not in text, needle
    reqs = {r.name: r for r in pylock.read_requirements_lock(PADDLE_LOCK)}
    assert reqs["paddlepaddle"].version == "2.6.2"
    assert int(reqs["numpy"].version.split(".")[0]) < 2
    assert all(r.hashes for r in reqs.values())
    assert {"setuptools", "wheel"} <= set(reqs)
    in_sha = hashlib.sha256((REPO / "builders" / "paddle" / "requirements.in").read_bytes()).hexdigest()
    assert pylock.compiled_from(PADDLE_LOCK) == (in_sha, "3.11")


# --- the real Paddle wheelhouse --------------------------------------------------------------------------

@pytest.mark.paddle
def test_real_wheelhouse_is_exactly_the_lock(paddle_wheelhouse: Path) -> None:
    assert check_wheelhouse(PADDLE_LOCK, paddle_wheelhouse) == []
    names = {p.name.split("-")[0].lower().replace("_", "-") for p in paddle_wheelhouse.iterdir()}
    assert names == {r.name for r in pylock.read_requirements_lock(PADDLE_LOCK)}


def linked_copy(src: Path, dest: Path) -> Path:
    """A copy of a wheelhouse made of hard links (cheap); replace a file before changing its bytes."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        os.link(f, dest / f.name)
    return dest


@pytest.mark.paddle
def test_download_prunes_to_exactly_the_lock(paddle_wheelhouse: Path, tmp_path: Path) -> None:
    house = linked_copy(paddle_wheelhouse, tmp_path / "wh")
    small = sorted(house.iterdir(), key=lambda p: p.stat().st_size)[0]
    small.unlink()  # missing: downloaded again (from pip's cache)
    make_wheel(house, "stray", "9.9")  # extra: removed
    files = download_wheelhouse(PADDLE_LOCK, house)
    assert check_wheelhouse(PADDLE_LOCK, house) == []
    assert small.name in {f.name for f in files} and not (house / "stray-9.9-py3-none-any.whl").exists()


@pytest.mark.paddle
def test_real_wheelhouse_drift_is_named(paddle_wheelhouse: Path, tmp_path: Path) -> None:
    house = linked_copy(paddle_wheelhouse, tmp_path / "wh")
    numpy = next(house.glob("numpy-*.whl"))
    numpy.unlink()
    astor = next(house.glob("astor-*.whl"))
    data = bytearray(astor.read_bytes())
    astor.unlink()  # break the hard link before changing a byte
    data[100] ^= 0xFF
    astor.write_bytes(bytes(data))
    problems = check_wheelhouse(PADDLE_LOCK, house)
    assert any("numpy==" in p and "missing" in p for p in problems)
    assert any(str(astor) in p and "changed" in p for p in problems)
    with pytest.raises(WheelhouseDrift):
        raise WheelhouseDrift(house, problems)


@pytest.mark.paddle
@pytest.mark.slow
def test_build_with_a_changed_wheel_fails_exit_3_naming_it(paddle_wheelhouse: Path, tmp_path: Path) -> None:
    """A fresh cache (so the environment must be installed) whose wheelhouse holds a tampered wheel."""
    from reprobuild.fsutil import sha256_file
    from reprobuild.toolchains.wheelhouse import default_wheelhouse

    cache = tmp_path / "cache"
    house = default_wheelhouse(cache, "paddle", sha256_file(PADDLE_LOCK))
    house.parent.mkdir(parents=True)
    linked_copy(paddle_wheelhouse, house)
    wheel = next(house.glob("decorator-*.whl"))
    data = bytearray(wheel.read_bytes())
    wheel.unlink()
    data[-10] ^= 0x01
    wheel.write_bytes(bytes(data))
    checkout = make_paddle_checkout(tmp_path / "checkout")
    done = run_paddle_build(checkout, tmp_path / "out", cache, env={"REPROBUILD_OFFLINE": "1"})
    assert done.returncode == 3, done.stderr
    assert wheel.name in done.stderr and "changed" in done.stderr
    assert not (tmp_path / "out").exists()
    shutil.rmtree(cache)


@pytest.mark.paddle
def test_vendor_check_of_the_repository_lock(paddle_wheelhouse: Path, shared_cache_root: Path) -> None:
    from reprobuild.config.lock import load_lock
    from reprobuild.toolchains.wheelhouse import locked_wheelhouses, vendor_wheelhouses

    lock = load_lock(REPO / "toolchains.lock")
    ((name, lock_file, dest),) = locked_wheelhouses(lock, REPO, shared_cache_root)
    assert (name, lock_file, dest) == ("paddle", PADDLE_LOCK, paddle_wheelhouse)
    assert vendor_wheelhouses(lock, REPO, shared_cache_root, check=True) == {"paddle": []}


@pytest.mark.paddle
def test_vendor_check_cli_names_a_missing_wheel_and_passes_a_whole_wheelhouse(paddle_wheelhouse: Path,
                                                                              tmp_path: Path) -> None:
    """`reprobuild vendor --check` of a repository with the Paddle pipeline: exit 0 on the locked wheelhouse,
    exit 1 naming the pin once one wheel is gone (and the wheelhouse is left as it was)."""
    from reprobuild.fsutil import sha256_file
    from reprobuild.toolchains.wheelhouse import default_wheelhouse

    cache = tmp_path / "cache"
    house = default_wheelhouse(cache, "paddle", sha256_file(PADDLE_LOCK))
    house.parent.mkdir(parents=True)
    linked_copy(paddle_wheelhouse, house)
    checkout = make_paddle_checkout(tmp_path / "checkout")
    args = ("vendor", "--check", "--offline", "pipelines/paddle-model.yaml")
    clean = run_cli(*args, env={"REPROBUILD_CACHE": str(cache)}, cwd=checkout)
    assert clean.returncode == 0, clean.stderr
    assert "wheelhouse paddle: exactly the locked wheels" in clean.stdout
    gone = next(house.glob("decorator-*.whl"))
    gone.unlink()
    drift = run_cli(*args, env={"REPROBUILD_CACHE": str(cache)}, cwd=checkout)
    assert drift.returncode == 1, drift.stderr
    assert "decorator==" in drift.stderr and "missing" in drift.stderr
    assert not gone.exists()


# --- any umask (issue 13 item 4), importing wheels (issue 16 item 2) ----------------------------------

def tree_modes(root: Path) -> dict[str, str]:
    """Path -> octal mode of everything under root (itself included), symbolic links left out."""
    found = {".": oct(root.stat().st_mode & 0o7777)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[path.relative_to(root).as_posix()] = oct(path.stat().st_mode & 0o7777)
    return found


def assert_normal_modes(root: Path) -> None:
    bad = {p: m for p, m in tree_modes(root).items()
           if m not in (("0o755",) if (root / p).is_dir() else ("0o644", "0o755"))}
    assert not bad, f"modes of the caller's umask under {root}: {dict(list(bad.items())[:10])}"


def run_under_umask(code: str, *args: str, env: dict[str, str] | None = None,
                    umask: int = 0o077) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=full,
                          preexec_fn=lambda: os.umask(umask) and None, timeout=300)


def installable_wheel(dest: Path, name: str, version: str) -> Path:
    """A wheel pip accepts (its .dist-info with METADATA, WHEEL and RECORD)."""
    path = dest / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "x = 1\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in files) + f"{info}/RECORD,,\n")
    return path


def test_downloaded_wheelhouse_has_normal_modes_under_umask_077(tmp_path: Path) -> None:
    """pip writes with the caller's umask; the wheelhouse a container's build user reads is 0755/0644.
    (pip's index is the small wheelhouse itself, through pip's own find-links setting: no network.)"""
    house = tmp_path / "index"
    house.mkdir()
    lock = write_lock(tmp_path / "requirements.lock", [installable_wheel(house, "alpha", "1.0"),
                                                      installable_wheel(house, "beta_pkg", "2.3.1")])
    dest = tmp_path / "cache" / "wheelhouse" / "small" / "0123"
    done = run_under_umask("import sys; from pathlib import Path; from reprobuild.toolchains.wheelhouse import "
                           "ensure_wheelhouse; ensure_wheelhouse(Path(sys.argv[1]), Path(sys.argv[2]), offline=False)",
                           str(lock), str(dest),
                           env={"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(house)})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in house.iterdir())
    assert tree_modes(dest) == {".": "0o755", **{p.name: "0o644" for p in house.iterdir()}}
    assert check_wheelhouse(lock, dest) == []


@pytest.mark.paddle
def test_imported_wheels_fill_the_wheelhouse_the_offline_preflight_needs(paddle_wheelhouse: Path,
                                                                         tmp_path: Path) -> None:
    """`toolchain import` of one wheel, then of a whole directory (under umask 077): stored where builds look,
    0755/0644, and the offline preflight names only what is still missing, then passes."""
    from reprobuild.build import preflight
    from reprobuild.config.lock import load_lock
    from reprobuild.config.pipeline import load_pipelines
    from reprobuild.fsutil import sha256_file
    from reprobuild.toolchains.cache import ToolchainCache
    from reprobuild.toolchains.wheelhouse import default_wheelhouse

    cache = tmp_path / "cache"
    house = default_wheelhouse(cache, "paddle", sha256_file(PADDLE_LOCK))
    env = {"REPROBUILD_CACHE": str(cache)}
    lock = load_lock(REPO / "toolchains.lock")
    pipelines = load_pipelines([REPO / "pipelines" / "paddle-model.yaml"], REPO)
    offline = ToolchainCache(cache, offline=True)

    one = next(paddle_wheelhouse.glob("decorator-*.whl"))
    done = run_cli("toolchain", "import", str(one), "--offline", env=env)
    assert done.returncode == 0, done.stderr
    assert "wheelhouse paddle: stored 1 locked wheel(s)" in done.stdout
    assert [p.name for p in house.iterdir()] == [one.name]
    with pytest.raises(preflight.WheelhouseUnavailable) as refused:
        preflight.ensure_wheelhouses(pipelines, lock, REPO, offline, "local")
    assert refused.value.exit_code == 3
    assert "paddlepaddle==2.6.2" in str(refused.value) and "decorator==" not in str(refused.value)

    stranger = make_wheel(tmp_path, "alpha", "1.0")
    done = run_cli("toolchain", "import", str(stranger), "--offline", env=env)
    assert done.returncode == 2 and "not a wheel pinned" in done.stderr, done.stderr

    done = run_under_umask("import sys; from reprobuild.cli import main; sys.exit(main(sys.argv[1:]))",
                           "toolchain", "import", str(paddle_wheelhouse), "--offline", "--root", str(REPO), env=env)
    assert done.returncode == 0, done.stderr
    assert check_wheelhouse(PADDLE_LOCK, house) == []
    assert_normal_modes(house)
    preflight.ensure_wheelhouses(pipelines, lock, REPO, offline, "local")  # all there: nothing raised
    assert not (cache / "paddle-env").exists()
