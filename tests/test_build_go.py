"""The Go builder: same bytes everywhere, assertions that catch each missing flag, refusals before building."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reprobuild.errors import CheckFailed
from reprobuild.formats.gobuildinfo import parse_modinfo
from reprobuild.kinds.go import assertions as goassert
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.go
MINI = REPO / "tests" / "data" / "go-mini"

PIPELINE = """\
version: 1
name: mini
builder: go
toolchain: go
source: src
module_version: 2.0.0
targets:
  - name: hi
    package: ./cmd/hi
    platforms: [linux/amd64, linux/arm64]
    ldflags: {{main.version: "{{version}}"}}
    archive: {archive}
  - name: zv
    package: ./cmd/zv
    cgo: true
    platforms: [linux/amd64]
"""


def checkout(root: Path, archive: str = "tar.gz") -> Path:
    """A copy of the mini module with its pipeline and the repository's lock, as a user's checkout."""
    shutil.copytree(MINI, root / "src")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "mini.yaml").write_text(PIPELINE.format(archive=archive))
    shutil.copy(REPO / "toolchains.lock", root / "toolchains.lock")
    return root


def build(root: Path, cache: Path, *extra: str, env: dict[str, str] | None = None,
          umask: int | None = None) -> subprocess.CompletedProcess[str]:
    full = {"REPROBUILD_CACHE": str(cache), **(env or {})}
    if umask is None:
        return run_cli("build", "--out", "out", "--backend", "local", "--toolchain", "go=go-registry", *extra,
                       env=full, cwd=root)
    old = os.umask(umask)
    try:
        return run_cli("build", "--out", "out", "--backend", "local", "--toolchain", "go=go-registry", *extra,
                       env=full, cwd=root)
    finally:
        os.umask(old)


def test_same_bytes_from_two_checkouts_and_hostile_hosts(tmp_path: Path, go_registry: Any,
                                                         shared_cache_root: Path) -> None:
    a = checkout(tmp_path / "a")
    b = checkout(tmp_path / "checkout-with-a-much-longer-path" / "b")
    res_a = build(a, shared_cache_root, env={"TZ": "UTC", "LC_ALL": "C.UTF-8"}, umask=0o022)
    assert res_a.returncode == 0, res_a.stderr
    shutil.rmtree(shared_cache_root / "gocache", ignore_errors=True)  # cold build cache for b
    noise = {"TZ": "Asia/Kathmandu", "LC_ALL": "C", "GOFLAGS": "-mod=mod -ldflags=-X=main.version=evil",
             "CGO_CFLAGS": "-O0 -DEVIL", "GOAMD64": "v3", "GOTOOLCHAIN": "go1.99.0", "GOPROXY": "http://127.0.0.1:9",
             "SOURCE_DATE_EPOCH": ""}
    res_b = build(b, shared_cache_root, env=noise, umask=0o077)
    assert res_b.returncode == 0, res_b.stderr
    sums_a = (a / "out" / "SHA256SUMS").read_text()
    assert sums_a == (b / "out" / "SHA256SUMS").read_text()
    assert len(sums_a.splitlines()) == 5  # hi x2 platforms (+ archives), zv
    for root in (a, b):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=root / "out", check=True)
    assert (a / "out" / "manifest.json").read_bytes() == (b / "out" / "manifest.json").read_bytes()
    manifest = json.loads((a / "out" / "manifest.json").read_text())
    assert manifest["backend"] == "local" and manifest["hermetic"] is False
    assert manifest["toolchains"]["go"]["entry"] == "go-registry"
    assert manifest["toolchains"]["go"]["substituted"] is True
    assert manifest["substitutions"] == {"go": "go-registry"}
    assert {a["mode"] for a in manifest["artifacts"]} <= {"0644", "0755"}
    hi = a / "out" / "mini" / "hi_linux_amd64"
    assert subprocess.run([str(hi)], capture_output=True, text=True).stdout == "hi 2.0.0\n"
    zv = a / "out" / "mini" / "zv_linux_amd64"
    assert subprocess.run([str(zv)], capture_output=True, text=True).stdout.strip().startswith("1.")


def test_archive_is_normalized(tmp_path: Path, go_registry: Any, shared_cache_root: Path) -> None:
    import gzip
    import tarfile

    root = checkout(tmp_path / "c")
    assert build(root, shared_cache_root, env={"SOURCE_DATE_EPOCH": "1700000000"}).returncode == 0
    tgz = root / "out" / "mini" / "hi_linux_amd64.tar.gz"
    raw = tgz.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    assert not raw[3] & 0x08, "gzip header must carry no file name"
    with tarfile.open(tgz) as tf:
        (member,) = tf.getmembers()
    assert (member.name, member.mtime, member.uid, member.gid, member.uname, member.gname, member.mode) == (
        "hi", 1700000000, 0, 0, "", "", 0o755)
    assert gzip.decompress(raw)


@pytest.mark.slow
def test_output_does_not_depend_on_how_many_units_build_at_once(tmp_path: Path, go_registry: Any,
                                                               shared_cache_root: Path) -> None:
    """Units (and a target's platforms) run on threads; what is written must not show the order they finished in."""
    root = checkout(tmp_path / "j")
    outputs = {}
    for jobs in ("1", "4"):
        res = run_cli("build", "--out", f"out-{jobs}", "--backend", "local", "--toolchain", "go=go-registry",
                      "--no-cache", "--jobs", jobs, env={"REPROBUILD_CACHE": str(shared_cache_root)}, cwd=root)
        assert res.returncode == 0, res.stderr
        outputs[jobs] = {name: (root / f"out-{jobs}" / name).read_bytes()
                         for name in ("SHA256SUMS", "manifest.json", "provenance.json")}
    assert outputs["1"] == outputs["4"]
    assert len(outputs["1"]["SHA256SUMS"].splitlines()) == 5
    bad = run_cli("build", "--out", "out-0", "--jobs", "0", cwd=root)
    assert bad.returncode == 2 and "--jobs 0" in bad.stderr


def test_failed_build_leaves_previous_output_and_no_partial(tmp_path: Path, go_registry: Any,
                                                            shared_cache_root: Path) -> None:
    root = checkout(tmp_path / "d")
    assert build(root, shared_cache_root).returncode == 0
    before = (root / "out" / "SHA256SUMS").read_text()
    (root / "src" / "cmd" / "hi" / "main.go").write_text("package main\nfunc main() { undefined() }\n")
    res = build(root, shared_cache_root)
    assert res.returncode == 1
    assert "go build` of target `hi`" in res.stderr and "undefined" in res.stderr
    assert (root / "out" / "SHA256SUMS").read_text() == before
    assert [p.name for p in root.iterdir() if p.name.startswith(".out")] == []


def test_newer_go_directive_is_refused_before_building(tmp_path: Path, shared_cache_root: Path) -> None:
    root = checkout(tmp_path / "e")
    gomod = root / "src" / "go.mod"
    gomod.write_text(gomod.read_text().replace("go 1.19", "go 1.21"))
    empty_cache = tmp_path / "empty-cache"
    res = run_cli("build", "--out", "out", "--backend", "local", "--toolchain", "go=go-debian", "--offline",
                  env={"REPROBUILD_CACHE": str(empty_cache)}, cwd=root)
    assert res.returncode == 2, res.stderr
    assert f"{gomod}:3" in res.stderr
    assert "pins Go 1.19.8" in res.stderr
    assert "raise the pinned Go" in res.stderr and "lower the directive to `go 1.19`" in res.stderr
    assert not (empty_cache / "toolchains").exists(), "refused before fetching anything"


# --- each assertion fails on a binary built without its flag ------------------------------------

GOOD_FLAGS = ["-trimpath", "-buildvcs=false", "-ldflags=-buildid="]


def _go_build(go: Any, module: Path, out: Path, flags: list[str], cgo: bool = False, pkg: str = "./cmd/hi") -> Path:
    env = {"PATH": f"{go.root}/bin:/usr/bin:/bin", "HOME": str(out.parent), "GOROOT": str(go.root),
           "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off", "GOCACHE": str(out.parent / "gocache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "1" if cgo else "0"}
    subprocess.run([str(go.go), "build", *flags, "-o", str(out), pkg], cwd=module, env=env, check=True,
                   capture_output=True)
    return out


def _expect(go: Any, module: Path, cgo: bool = False) -> goassert.Expectation:
    return goassert.Expectation(target="hi", go_version="1.21.13", cgo=cgo, vendored={},
                                forbidden_paths=(str(module),))


@pytest.mark.parametrize(("flags", "cgo", "pkg", "message"), [
    (["-buildvcs=false", "-ldflags=-buildid="], False, "./cmd/hi", "not built with -trimpath"),
    (["-trimpath", "-buildvcs=false"], False, "./cmd/hi", "Go build ID present"),
    (["-trimpath", "-buildvcs=true", "-ldflags=-buildid="], False, "./cmd/hi", "VCS stamping present"),
    (["-trimpath", "-buildvcs=false", "-ldflags=-buildid="], True, "./cmd/zv", "GNU build ID present"),
], ids=["no-trimpath", "go-buildid", "vcs-stamp", "gnu-build-id"])
def test_each_assertion_catches_its_missing_flag(tmp_path: Path, go_registry: Any, flags: list[str], cgo: bool,
                                                 pkg: str, message: str) -> None:
    module = tmp_path / "module"
    shutil.copytree(MINI, module)
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
        subprocess.run(argv, cwd=module, env=git, check=True)
    good_flags = [*GOOD_FLAGS, "-ldflags=-buildid= -extldflags=-Wl,--build-id=none"] if cgo else GOOD_FLAGS
    good = _go_build(go_registry, module, tmp_path / "good", good_flags, cgo=cgo, pkg=pkg)
    goassert.check_binary(good, go_registry.go, _expect(go_registry, module, cgo))  # the control passes
    bad = _go_build(go_registry, module, tmp_path / "bad", flags, cgo=cgo, pkg=pkg)
    with pytest.raises(CheckFailed) as info:
        goassert.check_binary(bad, go_registry.go, _expect(go_registry, module, cgo))
    assert info.value.exit_code == 1
    assert "target `hi`" in str(info.value) and message in str(info.value)
    if message == "not built with -trimpath":
        assert f"embeds the path {module}" in str(info.value)


def test_dependency_versions_must_match_vendor(tmp_path: Path) -> None:
    info = parse_modinfo("go1.21.13", "dep\tgithub.com/a/b\tv1.2.0\t\nbuild\t-trimpath=true\nbuild\tCGO_ENABLED=0\n")
    exp = goassert.Expectation("t", "1.21.13", False, {"github.com/a/b": "v1.3.0"}, ())
    problems = goassert.binary_problems(Path("/bin/true"), info, exp)
    assert any("github.com/a/b is v1.2.0 in the binary, v1.3.0 in vendor/modules.txt" in p for p in problems)
