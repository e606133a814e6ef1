"""Toolchain provisioning against a real HTTP server on 127.0.0.1 and pip's real index protocol."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reprobuild import cli
from reprobuild.config.lock import load_lock
from reprobuild.toolchains.cache import ToolchainCache
from tests.conftest import GO_VERSION, TARBALL_NAME, run_cli, sha256
from tests.httpserver import LocalServer

pytestmark = pytest.mark.go


def _go_version(root: Path) -> str:
    out = subprocess.run([str(root / "bin" / "go"), "version"], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "GOTOOLCHAIN": "local"})
    return out.stdout


def test_fetch_by_url_installs_working_go_and_second_fetch_downloads_nothing(
        cache_dir: Path, url_lock: Path, served_tarball: LocalServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["toolchain", "fetch", "go", "--lock", str(url_lock), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    root = Path(result["fetched"][0]["path"])
    assert f"go{GO_VERSION}" in _go_version(root)
    assert served_tarball.downloads(f"/dl/{TARBALL_NAME}") == 1

    assert cli.main(["toolchain", "fetch", "go", "--lock", str(url_lock), "-q"]) == 0
    assert served_tarball.downloads(f"/dl/{TARBALL_NAME}") == 1, "a warm fetch must not download again"


def test_list_json_reports_state(cache_dir: Path, url_lock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["toolchain", "list", "--lock", str(url_lock), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["toolchains"]
    assert [(r["name"], r["version"], r["source"], r["platform"], r["state"]) for r in rows] == [
        ("go", GO_VERSION, "url", "linux-amd64", "missing")]
    assert cli.main(["toolchain", "fetch", "--lock", str(url_lock), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["toolchain", "list", "--lock", str(url_lock), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["toolchains"]
    assert row["state"] == "installed"
    assert Path(row["path"], "bin", "go").is_file()
    # The human listing shows the cache and each installed tree's path.
    assert cli.main(["toolchain", "list", "--lock", str(url_lock)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"cache: {cache_dir}"
    assert lines[1].split()[4:] == ["installed", row["path"]]


def test_verify_detects_tampering_after_install(cache_dir: Path, url_lock: Path) -> None:
    assert cli.main(["toolchain", "fetch", "--lock", str(url_lock), "-q"]) == 0
    assert cli.main(["toolchain", "verify", "--lock", str(url_lock)]) == 0
    lock = load_lock(url_lock)
    inst = ToolchainCache().ensure(lock.toolchain("go"))
    target = inst.root / "src" / "fmt" / "print.go"
    target.write_text(target.read_text() + "\n// tampered\n")
    assert cli.main(["toolchain", "verify", "--lock", str(url_lock)]) == 1
    # fetch repairs a damaged entry only when asked to verify; the record names the problem
    res = run_cli("toolchain", "verify", "--lock", str(url_lock), "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["toolchains"][0]["state"] == "corrupt"


def test_offline_with_empty_cache_names_the_import_command(cache_dir: Path, url_lock: Path) -> None:
    res = run_cli("toolchain", "fetch", "go", "--lock", str(url_lock), "--offline")
    assert res.returncode == 3
    assert TARBALL_NAME in res.stderr
    assert sha256_of_lock(url_lock) in res.stderr
    assert f"reprobuild toolchain import {TARBALL_NAME}" in res.stderr
    assert not (cache_dir / "toolchains").exists() or not any((cache_dir / "toolchains").iterdir())


def sha256_of_lock(lock_path: Path) -> str:
    pin = load_lock(lock_path).toolchain("go").platforms[0]
    return pin.files[0].sha256


def test_offline_env_variable_forbids_network(cache_dir: Path, url_lock: Path, served_tarball: LocalServer) -> None:
    res = run_cli("toolchain", "fetch", "--lock", str(url_lock), env={"REPROBUILD_OFFLINE": "1"})
    assert res.returncode == 3
    assert served_tarball.log == []


def test_import_right_archive_installs_wrong_one_is_refused(cache_dir: Path, url_lock: Path, go_tarball: Path,
                                                           tmp_path: Path, served_tarball: LocalServer) -> None:
    wrong = tmp_path / TARBALL_NAME
    data = bytearray(go_tarball.read_bytes()[:4096])
    wrong.write_bytes(bytes(data))
    res = run_cli("toolchain", "import", str(wrong), "--lock", str(url_lock), "--offline")
    assert res.returncode == 2
    assert "matches no archive pinned" in res.stderr
    assert not (cache_dir / "toolchains").exists()

    res = run_cli("toolchain", "import", str(go_tarball), "--lock", str(url_lock), "--offline", "--json")
    assert res.returncode == 0, res.stderr
    (installed,) = json.loads(res.stdout)["installed"]
    assert f"go{GO_VERSION}" in _go_version(Path(installed["path"]))
    assert served_tarball.log == [], "import must not touch the network"
    assert run_cli("toolchain", "fetch", "--lock", str(url_lock), "--offline").returncode == 0
    assert sha256(go_tarball) == sha256_of_lock(url_lock)
