"""`reprobuild vendor [--check]` and the vendoring library, with real Go and real module zips.

The third-party modules come from a file-based GOPROXY generated from examples/go-modules/ (plus a
few small modules made here); nothing touches a network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from reprobuild.commands.vendor import resolve_goproxy
from reprobuild.config.policy import PolicyRefused
from reprobuild.errors import CheckFailed, EnvironmentFailure
from reprobuild.kinds.go import goproxy
from reprobuild.kinds.go.goenv import GoSettings, go_environment
from reprobuild.kinds.go.gomod import read_modules_txt, vendored_versions
from reprobuild.kinds.go.mirror import write_module_mirror
from reprobuild.kinds.go.report import VendorReport
from reprobuild.kinds.go.vendor import vendor_module
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.go

EXAMPLE = REPO / "examples" / "go-service"
PIPELINE = REPO / "pipelines" / "go-service.yaml"


def snapshot(module_dir: Path) -> dict[str, bytes]:
    """go.mod, go.sum and every vendored file, by path."""
    files = {name: (module_dir / name).read_bytes() for name in ("go.mod", "go.sum") if (module_dir / name).exists()}
    vendor = module_dir / "vendor"
    if vendor.exists():
        files.update({p.relative_to(module_dir).as_posix(): p.read_bytes()
                      for p in sorted(vendor.rglob("*")) if p.is_file()})
    return files


def write_module(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="session")
def proxy_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """examples/go-modules plus an unused module and two small cgo modules, as a file GOPROXY."""
    mods = tmp_path_factory.mktemp("modules")
    shutil.copytree(REPO / "examples" / "go-modules", mods, dirs_exist_ok=True)
    write_module(mods / "example.com" / "unused@v1.0.0", {
        "go.mod": "module example.com/unused\n\ngo 1.20\n",
        "unused.go": "package unused\n\n// Nothing imports this.\nconst X = 1\n",
    })
    # cgo package whose header lives in a C-only directory that `go mod vendor` does not copy
    write_module(mods / "example.com" / "cdep@v1.0.0", {
        "go.mod": "module example.com/cdep\n\ngo 1.20\n",
        "include/cdep.h": "int cdep_answer(void);\n",
        "cdep.c": '#include "cdep.h"\nint cdep_answer(void) { return 42; }\n',
        "cdep.go": ('package cdep\n\n// #cgo CFLAGS: -I${SRCDIR}/include\n// #include "cdep.h"\nimport "C"\n\n'
                    "// Answer comes from C.\nfunc Answer() int { return int(C.cdep_answer()) }\n"),
    })
    # the same with a relative #include and no ${SRCDIR}
    write_module(mods / "example.com" / "crel@v1.0.0", {
        "go.mod": "module example.com/crel\n\ngo 1.20\n",
        "csrc/crel.h": "static int crel_answer(void) { return 42; }\n",
        "crel.go": ('package crel\n\n// #include "csrc/crel.h"\nimport "C"\n\n'
                    "// Answer comes from C.\nfunc Answer() int { return int(C.crel_answer()) }\n"),
    })
    # the same, with the header in the package directory: vendoring keeps everything
    write_module(mods / "example.com" / "cok@v1.0.0", {
        "go.mod": "module example.com/cok\n\ngo 1.20\n",
        "cok.h": "int cok_answer(void);\n",
        "cok.c": '#include "cok.h"\nint cok_answer(void) { return 7; }\n',
        "cok.go": ('package cok\n\n// #include "cok.h"\nimport "C"\n\n'
                   "// Answer comes from C.\nfunc Answer() int { return int(C.cok_answer()) }\n"),
    })
    return goproxy.write_file_proxy(mods, tmp_path_factory.mktemp("proxy") / "proxy")


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reprobuild cache root whose module cache the tests share (vendoring fills it)."""
    return tmp_path_factory.mktemp("vendor-cache")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository root holding the go-service pipeline and a copy of its example module."""
    root = tmp_path / "repo"
    (root / "pipelines").mkdir(parents=True)
    shutil.copy(PIPELINE, root / "pipelines" / "go-service.yaml")
    shutil.copytree(EXAMPLE, root / "examples" / "go-service")
    return root


def module_of(repo: Path) -> Path:
    return repo / "examples" / "go-service"


def cli_vendor(repo: Path, proxy_url: str, shared_cache_root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("vendor", "--root", str(repo), "--lock", str(REPO / "toolchains.lock"),
                   "--toolchain", "go=go-registry", "--goproxy", proxy_url, *extra,
                   env={"REPROBUILD_CACHE": str(shared_cache_root)})


def vendor(module_dir: Path, go: Any, proxy_url: str, cache_root: Path, check: bool) -> VendorReport:
    return vendor_module(module_dir, go, proxy_url, check, cache_root=cache_root)


# --- vendoring from scratch ----------------------------------------------------------------------

def test_vendoring_from_scratch_reproduces_the_committed_tree(tmp_path: Path, go_registry: Any,
                                                              proxy_url: str) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    shutil.rmtree(module / "vendor")
    (module / "go.sum").unlink()
    # no requirements at all: go mod tidy finds them from the imports, through the proxy
    (module / "go.mod").write_text("module example.com/reprobuild/go-service\n\ngo 1.20\n")
    cold = tmp_path / "cold-cache"  # nothing cached: every module comes from the proxy

    report = vendor(module, go_registry, proxy_url, cold, check=False)

    assert snapshot(module) == snapshot(EXAMPLE)
    assert set(report.applied) == {"go.mod", "go.sum", "vendor/"}
    assert sorted(report.requirements_added) == ["github.com/cespare/xxhash/v2 v2.1.1",
                                                 "github.com/google/uuid v1.3.0", "github.com/pkg/errors v0.9.1"]
    assert vendor(module, go_registry, proxy_url, cold, check=True).clean


def test_vendoring_a_clean_tree_changes_nothing(tmp_path: Path, go_registry: Any, proxy_url: str,
                                                warm_cache: Path) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    report = vendor(module, go_registry, proxy_url, warm_cache, check=False)
    assert report.applied == ()
    assert snapshot(module) == snapshot(EXAMPLE)


# --- vendor --check ----------------------------------------------------------------------------

def test_check_on_a_clean_tree_exits_0(repo: Path, proxy_url: str, shared_cache_root: Path,
                                       go_registry: Any) -> None:
    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    assert snapshot(module_of(repo)) == snapshot(EXAMPLE)


def _delete_vendored_file(module: Path) -> str:
    (module / "vendor" / "github.com" / "google" / "uuid" / "sql.go").unlink()
    return "vendor/github.com/google/uuid/sql.go"


def _add_unused_requirement(module: Path) -> str:
    with open(module / "go.mod", "a") as fh:
        fh.write("\nrequire example.com/unused v1.0.0\n")
    return "go.mod"


def _edit_go_sum_hash(module: Path) -> str:
    gosum = module / "go.sum"
    gosum.write_text(gosum.read_text().replace("h1:t6JiXgmwXMjEs8Vus", "h1:t6JiXgmwXMjEs8VuX"))
    return "go.sum"


def _drop_go_sum_line(module: Path) -> str:
    gosum = module / "go.sum"
    gosum.write_text("".join(line for line in gosum.read_text().splitlines(keepends=True)
                             if not line.startswith("github.com/pkg/errors v0.9.1 ")))
    return "go.sum"


def _malformed_go_sum_line(module: Path) -> str:
    with open(module / "go.sum", "a") as fh:
        fh.write("github.com/google/uuid v1.3.0\n")
    return "go.sum"


def _edit_vendored_file(module: Path) -> str:
    path = module / "vendor" / "github.com" / "pkg" / "errors" / "errors.go"
    path.write_text(path.read_text().replace("func New(", "func NewX("))
    return "vendor/github.com/pkg/errors/errors.go"


def _add_stray_vendored_file(module: Path) -> str:
    (module / "vendor" / "github.com" / "google" / "uuid" / "extra.go").write_text("package uuid\n")
    return "vendor/github.com/google/uuid/extra.go"


DRIFTS = {
    "deleted-vendored-file": _delete_vendored_file,
    "unused-requirement": _add_unused_requirement,
    "edited-go-sum-hash": _edit_go_sum_hash,
    "missing-go-sum-line": _drop_go_sum_line,
    "malformed-go-sum-line": _malformed_go_sum_line,
    "edited-vendored-file": _edit_vendored_file,
    "stray-vendored-file": _add_stray_vendored_file,
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_check_names_the_drift_and_exits_1(drift: str, repo: Path, proxy_url: str, shared_cache_root: Path,
                                           go_registry: Any) -> None:
    module = module_of(repo)
    drifted = DRIFTS[drift](module)
    before = snapshot(module)

    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check")

    assert done.returncode == 1, done.stdout + done.stderr
    assert drifted in done.stdout
    assert drifted in done.stderr  # the one-paragraph error names it too
    assert "run `reprobuild vendor`" in done.stderr
    assert snapshot(module) == before  # --check never writes


def test_check_shows_a_diff_of_go_mod(repo: Path, proxy_url: str, shared_cache_root: Path,
                                      go_registry: Any) -> None:
    _add_unused_requirement(module_of(repo))
    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check")
    assert done.returncode == 1
    assert "go mod tidy removes the unused requirement example.com/unused v1.0.0" in done.stdout
    assert "-require example.com/unused v1.0.0" in done.stdout


def test_check_explains_a_checksum_mismatch(tmp_path: Path, go_registry: Any, proxy_url: str,
                                            warm_cache: Path) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    _edit_go_sum_hash(module)
    report = vendor(module, go_registry, proxy_url, warm_cache, check=True)
    kinds = {(d.path, d.kind) for d in report.drift}
    assert ("go.sum", "checksum") in kinds
    detail = next(d.detail for d in report.drift if d.kind == "checksum")
    assert "github.com/google/uuid v1.3.0" in detail
    assert "recorded as h1:t6JiXgmwXMjEs8VuXXIJk2BXHsn+wx8BZdTaoZ5fu7I=" in detail  # the edited line
    assert "the module has h1:t6JiXgmwXMjEs8VusXIJk2BXHsn+wx8BZdTaoZ5fu7I=" in detail  # the real sum


def test_check_json(repo: Path, proxy_url: str, shared_cache_root: Path, go_registry: Any) -> None:
    import json

    _delete_vendored_file(module_of(repo))
    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check", "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["ok"] is False
    (mod,) = data["modules"]
    assert [d["path"] for d in mod["drift"]] == ["vendor/github.com/google/uuid/sql.go"]
    assert mod["modules_kept"] == 3 and mod["files_dropped"] > 0


def cli_check_offline(repo: Path, shared_cache_root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`vendor --check --offline` with no proxy that could answer (GOPROXY points at a closed port)."""
    return run_cli("vendor", "--check", "--offline", "--root", str(repo), "--lock", str(REPO / "toolchains.lock"),
                   "--toolchain", "go=go-registry", *extra,
                   env={"REPROBUILD_CACHE": str(shared_cache_root), "GOPROXY": "http://127.0.0.1:9/unreachable"})


def test_offline_check_passes_on_the_committed_vendor_tree_and_says_which_checks_ran(
        repo: Path, shared_cache_root: Path, go_registry: Any) -> None:
    done = cli_check_offline(repo, shared_cache_root)
    assert done.returncode == 0, done.stderr
    assert "checked: offline (go.mod, go.sum and vendor/modules.txt against each other" in done.stdout
    assert "every vendored file against vendor/reprobuild.sha256)" in done.stdout
    assert "the full re-vendor check did not run (--offline;" in done.stdout
    assert "up to date" in done.stdout
    # REPROBUILD_OFFLINE=1 is --offline
    env = {"REPROBUILD_CACHE": str(shared_cache_root), "REPROBUILD_OFFLINE": "1"}
    done = run_cli("vendor", "--check", "--root", str(repo), "--lock", str(REPO / "toolchains.lock"),
                   "--toolchain", "go=go-registry", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["modules"][0]["level"].startswith("offline (")


def test_committed_digests_are_what_vendoring_records() -> None:
    from reprobuild.kinds.go.vendorcheck import DIGESTS

    done = subprocess.run(["sha256sum", "--quiet", "--strict", "-c", DIGESTS], cwd=EXAMPLE / "vendor",
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {line.split("  ", 1)[1] for line in (EXAMPLE / "vendor" / DIGESTS).read_text().splitlines()}
    on_disk = {p.relative_to(EXAMPLE / "vendor").as_posix() for p in (EXAMPLE / "vendor").rglob("*") if p.is_file()}
    assert listed == on_disk - {DIGESTS}


def test_offline_check_names_an_edited_vendored_file(repo: Path, shared_cache_root: Path,
                                                     go_registry: Any) -> None:
    edited = module_of(repo) / "vendor" / "github.com" / "google" / "uuid" / "uuid.go"
    edited.write_text(edited.read_text() + "\n// a local patch\n")  # still compiles: only the digest sees it
    done = cli_check_offline(repo, shared_cache_root)
    assert done.returncode == 1, done.stderr
    assert "vendor/github.com/google/uuid/uuid.go: differs from the digest `reprobuild vendor` recorded" in done.stdout
    assert "vendor/github.com/google/uuid/uuid.go" in done.stderr and "checked: offline" in done.stderr
    assert "run `reprobuild vendor`" in done.stderr


def test_offline_check_names_a_changed_go_mod_requirement(repo: Path, shared_cache_root: Path,
                                                          go_registry: Any) -> None:
    gomod = module_of(repo) / "go.mod"
    gomod.write_text(gomod.read_text().replace("github.com/pkg/errors v0.9.1", "github.com/pkg/errors v0.9.0"))
    done = cli_check_offline(repo, shared_cache_root)
    assert done.returncode == 1, done.stderr
    assert ("go.mod requires github.com/pkg/errors v0.9.0, but vendor/ holds github.com/pkg/errors v0.9.1"
            in done.stdout)
    assert "Go's vendor check" in done.stdout  # Go's own consistency check agrees


def test_offline_check_names_a_missing_package_and_go_sum_line(repo: Path, shared_cache_root: Path,
                                                               go_registry: Any) -> None:
    module = module_of(repo)
    shutil.rmtree(module / "vendor" / "github.com" / "pkg" / "errors")
    gosum = module / "go.sum"
    gosum.write_text("".join(line + "\n" for line in gosum.read_text().splitlines()
                             if not line.startswith("github.com/google/uuid v1.3.0 ")))
    done = cli_check_offline(repo, shared_cache_root)
    assert done.returncode == 1, done.stderr
    assert "vendor/github.com/pkg/errors: missing from the tree" in done.stdout
    assert "go.sum has no `github.com/google/uuid v1.3.0 h1:` line" in done.stdout


def test_full_check_runs_with_a_proxy_and_says_so(repo: Path, proxy_url: str, shared_cache_root: Path,
                                                  go_registry: Any) -> None:
    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check")
    assert done.returncode == 0, done.stderr
    assert f"full (re-vendored through GOPROXY {proxy_url} and compared)" in done.stdout


def test_unreachable_proxy_error_is_whole_and_names_the_ways_out(tmp_path: Path, go_registry: Any) -> None:
    """A cold module cache and a proxy that does not answer: Go's whole error (the module it wanted comes
    first) with the --goproxy/--mirror/--offline hint, exit 3."""
    shutil.copytree(EXAMPLE, tmp_path / "m")
    with pytest.raises(EnvironmentFailure) as err:
        vendor_module(tmp_path / "m", go_registry, "http://127.0.0.1:9/unreachable", True,
                      cache_root=tmp_path / "cache")
    text = str(err.value)
    assert "go mod tidy" in text and "github.com/" in text and "127.0.0.1:9" in text
    assert "--goproxy" in text and "--mirror" in text and "--check --offline" in text
    assert err.value.exit_code == 3


# --- applying ----------------------------------------------------------------------------------

def test_vendor_repairs_drift(repo: Path, proxy_url: str, shared_cache_root: Path, go_registry: Any) -> None:
    module = module_of(repo)
    _delete_vendored_file(module)
    _add_unused_requirement(module)
    _add_stray_vendored_file(module)
    _drop_go_sum_line(module)
    done = cli_vendor(repo, proxy_url, shared_cache_root)
    assert done.returncode == 0, done.stderr
    assert snapshot(module) == snapshot(EXAMPLE)
    assert not [p for p in module.iterdir() if p.name.startswith(".vendor")]
    assert cli_vendor(repo, proxy_url, shared_cache_root, "--check").returncode == 0


def test_vendor_refuses_a_go_sum_that_disagrees_with_the_module(repo: Path, proxy_url: str, shared_cache_root: Path,
                                                                go_registry: Any) -> None:
    module = module_of(repo)
    _edit_go_sum_hash(module)
    before = snapshot(module)
    done = cli_vendor(repo, proxy_url, shared_cache_root)
    assert done.returncode == 1
    assert "SECURITY" in done.stderr and "github.com/google/uuid" in done.stderr
    assert snapshot(module) == before


def test_library_raises_check_failed_on_a_bad_go_sum(tmp_path: Path, go_registry: Any, proxy_url: str,
                                                     warm_cache: Path) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    _edit_go_sum_hash(module)
    with pytest.raises(CheckFailed, match=r"go\.sum"):
        vendor(module, go_registry, proxy_url, warm_cache, check=False)


# --- the pruning report ------------------------------------------------------------------------

def test_pruning_report_is_consistent(tmp_path: Path, go_registry: Any, proxy_url: str, warm_cache: Path) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    report = vendor(module, go_registry, proxy_url, warm_cache, check=True)
    assert report.clean and report.warnings == ()
    assert [m.path for m in report.modules] == ["github.com/cespare/xxhash/v2", "github.com/google/uuid",
                                                "github.com/pkg/errors"]
    assert report.packages_kept == 3
    assert report.files_dropped > 0 and report.bytes_saved > 0
    for m in report.modules:
        vendored = [p for p in (module / "vendor" / m.path).rglob("*") if p.is_file()]
        assert m.files_kept == len(vendored)
        assert m.bytes_kept == sum(p.stat().st_size for p in vendored)
        assert m.files_kept + m.files_dropped == m.files_in_zip
        assert sum(m.dropped.values()) == m.files_dropped
        assert m.bytes_saved == m.bytes_in_zip - m.bytes_kept >= 0
    xxhash = report.modules[0]
    assert xxhash.dropped["unused packages"] == 1  # xxhsum/, the command line tool
    assert xxhash.dropped["tests"] == 2
    data = report.to_json()
    assert data["files_dropped"] == report.files_dropped and data["modules_kept"] == 3


def test_modules_txt_parsing(tmp_path: Path) -> None:
    path = tmp_path / "modules.txt"
    path.write_text("# a.example/x v1.0.0\n## explicit; go 1.18\na.example/x\na.example/x/sub\n"
                    "# b.example/y v1.2.0 => c.example/y v1.3.0\n## explicit\nb.example/y\n"
                    "# d.example/z v0.1.0 => ../z\nd.example/z\n# e.example/graph-only v1.0.0\n")
    mods = read_modules_txt(path)
    assert [(m.path, m.version, m.packages, m.source_path, m.source_version) for m in mods] == [
        ("a.example/x", "v1.0.0", ("a.example/x", "a.example/x/sub"), "a.example/x", "v1.0.0"),
        ("b.example/y", "v1.2.0", ("b.example/y",), "c.example/y", "v1.3.0"),
        ("d.example/z", "v0.1.0", ("d.example/z",), "../z", ""),
        ("e.example/graph-only", "v1.0.0", (), "e.example/graph-only", "v1.0.0"),
    ]


def test_the_assertions_read_modules_txt_with_the_same_parser(tmp_path: Path) -> None:
    """What the Go builder checks binaries against comes from read_modules_txt too (one parser)."""
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "modules.txt").write_text(
        "# a.example/x v1.0.0\n## explicit; go 1.18\na.example/x\n"
        "# b.example/y v1.2.0 => c.example/y v1.3.0\n## explicit\nb.example/y\n"
        "# d.example/z v0.1.0 => ../z\nd.example/z\n# f.example/w => ../w\n## explicit\n")
    assert vendored_versions(tmp_path) == {"a.example/x": "v1.0.0", "b.example/y": "v1.2.0 => c.example/y v1.3.0",
                                           "d.example/z": "v0.1.0"}
    assert vendored_versions(tmp_path / "nowhere") == {}


# --- non-Go files vendoring drops ---------------------------------------------------------------

def _cgo_consumer(root: Path, dep: str) -> Path:
    return write_module(root, {
        "go.mod": f"module example.com/consumer\n\ngo 1.20\n\nrequire {dep} v1.0.0\n",
        "main.go": (f'package main\n\nimport (\n\t"fmt"\n\n\tdep "{dep}"\n)\n\n'
                    "func main() { fmt.Println(dep.Answer()) }\n"),
    })


def build_env(go: Any, home: Path, gocache: Path) -> dict[str, str]:
    """A plain Go build environment; the build cache is shared between runs (it never changes output bytes)."""
    return {"PATH": f"{go.root / 'bin'}:/usr/bin:/bin", "HOME": str(home), "GOROOT": str(go.root),
            "GOTOOLCHAIN": "local", "GOENV": "off", "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOSUMDB": "off",
            "GOCACHE": str(gocache), "GOPATH": str(home / "gopath"), "CGO_ENABLED": "1"}


def _build(module: Path, go: Any, home: Path, gocache: Path) -> subprocess.CompletedProcess[str]:
    env = build_env(go, home, gocache)
    return subprocess.run([str(go.go), "build", "-o", str(module / "app"), "."], cwd=module, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize(("dep", "header"), [("cdep", "include/cdep.h"), ("crel", "csrc/crel.h")])
def test_warns_when_vendoring_drops_a_header_a_cgo_package_needs(dep: str, header: str, tmp_path: Path,
                                                                 go_registry: Any, proxy_url: str, warm_cache: Path,
                                                                 shared_cache_root: Path) -> None:
    module = _cgo_consumer(tmp_path / "consumer", f"example.com/{dep}")
    report = vendor(module, go_registry, proxy_url, warm_cache, check=False)

    (warning,) = report.warnings
    assert f"dropped {header}, which cgo package example.com/{dep} needs" in warning
    assert not (module / "vendor" / "example.com" / dep / header).exists()
    if dep == "cdep":
        assert (module / "vendor" / "example.com" / "cdep" / "cdep.c").exists()  # in the package dir: kept
    # the warning is real: building from vendor/ fails for want of the header
    done = _build(module, go_registry, tmp_path, shared_cache_root / "go" / "build")
    assert done.returncode != 0 and Path(header).name in done.stderr


def test_no_warning_when_vendoring_keeps_the_c_sources(tmp_path: Path, go_registry: Any, proxy_url: str,
                                                       warm_cache: Path, shared_cache_root: Path) -> None:
    module = _cgo_consumer(tmp_path / "consumer", "example.com/cok")
    report = vendor(module, go_registry, proxy_url, warm_cache, check=False)
    assert report.warnings == ()
    assert (module / "vendor" / "example.com" / "cok" / "cok.h").exists()
    done = _build(module, go_registry, tmp_path, shared_cache_root / "go" / "build")
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(module / "app")], capture_output=True, text=True).stdout == "7\n"


# --- the module mirror ---------------------------------------------------------------------------

def test_module_mirror_serves_an_offline_vendoring(tmp_path: Path, go_registry: Any, proxy_url: str,
                                                   warm_cache: Path) -> None:
    settings = GoSettings(go_registry, warm_cache, proxy_url)
    vendor(EXAMPLE, go_registry, proxy_url, warm_cache, check=True)  # the cache holds the modules
    mirror = write_module_mirror([EXAMPLE], tmp_path / "mirror", settings)
    assert mirror.zips == ("github.com/cespare/xxhash/v2 v2.1.1", "github.com/google/uuid v1.3.0",
                           "github.com/pkg/errors v0.9.1")
    proxy_dir = Path(proxy_url.removeprefix("file://"))
    for rel in ["github.com/google/uuid/@v/v1.3.0.zip", "github.com/pkg/errors/@v/v0.9.1.mod",
                "github.com/cespare/xxhash/v2/@v/list"]:
        assert (tmp_path / "mirror" / rel).read_bytes() == (proxy_dir / rel).read_bytes(), rel

    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    shutil.rmtree(module / "vendor")
    (module / "go.sum").unlink()
    vendor(module, go_registry, mirror.url, tmp_path / "empty-cache", check=False)
    assert snapshot(module) == snapshot(EXAMPLE)


def test_cli_writes_a_mirror(repo: Path, proxy_url: str, shared_cache_root: Path, go_registry: Any,
                             tmp_path: Path) -> None:
    done = cli_vendor(repo, proxy_url, shared_cache_root, "--check", "--mirror", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    assert "GOPROXY=file://" in done.stdout
    assert (tmp_path / "m" / "github.com" / "google" / "uuid" / "@v" / "v1.3.0.zip").is_file()


# --- the environment Go runs with ---------------------------------------------------------------

def test_go_environment_is_explicit(go_registry: Any, tmp_path: Path) -> None:
    host = {"PATH": "/usr/bin", "HOME": "/home/u", "GOFLAGS": "-mod=vendor -tags=evil", "GOPROXY": "https://x",
            "GOTOOLCHAIN": "go1.99.0", "CGO_CFLAGS": "-O0", "GOPRIVATE": "corp.example", "HTTPS_PROXY": "http://p:3128"}
    env = go_environment(GoSettings(go_registry, tmp_path, "file:///m"), host)
    assert env["GOFLAGS"] == "-mod=mod -modcacherw"
    assert env["GOTOOLCHAIN"] == "local" and env["GOENV"] == "off" and env["GOWORK"] == "off"
    assert env["GOPROXY"] == "file:///m" and env["GOSUMDB"] == "off"
    assert env["GOPRIVATE"] == "corp.example" and env["HTTPS_PROXY"] == "http://p:3128"
    assert "CGO_CFLAGS" not in env
    assert env["GOMODCACHE"].startswith(str(tmp_path))
    # no --goproxy: Go's own default, and Go's own checksum database
    default = go_environment(GoSettings(go_registry, tmp_path, None), host)
    assert "GOPROXY" not in default and "GOSUMDB" not in default
    offline = go_environment(GoSettings(go_registry, tmp_path, "https://x", offline=True), host)
    assert offline["GOPROXY"] == "off"


def test_goproxy_precedence() -> None:
    assert resolve_goproxy("file:///flag", {"GOPROXY": "https://env"}) == "file:///flag"
    assert resolve_goproxy(None, {"GOPROXY": "https://env"}) == "https://env"
    assert resolve_goproxy(None, {}) is None


# --- the example itself ---------------------------------------------------------------------------

def test_example_builds_from_vendor_and_runs(tmp_path: Path, go_registry: Any, shared_cache_root: Path) -> None:
    env = build_env(go_registry, tmp_path, shared_cache_root / "go" / "build")
    work = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, work)
    bins = tmp_path / "bin"
    subprocess.run([str(go_registry.go), "build", "-mod=vendor", "-trimpath", "-o", f"{bins}/", "./..."],
                   cwd=work, env=env, check=True, capture_output=True)

    hello = subprocess.run([str(bins / "hello")], capture_output=True, text=True, check=True).stdout
    assert hello == ("hello, reprobuild (go-service dev)\n"
                     "uuid:  04df7142-6579-53a5-88a8-6eb06f980894\n"
                     "xxh64: b635c98b7a9ce9c6\n")

    data = b"reprobuild builds the same bytes everywhere\n" * 50
    out = subprocess.run([str(bins / "zpack")], input=data, capture_output=True, check=True).stdout.decode()
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert int(fields["bytes"]) == len(data)
    assert int(fields["crc32"], 16) == zlib.crc32(data)
    assert int(fields["adler32"], 16) == zlib.adler32(data)
    assert int(fields["compressed"]) == len(zlib.compress(data, 9))

    arm = tmp_path / "hello-arm64"
    subprocess.run([str(go_registry.go), "build", "-mod=vendor", "-trimpath", "-o", str(arm), "./cmd/hello"],
                   cwd=work, env={**env, "CGO_ENABLED": "0", "GOARCH": "arm64"}, check=True, capture_output=True)
    header = arm.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_example_requires_two_third_party_modules_and_go_1_20() -> None:
    gomod = (EXAMPLE / "go.mod").read_text()
    assert "\ngo 1.20\n" in gomod and "toolchain" not in gomod
    vendored = read_modules_txt(EXAMPLE / "vendor" / "modules.txt")
    assert len([m for m in vendored if m.packages]) >= 2
    assert 'import "C"' in (EXAMPLE / "internal" / "checksum" / "checksum.go").read_text()
    assert os.path.isdir(EXAMPLE / "cmd" / "hello") and os.path.isdir(EXAMPLE / "cmd" / "zpack")


def test_a_go_directive_newer_than_the_pinned_go_is_refused_first(tmp_path: Path, go_registry: Any, proxy_url: str,
                                                                  warm_cache: Path) -> None:
    module = tmp_path / "go-service"
    shutil.copytree(EXAMPLE, module)
    gomod = module / "go.mod"
    gomod.write_text(gomod.read_text().replace("\ngo 1.20\n", "\ngo 1.22\n"))
    with pytest.raises(PolicyRefused) as info:
        vendor(module, go_registry, proxy_url, warm_cache, check=True)
    assert info.value.exit_code == 2
    assert f"{gomod}:3" in str(info.value) and "lower the directive to `go 1.21`" in str(info.value)


def test_unknown_toolchain_entry_is_bad_input(repo: Path, proxy_url: str, shared_cache_root: Path) -> None:
    done = run_cli("vendor", "--check", "--root", str(repo), "--lock", str(REPO / "toolchains.lock"),
                   "--toolchain", "go=nope", "--goproxy", proxy_url, env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert done.returncode == 2
    assert "no entry `nope`" in done.stderr


def test_no_go_pipeline_is_bad_input(tmp_path: Path, shared_cache_root: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "pipelines" / "stamp.yaml").write_text(
        "version: 1\nname: stamp\nbuilder: command\nsource: src\nrun: 'true'\nartifacts: ['*']\n")
    done = run_cli("vendor", "--check", "--root", str(tmp_path), "--lock", str(REPO / "toolchains.lock"),
                   env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert done.returncode == 2, done.stderr
    assert "nothing to vendor" in done.stderr
