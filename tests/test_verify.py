"""`verify`: clean builds pass; each classic source of irreproducibility is caught and blamed on its variation.

The same cases run through the local backend and (with an engine) the Docker backend.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprobuild.evidence.verify import ALL_VARIATIONS, DEFAULT_VARIATIONS, parse_vary, perturbation
from tests.conftest import REPO, run_cli

CASES = {
    # name: (command writing to $OUT, the variation that must be named)
    "time": ("date -u +%Y-%m-%d > $OUT/out.txt", "time"),
    "pwd": ("pwd > $OUT/out.txt", "build_path"),
    "hostname": ("hostname > $OUT/out.txt", "domain_host"),
    "timezone": ("date -d @1700000000 +%H:%M > $OUT/out.txt", "timezone"),
    "locale": ("printf 'b\\nA\\na\\nB\\n' | sort > $OUT/out.txt", "locales"),
    "umask": ("touch $OUT/made && stat -c %a $OUT/made > $OUT/out.txt", "umask"),
    "uid": ("id -u > $OUT/out.txt", "user_group"),
    "env": ("env | sort > $OUT/out.txt", "environment"),
    "nproc": ("nproc > $OUT/out.txt", "num_cpus"),
    "home": ("echo $HOME > $OUT/out.txt", "home"),
    "path": ('echo "$PATH" > $OUT/out.txt', "exec_path"),
    "readdir": ("touch a b c d e && ls -U > $OUT/out.txt", "fileordering"),  # directory order, unsorted
    "random": ("head -c 16 /dev/urandom | od -An -tx1 > $OUT/out.txt", "unexplained"),
}


def project(root: Path, run: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "input.txt").write_text("input\n")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "case.yaml").write_text(
        f"version: 1\nname: case\nbuilder: command\nsource: src\nrun: {json.dumps(run)}\nartifacts: ['*.txt']\n")
    return root


@pytest.fixture(params=["local", "docker", "sandbox"])
def backend_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "local":
        return ["--backend", "local", "--lock", str(REPO / "toolchains.lock")]
    if request.param == "sandbox" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    lock = request.getfixturevalue("debian_lock")
    return ["--backend", request.param, "--lock", str(lock)]


def _verify(root: Path, args: list[str], *extra: str) -> tuple[int, dict[str, Any], str]:
    report = root / "report.json"
    res = run_cli("verify", "pipelines/case.yaml", *args, "--report", str(report), *extra, cwd=root)
    data = json.loads(report.read_text()) if report.exists() else {}
    return res.returncode, data, res.stderr + res.stdout


def test_clean_command_pipeline_is_reproducible(tmp_path: Path, backend_args: list[str]) -> None:
    root = project(tmp_path / "p", "cp input.txt $OUT/fixed.txt && echo fixed >> $OUT/fixed.txt")
    code, report, out = _verify(root, backend_args)
    assert code == 0, out
    assert report["reproducible"] is True and report["culprits"] == [] and report["runs"] == 2
    assert report["differences"] == []
    assert "build_path" in report["variations"]


@pytest.fixture
def own_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A TMPDIR of this test's own (reachable by a varied build user, as /tmp is): the build's copies, scratch
    roots and disorderfs views are made under it, so what it leaves behind is told apart from what other
    builds running on the machine at the same time have mounted."""
    own = Path(tempfile.mkdtemp(prefix="reprobuild-test-verify-"))
    os.chmod(own, 0o755)
    monkeypatch.setenv("TMPDIR", str(own))
    yield own
    shutil.rmtree(own, ignore_errors=True)


def fuse_mounts_under(root: Path) -> list[str]:
    """The disorderfs mount points under `root` (/proc/mounts escapes spaces and the like as octal)."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        target = fields[1].encode().decode("unicode_escape")
        if fields[2] == "fuse.disorderfs" and Path(target).is_relative_to(root):
            found.append(target)
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_variation_is_caught_and_named(tmp_path: Path, backend_args: list[str], case: str,
                                            own_tmpdir: Path) -> None:
    run, culprit = CASES[case]
    root = project(tmp_path / case, run)
    code, report, out = _verify(root, backend_args)
    if culprit in report.get("skipped_variations", {}):
        pytest.skip(f"{culprit} cannot be varied on this backend here: {report['skipped_variations'][culprit]}")
    assert code == 1, out
    assert report["reproducible"] is False
    assert culprit in report["culprits"], report["culprits"]
    if culprit != "environment":  # env output is changed by every variation that sets a variable
        assert report["culprits"] == [culprit]
    (diff,) = report["differences"]
    assert diff["artifact"] == "case/out.txt" and diff["status"] == "differs"
    assert diff["causes"], "the difference must be explained"
    assert fuse_mounts_under(own_tmpdir) == [] and fuse_mounts_under(tmp_path) == []  # the views are gone


def test_varied_build_that_fails_is_a_result(tmp_path: Path, backend_args: list[str]) -> None:
    """The control builds, the varied build fails: exit 1, the report written, the variation named, the step's
    last lines kept."""
    run = 'case "$HOME" in *varied*) echo "cannot build with HOME=$HOME"; exit 7;; esac; echo ok > $OUT/out.txt'
    root = project(tmp_path / "p", run)
    code, report, out = _verify(root, backend_args, "--vary=-all,+home,+timezone")
    assert code == 1, out
    assert report["reproducible"] is False and report["culprits"] == ["home"]
    [first, *reruns] = report["failures"]
    assert first["run"] == "run-2-varied" and first["variations"] == ["home", "timezone"]
    assert "failed (exit 7)" in first["error"]
    assert "cannot build with HOME=" in first["output_tail"][-1] and "varied-home" in first["output_tail"][-1]
    assert [(r["run"], r["variations"]) for r in reruns] == [("only-home", ["home"])]
    assert "Traceback" not in out and "run-2-varied failed (varying home, timezone)" in out


def test_home_variation_gives_a_writable_home(tmp_path: Path, backend_args: list[str]) -> None:
    run = 'mkdir -p "$HOME/.cache/tool" && touch "$HOME/.cache/tool/state" && echo ok > $OUT/out.txt'
    root = project(tmp_path / "p", run)
    code, report, out = _verify(root, backend_args, "--vary=-all,+home")
    assert code == 0, out
    assert report["variations"] == ["home"] and report["failures"] == []


def test_summary_lists_exactly_what_was_applied() -> None:
    from reprobuild.evidence.verify import VerifyReport, render_markdown, render_text

    report = VerifyReport(
        reproducible=True, runs=2, variations=["build_path", "home"],
        skipped={"aslr": "not supported by the docker backend on this host",
                 "umask": "not applied in 2 step(s): ..."},
        culprits=[], differences=[], digests={"a": "0" * 64}, backend="docker", hermetic=True,
        not_applied={"umask": {"go-service/hello": "step `go-service/hello`: image `go` has no shell to set umask",
                               "go-service/zpack": "step `go-service/zpack`: image `go` has no shell to set umask"}})
    text = render_text(report)
    varied_line = next(line for line in text.splitlines() if line.strip().startswith("varied:"))
    assert varied_line.strip() == "varied: build_path, home"
    assert "umask: applied except in 2 step(s): step `go-service/hello`: image `go` has no shell" in text
    assert "not varied: aslr (not supported" in text and "not varied: aslr (not supported by the docker backend " \
        "on this host)" in text
    assert "- varied: build_path, home" in render_markdown(report)


def test_vary_syntax() -> None:
    assert parse_vary("all") == tuple(v for v in ALL_VARIATIONS if v in DEFAULT_VARIATIONS)
    assert parse_vary("-all,+time") == ("time",)
    assert "build_path" not in parse_vary("-build_path")
    assert parse_vary("-all,umask,+home") == ("home", "umask")


def test_time_and_locales_are_fields_of_the_perturbation_not_encoded_in_its_environment() -> None:
    """Each backend applies them itself (libfaketime where its build finds it, the locale variables)."""
    p = perturbation(("time", "locales", "timezone"), "varied")
    assert (p.faketime, p.locale) == ("+398d", "fr_CH.UTF-8")
    assert dict(p.env) == {"TZ": "RBT-14:45"}
    plain = perturbation(("timezone",), "timezone")
    assert (plain.faketime, plain.locale) == (None, None) and plain.variation_env() == {}


def test_unknown_variation_is_bad_input(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "echo x > $OUT/x.txt")
    res = run_cli("verify", "pipelines/case.yaml", "--backend", "local", "--vary", "+tmie", cwd=root)
    assert res.returncode == 2
    assert "unknown variation `tmie`" in res.stderr and "did you mean `time`" in res.stderr


def test_markdown_summary_goes_to_github_step_summary(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "pwd > $OUT/out.txt")
    summary = tmp_path / "summary.md"
    res = run_cli("verify", "pipelines/case.yaml", "--backend", "local", "--lock", str(REPO / "toolchains.lock"),
                  "--markdown", "--vary=-all,+build_path", cwd=root, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.returncode == 1
    text = summary.read_text()
    assert "not reproducible" in text and "build_path" in text and "`case/out.txt`" in text


@pytest.mark.go
@pytest.mark.slow
def test_go_example_is_reproducible(tmp_path: Path, go_registry: Any, shared_cache_root: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    res = run_cli("verify", "pipelines/go-service.yaml", "--backend", "local", "--toolchain", "go=go-registry",
                  "--lock", str(REPO / "toolchains.lock"), "--report", "r.json", cwd=root,
                  env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert res.returncode == 0, res.stderr
    report = json.loads((root / "r.json").read_text())
    assert report["reproducible"] is True and report["culprits"] == []
    assert any(a["path"].startswith("go-service/hello_linux_arm64") for a in report["artifacts"])
    assert any(a["path"] == "go-service/hello.oci/index.json" for a in report["artifacts"])  # its image too


@pytest.mark.docker
@pytest.mark.slow
def test_go_example_verifies_on_docker_with_a_warm_cache_shared_by_no_two_users(
        tmp_path: Path, go_registry: Any, debian_lock: Path, shared_cache_root: Path) -> None:
    """`--vary=-cache`: the control and the user_group run build at once with warm caches. Each build user has
    its own; the control's stays the normal build user's, so the next plain build does not have to win it back."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    for _ in range(2):  # the second time both caches are warm and in use at the same moment
        res = run_cli("verify", "pipelines/go-service.yaml", "--backend", "docker", "--toolchain", "go=go-registry",
                      "--lock", str(debian_lock), "--vary=-cache", "--report", "r.json", cwd=root,
                      env={"REPROBUILD_CACHE": str(shared_cache_root)})
        assert res.returncode == 0, res.stderr[-3000:]
        report = json.loads((root / "r.json").read_text())
        assert report["reproducible"] is True and "user_group" in report["variations"]
    caches = sorted((shared_cache_root / "gocache").glob(f"docker-{go_registry.key[:16]}*"))
    assert [c.name.removeprefix(f"docker-{go_registry.key[:16]}") for c in caches] == ["", "-uid1234"]
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (caches[0] / "go-build").rglob("*")}
    assert owners == {(1000, 1000)}, "the normal build user's cache was handed to another user"
