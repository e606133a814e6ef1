"""`compare_outputs` and `reprobuild compare`: output dirs, manifests, the CLI's outputs and exit codes,
and real Go binaries built here with the `go_registry` toolchain, each pair differing in one way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reprobuild.errors import BadInput, FileError
from reprobuild.evidence.compare import DIFFERS, ONLY_IN_A, ONLY_IN_B, CompareReport, compare_outputs, render_text
from reprobuild.formats.elf import ElfFile
from reprobuild.formats.gobuildinfo import from_go_version, read_build_info
from tests.conftest import REPO, run_cli
from tests.conftest import test_data_cache as data_cache

DATA = REPO / "tests" / "data"


def make_output(root: Path, files: dict[str, bytes | Path], modes: dict[str, int] | None = None) -> Path:
    """An output dir the way `reprobuild build` writes one: the files, SHA256SUMS and manifest.json."""
    artifacts = []
    for rel, content in sorted(files.items()):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, dest)
        else:
            dest.write_bytes(content)
        mode = (modes or {}).get(rel, 0o755 if isinstance(content, Path) else 0o644)
        dest.chmod(mode)
        data = dest.read_bytes()
        artifacts.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "mode": f"{mode:04o}"})
    (root / "SHA256SUMS").write_text("".join(f"{a['sha256']}  {a['path']}\n" for a in artifacts))
    manifest = {"artifacts": artifacts, "toolchains": {}, "backend": "local", "hermetic": False}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return root


def kinds_of(report: CompareReport, artifact: str) -> list[str]:
    [diff] = [d for d in report.differences if d.artifact == artifact]
    return [c.kind for c in diff.causes]


# -- output dirs and manifests -----------------------------------------------------------------------

def test_identical_dirs(tmp_path: Path) -> None:
    files: dict[str, bytes | Path] = {"stamp/out.txt": b"fixed\n", "go/hello": b"\x7fELF not really"}
    a, b = make_output(tmp_path / "a", files), make_output(tmp_path / "b", files)
    report = compare_outputs(a, b)
    assert report.identical and report.artifacts == 2 and report.count("identical") == 2
    done = run_cli("compare", str(a), str(b))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("2 artifacts: 2 identical — identical")


def test_a_file_changed_after_its_manifest_is_hashed_again_and_reported(tmp_path: Path) -> None:
    """compare reuses the build's digests only for files untouched since the manifest was written: an
    artifact edited afterwards, even to the same size, is hashed again and found out."""
    files: dict[str, bytes | Path] = {"stamp/out.txt": b"fixed\n", "stamp/other.txt": b"same\n"}
    a, b = make_output(tmp_path / "a", files), make_output(tmp_path / "b", files)
    written = (b / "manifest.json").stat().st_mtime_ns
    for side in (a, b):  # the build wrote its files before its manifest
        for rel in files:
            os.utime(side / rel, ns=(written - 10**9, written - 10**9))
    assert compare_outputs(a, b).identical
    (b / "stamp" / "out.txt").write_bytes(b"FIXED\n")  # same size, after the manifest
    report = compare_outputs(a, b)
    assert not report.identical and [d.artifact for d in report.differences] == ["stamp/out.txt"]
    assert any("stamp/out.txt does not match its recorded sha256" in w for w in report.warnings)


def test_only_in_a_and_only_in_b(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"common.txt": b"x\n", "old.txt": b"o\n"})
    b = make_output(tmp_path / "b", {"common.txt": b"x\n", "new.txt": b"n\n"})
    report = compare_outputs(a, b)
    assert [(d.artifact, d.status) for d in report.differences] == [("new.txt", ONLY_IN_B), ("old.txt", ONLY_IN_A)]
    assert report.kinds == ["missing"]
    assert report.count("identical") == 1
    done = run_cli("compare", str(a), str(b))
    assert done.returncode == 1
    assert "only in B  new.txt" in done.stdout and "only in A  old.txt" in done.stdout


def test_differing_text_artifact_explained(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"stamp/out.txt": b"built Sun Nov 22 04:06:57 UTC 2026\n"})
    b = make_output(tmp_path / "b", {"stamp/out.txt": b"built Sun Nov 22 04:07:31 UTC 2026\n"})
    report = compare_outputs(a, b)
    assert not report.identical and report.bytes_available
    assert kinds_of(report, "stamp/out.txt") == ["timestamp"]


def test_mode_only_difference(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"run.sh": b"#!/bin/sh\n"}, {"run.sh": 0o755})
    b = make_output(tmp_path / "b", {"run.sh": b"#!/bin/sh\n"}, {"run.sh": 0o700})
    report = compare_outputs(a, b)
    [diff] = report.differences
    assert diff.status == DIFFERS and [c.detail for c in diff.causes] == ["mode 0755 (A) vs 0700 (B)"]
    assert kinds_of(report, "run.sh") == ["file-mode"]


def test_manifest_vs_manifest(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"same.txt": b"s\n", "x.txt": b"one\n", "gone.txt": b"g\n"})
    b = make_output(tmp_path / "b", {"same.txt": b"s\n", "x.txt": b"two!\n"})
    report = compare_outputs(a / "manifest.json", b / "manifest.json")
    assert not report.bytes_available
    assert [(d.artifact, d.status) for d in report.differences] == [("gone.txt", ONLY_IN_A), ("x.txt", DIFFERS)]
    [cause] = report.differences[1].causes
    assert cause.kind == "content" and "not available" in cause.detail and "4 vs 5 bytes" in cause.detail
    text = render_text(report)
    assert "compared by hash only" in text
    # A dir against a manifest: still hashes only (one side has no bytes).
    assert not compare_outputs(a, b / "manifest.json").bytes_available


def test_sha256sums_only_dir(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"x.txt": b"1\n"})
    b = make_output(tmp_path / "b", {"x.txt": b"1\n"})
    (a / "manifest.json").unlink()
    assert compare_outputs(a, b).identical


def test_bad_input(tmp_path: Path) -> None:
    a = make_output(tmp_path / "a", {"x.txt": b"1\n"})
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="does not exist"):
        compare_outputs(a, tmp_path / "missing")
    with pytest.raises(BadInput, match="not a reprobuild output directory"):
        compare_outputs(a, tmp_path / "plain")
    (tmp_path / "broken.json").write_text('{"artifacts": [\n  {"path": "../x", "sha256": "00"}]}')
    with pytest.raises(FileError, match="must be relative"):
        compare_outputs(a, tmp_path / "broken.json")
    (tmp_path / "x.txt").unlink(missing_ok=True)
    (a / "x.txt").unlink()
    with pytest.raises(BadInput, match="not there"):
        compare_outputs(a, a)
    for args in ([str(a), str(tmp_path / "missing")], [str(tmp_path / "plain"), str(tmp_path / "plain")]):
        done = run_cli("compare", *args)
        assert done.returncode == 2 and "reprobuild: error:" in done.stderr, done.stderr


# -- the CLI's outputs -------------------------------------------------------------------------------

@pytest.fixture
def differing(tmp_path: Path) -> tuple[Path, Path]:
    return (make_output(tmp_path / "a", {"t.txt": b"2026-11-22T04:00:00Z\n", "only.txt": b"x"}),
            make_output(tmp_path / "b", {"t.txt": b"2026-11-22T05:00:00Z\n"}))


def test_json_on_stdout(differing: tuple[Path, Path]) -> None:
    a, b = differing
    for args in (["compare", str(a), str(b), "--json"], ["compare", "--json", str(a), str(b)]):
        done = run_cli(*args)
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["identical"] is False and report["a"] == str(a) and report["b"] == str(b)
        assert report["differences"] == [
            {"artifact": "only.txt", "status": "only-in-a", "causes": [{"kind": "missing", "detail": "only in A"}],
             "a": {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1, "mode": "0644"}, "b": None},
            {"artifact": "t.txt", "status": "differs",
             "causes": [{"kind": "timestamp", "detail": "@@ -1 +1 @@\n-2026-11-22T04:00:00Z\n+2026-11-22T05:00:00Z"}],
             "a": report["differences"][1]["a"], "b": report["differences"][1]["b"]},
        ]


def test_json_to_file_and_markdown(differing: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = differing
    out, summary = tmp_path / "report.json", tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    done = run_cli("compare", str(a), str(b), "--json", str(out), "--markdown", str(summary))
    assert done.returncode == 1, done.stderr
    assert json.loads(out.read_text())["identical"] is False
    assert "t.txt" in done.stdout and "NOT identical" in done.stdout  # the terse text still goes to stdout
    md = summary.read_text()
    assert md.startswith("earlier step\n### ❌ reprobuild compare")  # appended, as $GITHUB_STEP_SUMMARY wants
    assert "| `t.txt` | differs | `timestamp` |" in md and "```diff" in md
    done = run_cli("compare", str(a), str(b), "--markdown")
    assert done.stdout.startswith("### ❌ reprobuild compare")


def test_json_and_markdown_cannot_share_stdout(differing: tuple[Path, Path]) -> None:
    a, b = differing
    done = run_cli("compare", str(a), str(b), "--json", "--markdown")
    assert done.returncode == 2 and "both print on stdout" in done.stderr


def test_other_commands_keep_json_flag() -> None:
    from reprobuild.cli import build_parser

    args = build_parser().parse_args(["toolchain", "list", "--json"])
    assert args.json is True


# -- Go binaries -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoBuilds:
    go: Path
    base: Path  # -trimpath -buildvcs=false -ldflags=-buildid= : the reproducible recipe
    no_trimpath: Path
    with_buildid: Path
    vcs_stamped: Path
    vcs_off: Path  # same git checkout as vcs_stamped, -buildvcs=false
    dep_v101: Path  # the vendored dependency at v1.0.1 instead of v1.0.0


REPRODUCIBLE = ["-mod=vendor", "-trimpath", "-buildvcs=false", "-ldflags=-buildid="]


def go_env(work: Path, go: Path) -> dict[str, str]:
    # One build cache for every run of these tests: it saves minutes and never changes the output bytes.
    return {"PATH": f"{go.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(work / "home"),
            "GOCACHE": str(data_cache() / "gocache-compare"), "GOPATH": str(work / "gopath"),
            "GOTOOLCHAIN": "local", "GOFLAGS": "",
            "GOPROXY": "off", "GOSUMDB": "off", "CGO_ENABLED": "0", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
            "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def go_build(go: Path, src: Path, out: Path, flags: list[str], env: dict[str, str]) -> Path:
    done = subprocess.run([str(go), "build", *flags, "-o", str(out), "."], cwd=src, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def go_builds(go_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> GoBuilds:
    work = tmp_path_factory.mktemp("gobuilds")
    go = Path(go_registry.go)
    env = go_env(work, go)
    src = work / "src"
    shutil.copytree(DATA / "compare-gomod", src)
    bumped = work / "bumped"
    shutil.copytree(DATA / "compare-gomod", bumped)
    for name in ("go.mod", "vendor/modules.txt"):
        path = bumped / name
        path.write_text(path.read_text().replace("v1.0.0", "v1.0.1"))
    checkout = work / "checkout"
    shutil.copytree(DATA / "compare-gomod", checkout)
    for git in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "one commit"]):
        subprocess.run(["git", *git], cwd=checkout, env=env, check=True, capture_output=True)
    out = work / "bin"
    out.mkdir()
    stamped = [f for f in REPRODUCIBLE if f != "-buildvcs=false"]
    return GoBuilds(
        go=go,
        base=go_build(go, src, out / "base", REPRODUCIBLE, env),
        no_trimpath=go_build(go, src, out / "no-trimpath", [f for f in REPRODUCIBLE if f != "-trimpath"], env),
        with_buildid=go_build(go, src, out / "with-buildid", [f for f in REPRODUCIBLE if "buildid" not in f], env),
        vcs_stamped=go_build(go, checkout, out / "vcs-stamped", stamped, env),
        vcs_off=go_build(go, checkout, out / "vcs-off", REPRODUCIBLE, env),
        dep_v101=go_build(go, bumped, out / "dep-v101", REPRODUCIBLE, env),
    )


def compare_binaries(tmp_path: Path, a: Path, b: Path) -> CompareReport:
    return compare_outputs(make_output(tmp_path / "A", {"go-service/hello": a}),
                           make_output(tmp_path / "B", {"go-service/hello": b}))


@pytest.mark.go
@pytest.mark.slow
def test_go_trimpath(go_builds: GoBuilds, tmp_path: Path) -> None:
    report = compare_binaries(tmp_path, go_builds.no_trimpath, go_builds.base)
    assert kinds_of(report, "go-service/hello") == ["buildinfo", "embedded-path"]
    buildinfo, paths = report.differences[0].causes
    # Without -trimpath, build info also records -ldflags.
    assert buildinfo.detail == "build info: -ldflags: -buildid= (A) vs absent (B); -trimpath: absent (A) vs true (B)"
    src = str(go_builds.base.parent.parent / "src")
    assert f"under {src} in " in paths.detail and ".gopclntab" in paths.detail and "B: none" in paths.detail
    goroot = go_builds.go.parent.parent  # GOROOT leaks too (its middle may be cut)
    assert f"paths under {str(goroot)[:50]}" in paths.detail and f"/{goroot.name}/src in " in paths.detail


@pytest.mark.go
@pytest.mark.slow
def test_go_buildid(go_builds: GoBuilds, tmp_path: Path) -> None:
    report = compare_binaries(tmp_path, go_builds.with_buildid, go_builds.base)
    assert kinds_of(report, "go-service/hello") == ["go-buildid"]
    detail = report.differences[0].causes[0].detail
    assert detail.startswith("Go build ID (.note.go.buildid): only A has one (")
    assert detail.endswith("the other has none (built with -ldflags=-buildid=)")


@pytest.mark.go
@pytest.mark.slow
def test_go_vcs_stamp(go_builds: GoBuilds, tmp_path: Path) -> None:
    report = compare_binaries(tmp_path, go_builds.vcs_stamped, go_builds.vcs_off)
    assert kinds_of(report, "go-service/hello") == ["vcs-stamp"]
    detail = report.differences[0].causes[0].detail
    assert "vcs: git (A) vs absent (B)" in detail and "vcs.revision:" in detail
    assert "-buildvcs=false" in detail


@pytest.mark.go
@pytest.mark.slow
def test_go_dependency_line(go_builds: GoBuilds, tmp_path: Path) -> None:
    report = compare_binaries(tmp_path, go_builds.base, go_builds.dep_v101)
    assert kinds_of(report, "go-service/hello") == ["buildinfo"]
    assert report.differences[0].causes[0].detail == "build info: dep example.com/greet v1.0.0 (A) vs v1.0.1 (B)"


@pytest.mark.go
@pytest.mark.slow
def test_go_same_recipe_is_identical(go_builds: GoBuilds, tmp_path: Path) -> None:
    # The checkout and the plain copy differ in path and .git, which the reproducible recipe hides.
    assert compare_binaries(tmp_path, go_builds.base, go_builds.vcs_off).identical


@pytest.mark.go
@pytest.mark.slow
def test_build_info_reader_matches_go_version_m(go_builds: GoBuilds) -> None:
    for binary in (go_builds.base, go_builds.no_trimpath, go_builds.vcs_stamped, go_builds.dep_v101):
        ours = read_build_info(ElfFile(binary.read_bytes()))
        theirs = from_go_version(go_builds.go, binary)
        assert ours is not None and ours == theirs
        assert ours.go_version == "go1.21.13" and ours.path == "example.com/hello"


# -- the size and time bound -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_pair(go_registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("gohttp")
    go = Path(go_registry.go)
    env = go_env(work, go)
    src = work / "src"
    shutil.copytree(DATA / "compare-gohttp", src)
    a = go_build(go, src, work / "server-a", ["-buildvcs=false"], env)
    b = go_build(go, src, work / "server-b", ["-buildvcs=false", "-trimpath"], env)
    yield a, b


@pytest.mark.go
@pytest.mark.slow
def test_ten_megabyte_binaries_give_a_few_lines(big_pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = big_pair
    assert a.stat().st_size > 9_000_000 and b.stat().st_size > 9_000_000
    out_a = make_output(tmp_path / "A", {"server": a})
    out_b = make_output(tmp_path / "B", {"server": b})
    done = run_cli("compare", str(out_a), str(out_b))
    assert done.returncode == 1, done.stderr
    assert len(done.stdout.encode()) <= 4096, done.stdout
    assert "embedded-path" in done.stdout and "buildinfo" in done.stdout
    done = run_cli("compare", str(out_a), str(out_b), "--json")
    assert len(done.stdout.encode()) <= 6144


def test_diffoscope_option(differing: tuple[Path, Path]) -> None:
    a, b = differing
    done = run_cli("compare", str(a), str(b), "--diffoscope", "--json")
    assert done.returncode == 1, done.stderr
    [diff] = [d for d in json.loads(done.stdout)["differences"] if d["artifact"] == "t.txt"]
    if shutil.which("diffoscope"):
        assert "2026-11-22T04:00:00Z" in diff["diffoscope"] and "2026-11-22T05:00:00Z" in diff["diffoscope"]
    else:
        assert diff["diffoscope"] == "diffoscope is not installed (Debian package diffoscope-minimal)"
