"""The ABI and policy gate: the repository's table, evaluated on real locks and pipelines, and `build` refusing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild.config import policy
from reprobuild.config.lock import load_lock
from reprobuild.config.model import Lock
from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import EXIT_BAD_INPUT, BadInput, FileError
from tests.conftest import REPO, run_cli, url_entry

SHA = "0" * 64


def python_section(paddle: str) -> dict[str, Any]:
    return {"paddle": {"python": "3.11", "requirements": "builders/paddle/requirements.in",
                       "requirements_sha256": SHA, "lock_file": "builders/paddle/requirements.lock",
                       "lock_sha256": SHA, "packages": {"paddlepaddle": paddle, "numpy": "1.26.4"}}}


def write_policy_lock(path: Path, go: str, paddle: str | None, extra: dict[str, str] | None = None) -> Path:
    """A lock with a `go` entry of the given version (never fetched here) and a Paddle pin."""
    toolchains = {"go": url_entry("go", f"go{go}.linux-amd64.tar.gz", "1" * 64, None,
                                  ["http://127.0.0.1:9/go.tar.gz"], version=go)}
    for name, version in (extra or {}).items():
        toolchains[name] = url_entry(name, f"go{version}.linux-amd64.tar.gz", "2" * 64, None,
                                     ["http://127.0.0.1:9/go.tar.gz"], version=version)
    data: dict[str, Any] = {"lock_version": 1, "toolchains": toolchains}
    if paddle is not None:
        data["python"] = python_section(paddle)
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def lock_for(tmp_path: Path, go: str, paddle: str | None, extra: dict[str, str] | None = None) -> Lock:
    return load_lock(write_policy_lock(tmp_path / "toolchains.lock", go, paddle, extra))


def errors(findings: list[policy.Finding]) -> list[policy.Finding]:
    return [f for f in findings if f.severity == "error"]


def test_repository_table_loads_and_every_rule_has_id_severity_message() -> None:
    table = policy.load_table()
    ids = [r.id for r in table.rules]
    assert {"paddle-go-abi", "go-end-of-life", "go-directive-newer", "host-env-ignored"} <= set(ids)
    assert all(r.severity in policy.SEVERITIES and r.message for r in table.rules)


@pytest.mark.parametrize(("version", "spec", "expected"), [
    ("1.21.13", ">=1.21", True), ("1.20.13", ">=1.21", False), ("1.21", ">=1.21", True),
    ("2.5.2", "<2.6.0", True), ("2.6.2", "<2.6.0", False), ("2.6.0", "<2.6.0", False),
    ("2.5.2.post117", "<2.6.0", True), ("go1.20.13", ">=1.20,<1.21", True), ("1.21.0", ">=1.20,<1.21", False),
    # a release candidate comes before its release (it used to compare equal to it)
    ("go1.22rc1", "<1.22.0", True), ("go1.22rc1", ">=1.22", False), ("go1.22rc1", "==1.22.0", False),
    ("go1.22beta1", "<1.22", True), ("1.22.0", ">=1.22", True), ("go1.21.0", "==1.21", True),
])
def test_version_comparisons(version: str, spec: str, expected: bool) -> None:
    assert policy.satisfies(version, spec) is expected


def test_paddle_252_with_go_12113_is_refused_with_three_remedies(tmp_path: Path) -> None:
    found = errors(policy.evaluate(lock_for(tmp_path, "1.21.13", "2.5.2"), {}, [], environ={}))
    assert [f.rule for f in found] == ["paddle-go-abi"]
    text = str(found[0])
    assert "2.5.2" in text and "1.21.13" in text
    assert len(found[0].remedies) == 3
    assert "1.20.13" in found[0].remedies[0]
    assert "2.6.0" in found[0].remedies[1]
    assert "paddle_go121_abi" in found[0].remedies[2]
    assert json.loads(json.dumps(found[0].to_json()))["rule"] == "paddle-go-abi"
    with pytest.raises(policy.PolicyRefused) as exc:
        policy.enforce(found)
    assert exc.value.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(("go", "paddle"), [("1.20.13", "2.5.2"), ("1.21.13", "2.6.2"), ("1.21.13", None)])
def test_allowed_pairs(tmp_path: Path, go: str, paddle: str | None) -> None:
    findings = policy.evaluate(lock_for(tmp_path, go, paddle), {}, [], environ={})
    assert errors(findings) == []
    policy.enforce(findings)


def test_go_120_is_past_end_of_life_a_warning(tmp_path: Path) -> None:
    findings = policy.evaluate(lock_for(tmp_path, "1.20.13", "2.5.2"), {}, [], environ={})
    assert [(f.rule, f.severity) for f in findings] == [("go-end-of-life", "warning")]


def test_substitution_is_judged_not_the_lock_entry(tmp_path: Path) -> None:
    lock = lock_for(tmp_path, "1.20.13", "2.5.2", extra={"go-next": "1.21.13"})
    assert errors(policy.evaluate(lock, {}, [], environ={})) == []
    found = errors(policy.evaluate(lock, {"go": "go-next"}, [], environ={}))
    assert [f.rule for f in found] == ["paddle-go-abi"]
    assert "substituted by `go-next`" in found[0].message


def go_pipeline(tmp_path: Path, directive: str, cgo_tags: list[str] | None = None,
                toolchain_line: str = "") -> Path:
    module = tmp_path / "svc"
    module.mkdir()
    (module / "go.mod").write_text(f"module example.com/svc\n\ngo {directive}\n{toolchain_line}")
    target: dict[str, Any] = {"name": "svc", "package": "./cmd/svc"}
    if cgo_tags is not None:
        target.update(cgo=True, tags=cgo_tags)
    doc = {"version": 1, "name": "svc", "builder": "go", "toolchain": "go", "source": "svc", "targets": [target]}
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_workaround_tag_on_every_cgo_target_downgrades_to_a_warning(tmp_path: Path) -> None:
    lock = lock_for(tmp_path, "1.21.13", "2.5.2")
    tagged = load_pipelines([go_pipeline(tmp_path, "1.21", ["paddle_go121_abi"])], tmp_path)
    findings = policy.evaluate(lock, {}, tagged, environ={})
    assert [(f.rule, f.severity) for f in findings] == [("paddle-go-abi", "warning")]


def test_go_mod_directive_newer_than_the_pinned_go_names_the_line(tmp_path: Path) -> None:
    lock = lock_for(tmp_path, "1.21.13", "2.6.2")
    pipelines = load_pipelines([go_pipeline(tmp_path, "1.21", toolchain_line="toolchain go1.22.5\n")], tmp_path)
    found = errors(policy.evaluate(lock, {}, pipelines, environ={}))
    assert [f.rule for f in found] == ["go-directive-newer"]
    assert found[0].where == f"{tmp_path / 'svc' / 'go.mod'}:4"
    assert "toolchain" in found[0].message and "1.22.5" in found[0].message


def test_go_mod_directive_at_the_pinned_minor_is_fine(tmp_path: Path) -> None:
    lock = lock_for(tmp_path, "1.21.13", "2.6.2")
    pipelines = load_pipelines([go_pipeline(tmp_path, "1.21.3")], tmp_path)
    assert errors(policy.evaluate(lock, {}, pipelines, environ={})) == []


def test_host_go_variables_are_reported_as_ignored(tmp_path: Path) -> None:
    env = {"GOFLAGS": "-mod=mod", "CGO_CFLAGS": "-O3", "GOTOOLCHAIN": "auto", "GOPATH": "/x", "HOME": "/root"}
    findings = policy.evaluate(lock_for(tmp_path, "1.21.13", "2.6.2"), {}, [], environ=env)
    ignored = [f for f in findings if f.rule == "host-env-ignored"]
    assert [f.severity for f in ignored] == ["info"] * 3
    assert sorted(f.message.split()[0] for f in ignored) == ["CGO_CFLAGS", "GOFLAGS", "GOTOOLCHAIN"]


def test_bad_table_names_file_and_line_with_a_did_you_mean(tmp_path: Path) -> None:
    table = tmp_path / "compat.yaml"
    table.write_text("version: 1\nrules:\n  - id: x\n    check: version\n    severity: error\n"
                     "    message: m\n    wen: {go: '>=1.21'}\n")
    with pytest.raises(FileError) as exc:
        policy.load_table(table)
    assert f"{table}:7" in str(exc.value) and "did you mean `when`" in str(exc.value)
    table.write_text("version: 1\nrules:\n  - id: x\n    check: version\n    severity: fatal\n    message: m\n"
                     "    when: {go: '>=1.21'}\n")
    with pytest.raises(BadInput, match="unknown severity `fatal`"):
        policy.load_table(table)


def test_bad_python_section_names_the_lock_line(tmp_path: Path) -> None:
    path = write_policy_lock(tmp_path / "toolchains.lock", "1.21.13", "2.6.2")
    data = yaml.safe_load(path.read_text())
    data["python"]["paddle"]["lock_sha256"] = "abc"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    with pytest.raises(FileError) as exc:
        policy.evaluate(load_lock(path), {}, [], environ={})
    assert str(path) in str(exc.value) and "lock_sha256 must be 64" in str(exc.value)


# --- through the CLI: `build` refuses before building (exit 2), and accepts the allowed pairs ------------

def command_project(tmp_path: Path, go: str, paddle: str, extra: dict[str, str] | None = None) -> Path:
    root = tmp_path / "project"
    (root / "pipelines").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "note.txt").write_text("hello\n")
    (root / "pipelines" / "note.yaml").write_text(
        "version: 1\nname: note\nbuilder: command\nsource: src\nrun: cp note.txt $OUT/note.txt\n")
    write_policy_lock(root / "toolchains.lock", go, paddle, extra)
    return root


def build_cli(root: Path, tmp_path: Path, *extra: str) -> Any:
    return run_cli("build", "--root", str(root), "--lock", str(root / "toolchains.lock"), "--out",
                   str(tmp_path / "out"), "--backend", "local", *extra, cwd=root,
                   env={"REPROBUILD_CACHE": str(tmp_path / "cache")})


def test_build_refuses_paddle_252_with_go_12113_exit_2(tmp_path: Path) -> None:
    root = command_project(tmp_path, "1.21.13", "2.5.2")
    done = build_cli(root, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "paddle-go-abi" in done.stderr
    for remedy in ("1.20.13", "2.6.0", "paddle_go121_abi"):
        assert remedy in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("go", "paddle", "override"), [
    ("1.20.13", "2.5.2", None), ("1.21.13", "2.6.2", None), ("1.21.13", "2.5.2", "go=go-old")])
def test_build_accepts_allowed_pairs(tmp_path: Path, go: str, paddle: str, override: str | None) -> None:
    root = command_project(tmp_path, go, paddle, extra={"go-old": "1.20.13"})
    done = build_cli(root, tmp_path, *(["--toolchain", override] if override else []))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "note" / "note.txt").read_text() == "hello\n"


def test_repository_lock_passes_the_gate() -> None:
    lock = load_lock(REPO / "toolchains.lock")
    assert errors(policy.evaluate(lock, {}, load_pipelines(None, REPO), environ={})) == []


@pytest.mark.parametrize(("go", "paddle", "refused"), [
    ("1.21.13", "2.5.2", True), ("1.20.13", "2.5.2", False), ("1.21.13", "2.6.2", False)])
def test_doctor_judges_the_pair_as_build_does(tmp_path: Path, go: str, paddle: str, refused: bool) -> None:
    """`doctor` runs the same gate: the forbidden pair is exit 2 with the three ways out, in text and --json."""
    root = command_project(tmp_path, go, paddle)
    env = {"REPROBUILD_CACHE": str(tmp_path / "cache"), "DOCKER_HOST": "unix:///nonexistent/docker.sock",
           "REPROBUILD_OFFLINE": "1"}
    text = run_cli("doctor", "--lock", str(root / "toolchains.lock"), cwd=root, env=env)
    done = run_cli("doctor", "--json", "--lock", str(root / "toolchains.lock"), cwd=root, env=env)
    gate = [f for f in json.loads(done.stdout)["findings"] if f["id"].startswith("policy.")]
    abi = [f for f in gate if f["id"] == "policy.paddle-go-abi"]
    if refused:
        assert text.returncode == done.returncode == 2, text.stdout + text.stderr
        assert [f["severity"] for f in abi] == ["error"]
        for remedy in ("1.20.13", "2.6.0", "paddle_go121_abi"):
            assert remedy in abi[0]["hint"] and remedy in text.stdout
    else:
        assert text.returncode != 2 and done.returncode != 2, text.stdout
        assert abi == [] and all(f["severity"] != "error" for f in gate)


def test_go_pre_releases_order_below_their_release(tmp_path: Path) -> None:
    v = policy.parse_version
    assert v("go1.22beta1") < v("go1.22rc1") < v("1.22.0") == v("go1.22") < v("1.22.1")
    assert v("1.21.13-custom") == v("1.21.13")  # a suffix packaging does not know: judged by the release
    with pytest.raises(BadInput):
        v("devel")
    module = tmp_path / "m"
    module.mkdir()
    (module / "go.mod").write_text("module example.com/m\n\ngo 1.22.0\n")
    with pytest.raises(policy.PolicyRefused) as refused:
        policy.check_go_directives(module, "go", "1.22rc1")  # 1.22.0 is newer than the release candidate
    assert f"{module / 'go.mod'}:3" in str(refused.value)
    (module / "go.mod").write_text("module example.com/m\n\ngo 1.22rc1\n")
    assert policy.go_mod_directives(module) == [("go", "1.22rc1", 3)]
    policy.check_go_directives(module, "go", "1.22.0")  # the release satisfies its release candidate

