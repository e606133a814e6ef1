"""Issue 15, item 4: a toolchain tree changed after install is refused before use (exit 3), `toolchain fetch`
reinstalls it, and `toolchain verify NAME` ignores platforms that were never installed here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reprobuild.config.lock import load_lock
from reprobuild.errors import IntegrityError
from reprobuild.toolchains.cache import ToolchainCache
from tests.conftest import run_cli, url_entry, write_lock
from tests.hostile import tar_archive, tar_member
from tests.httpserver import LocalServer

TREE = [("go/VERSION", b"go1.21.13"), ("go/bin/go", b"#!/bin/sh\necho go\n"), ("go/src/fmt/print.go", b"package fmt\n")]


def _lock(tmp_path: Path, server: LocalServer, platforms: tuple[str, ...] = ("linux-amd64",)) -> Path:
    body = tar_archive([(tar_member(n, d, mode=0o755), d) for n, d in TREE], compression="gz")
    server.add("/dl/go.tar.gz", body=body)
    entry = url_entry("go", "go.tar.gz", hashlib.sha256(body).hexdigest(), len(body), [server.url("/dl/go.tar.gz")])
    pin = entry["platforms"]["linux-amd64"]
    entry["platforms"] = {p: pin for p in platforms}
    if len(platforms) > 1:  # another platform's archive: a different pin that is never installed here
        other = dict(pin, files=[dict(pin["files"][0], sha256="1" * 64)])
        entry["platforms"][platforms[1]] = other
    return write_lock(tmp_path / "toolchains.lock", {"go": entry})


TAMPERS = {  # one line per way of changing an installed tree
    "append-to-binary": lambda root: (root / "bin" / "go").open("ab").write(b"# evil\n"),
    "add-stdlib-file": lambda root: (root / "src" / "fmt" / "evil.go").write_text("package fmt\n"),
    "remove-file": lambda root: (root / "VERSION").unlink(),
}


@pytest.mark.parametrize("how", sorted(TAMPERS))
def test_tampered_tree_is_refused_then_fetch_repairs_it(how: str, tmp_path: Path, cache_dir: Path,
                                                        server: LocalServer) -> None:
    lock_path = _lock(tmp_path, server)
    tc = load_lock(lock_path).toolchains["go"]
    inst = ToolchainCache().ensure(tc, "linux-amd64")
    TAMPERS[how](inst.root)
    with pytest.raises(IntegrityError, match="modified after it was installed") as err:
        ToolchainCache().ensure(tc, "linux-amd64")  # a new process: the stat check runs
    assert err.value.exit_code == 3
    fetched = run_cli("toolchain", "fetch", "go", "--platform", "linux-amd64", "--lock", str(lock_path))
    assert fetched.returncode == 0, fetched.stderr
    again = ToolchainCache().ensure(tc, "linux-amd64")
    assert (again.root / "bin" / "go").read_bytes() == TREE[1][1]
    assert not (again.root / "src" / "fmt" / "evil.go").exists()


def test_touched_but_unchanged_tree_is_still_used(tmp_path: Path, cache_dir: Path, server: LocalServer) -> None:
    import os

    tc = load_lock(_lock(tmp_path, server)).toolchains["go"]
    inst = ToolchainCache().ensure(tc, "linux-amd64")
    os.utime(inst.root / "VERSION", (0, 0))
    assert ToolchainCache().ensure(tc, "linux-amd64").root == inst.root


def test_verify_name_ignores_platforms_not_installed(tmp_path: Path, cache_dir: Path, server: LocalServer) -> None:
    lock_path = _lock(tmp_path, server, ("linux-amd64", "linux-arm64"))
    assert run_cli("toolchain", "fetch", "go", "--platform", "linux-amd64", "--lock", str(lock_path)).returncode == 0
    done = run_cli("toolchain", "verify", "go", "--lock", str(lock_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "linux-arm64" not in done.stdout
