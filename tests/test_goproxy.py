"""File-based module proxies made from module source trees: layout, zips, sums, determinism."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from reprobuild.errors import BadInput
from reprobuild.kinds.go import goproxy
from tests.conftest import REPO

MODULES = REPO / "examples" / "go-modules"

# The sums the public checksum database holds for these releases: the committed trees are the
# upstream release trees, so the zips made from them must hash the same.
UPSTREAM_SUMS = {
    ("github.com/cespare/xxhash/v2", "v2.1.1"): ("h1:6MnRN8NT7+YBpUIWxHtefFZOKTAPgGjpQSxqLNn0+qY=",
                                                "h1:VGX0DQ3Q6kWi7AoAeZDth3/j3BFtOZR5XLFGgcrjCOs="),
    ("github.com/google/uuid", "v1.3.0"): ("h1:t6JiXgmwXMjEs8VusXIJk2BXHsn+wx8BZdTaoZ5fu7I=",
                                          "h1:TIyPZe4MgqvfeYDBFedMoGGpEw/LqOeaOT+nhxU+yHo="),
    ("github.com/pkg/errors", "v0.9.1"): ("h1:FEBLx1zS214owpjy7qsBeixbURkuhQAwrK5UwLGTwt4=",
                                         "h1:bwawxfHBFNV+L2hUp1rHADufV3IMtnDRdf1r5NINEl0="),
}


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_example_modules_are_found() -> None:
    found = [(m.path, m.version) for m in goproxy.find_modules(MODULES)]
    assert found == sorted(UPSTREAM_SUMS)


@pytest.mark.parametrize(("path", "version"), sorted(UPSTREAM_SUMS))
def test_zips_hash_to_the_upstream_sums(path: str, version: str) -> None:
    src = next(m for m in goproxy.find_modules(MODULES) if (m.path, m.version) == (path, version))
    assert (goproxy.module_h1(src), goproxy.go_mod_h1(src)) == UPSTREAM_SUMS[(path, version)]


def test_example_go_sum_matches_the_module_trees() -> None:
    lines = set((REPO / "examples" / "go-service" / "go.sum").read_text().splitlines())
    for (path, version), (h1, gomod_h1) in UPSTREAM_SUMS.items():
        assert f"{path} {version} {h1}" in lines
        assert f"{path} {version}/go.mod {gomod_h1}" in lines


def test_proxy_layout(tmp_path: Path) -> None:
    url = goproxy.write_file_proxy(MODULES, tmp_path / "proxy")
    assert url == (tmp_path / "proxy").resolve().as_uri()
    vdir = tmp_path / "proxy" / "github.com" / "cespare" / "xxhash" / "v2" / "@v"
    assert (vdir / "list").read_text() == "v2.1.1\n"
    assert json.loads((vdir / "v2.1.1.info").read_text()) == {"Version": "v2.1.1"}
    assert (vdir / "v2.1.1.mod").read_text().startswith("module github.com/cespare/xxhash/v2\n")
    with zipfile.ZipFile(vdir / "v2.1.1.zip") as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert all(n.startswith("github.com/cespare/xxhash/v2@v2.1.1/") for n in names)
    assert "github.com/cespare/xxhash/v2@v2.1.1/xxhash_amd64.s" in names
    # xxhashbench/ has its own go.mod: a nested module is never part of the zip
    assert not any("/xxhashbench/" in n for n in names)
    # pkg/errors v0.9.1 has no go.mod: the proxy serves the one Go synthesizes
    errors_mod = tmp_path / "proxy" / "github.com" / "pkg" / "errors" / "@v" / "v0.9.1.mod"
    assert errors_mod.read_text() == "module github.com/pkg/errors\n"


def test_proxy_is_deterministic(tmp_path: Path) -> None:
    goproxy.write_file_proxy(MODULES, tmp_path / "a")
    goproxy.write_file_proxy(MODULES, tmp_path / "b")
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b
    assert len(a) == 4 * len(UPSTREAM_SUMS)


def test_rewriting_replaces_the_whole_proxy(tmp_path: Path) -> None:
    dest = tmp_path / "proxy"
    goproxy.write_file_proxy(MODULES, dest)
    (dest / "stale").write_text("left over")
    goproxy.write_file_proxy(MODULES, dest)
    assert not (dest / "stale").exists()


def test_module_files_follow_the_go_zip_rules(tmp_path: Path) -> None:
    root = tmp_path / "mods" / "example.com" / "m@v1.0.0"
    for rel in ["go.mod", "m.go", "sub/s.go", ".git/HEAD", "nested/go.mod", "nested/n.go",
                "vendor/modules.txt", "vendor/example.com/x/x.go", "testdata/t.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("module example.com/m\n" if rel == "go.mod" else "x\n")
    (root / "link.go").symlink_to(root / "m.go")
    (src,) = goproxy.find_modules(tmp_path / "mods")
    assert (src.path, src.version) == ("example.com/m", "v1.0.0")
    assert [rel for rel, _ in goproxy.module_files(src)] == [
        "go.mod", "m.go", "sub/s.go", "testdata/t.txt", "vendor/modules.txt"]


def test_case_encoding_round_trips() -> None:
    assert goproxy.escape_path("github.com/BurntSushi/toml") == "github.com/!burnt!sushi/toml"
    assert goproxy.unescape_path("github.com/!burnt!sushi/toml") == "github.com/BurntSushi/toml"


def test_h1_sum_is_gos_dirhash() -> None:
    # dirhash.Hash1 over one file "a" holding "hello\n", computed by hand from its definition
    line = hashlib.sha256(b"hello\n").hexdigest() + "  a\n"
    want = "h1:" + base64.b64encode(hashlib.sha256(line.encode()).digest()).decode()
    assert goproxy.h1_sum([("a", b"hello\n")]) == want


def test_empty_modules_dir_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no module trees"):
        goproxy.write_file_proxy(tmp_path, tmp_path / "proxy")
    with pytest.raises(BadInput, match="not a directory"):
        goproxy.write_file_proxy(tmp_path / "missing", tmp_path / "proxy")
