"""`reprobuild doctor`: the declarative rule list, leaking variables, the command with a dead and a live engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobuild import doctor
from reprobuild.backends.images import spec as images
from reprobuild.toolchains.cache import ToolchainCache
from tests.conftest import REPO, run_cli

HOST_ENV = {"PATH": "/usr/bin", "HOME": "/root", "GOFLAGS": "-mod=mod", "CGO_CFLAGS": "-O3", "GOTOOLCHAIN": "auto",
            "GITHUB_TOKEN": "ghp_secret_value", "AWS_SECRET_ACCESS_KEY": "aws_secret_value", "LANG": "C.UTF-8"}


def facts(tmp_path: Path, environ: dict[str, str], engine: doctor.EngineFacts | None = None) -> doctor.Facts:
    return doctor.Facts(environ, None, None, ToolchainCache(tmp_path / "cache"), REPO / "builders",
                        engine or doctor.EngineFacts(False, "unix:///nowhere: connection refused"))


def test_leaking_variables_are_named_and_secrets_are_never_shown(tmp_path: Path) -> None:
    report = doctor.diagnose(facts(tmp_path, HOST_ENV))
    by_id = {f.id: f for f in report.findings}
    for name in ("GOFLAGS", "CGO_CFLAGS", "GOTOOLCHAIN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert f"env.leak.{name}" in by_id, name
    assert "env.leak.PATH" not in by_id and "env.leak.LANG" not in by_id
    assert by_id["env.leak.GOFLAGS"].severity == "warning" and "-mod=mod" in by_id["env.leak.GOFLAGS"].message
    text = json.dumps(report.to_json())
    assert "ghp_secret_value" not in text and "aws_secret_value" not in text
    assert by_id["env.leak.GITHUB_TOKEN"].data["secret"] is True


def test_every_finding_has_an_id_a_severity_and_a_message(tmp_path: Path) -> None:
    report = doctor.diagnose(facts(tmp_path, HOST_ENV))
    assert report.findings
    for f in report.findings:
        assert f.id and f.severity in doctor.SEVERITIES and f.message
    engine = next(f for f in report.findings if f.id.startswith("engine."))
    assert engine.id == "engine.unreachable" and engine.severity == "warning" and "dockerd" in (engine.hint or "")
    required = doctor.diagnose(doctor.Facts(HOST_ENV, None, None, ToolchainCache(tmp_path), REPO / "builders",
                                            doctor.EngineFacts(False, "x"), docker_required=True))
    assert not required.ok


def test_the_rule_list_is_declarative_and_extensible(tmp_path: Path) -> None:
    """A later rule (e.g. Go/Paddle policy) is one more `Rule` in the table; a crashing rule is a finding."""

    def policy(f: doctor.Facts) -> list[doctor.Finding]:
        return [doctor.Finding("policy.go-paddle", "error", "Go 1.21 with Paddle 2.5 is not ABI-safe")]

    def broken(f: doctor.Facts) -> list[doctor.Finding]:
        raise RuntimeError("boom")

    rules = (*doctor.RULES, doctor.Rule("policy", "Go/Paddle ABI", policy), doctor.Rule("broken", "x", broken))
    report = doctor.diagnose(facts(tmp_path, {}), rules)
    ids = [f.id for f in report.findings]
    assert "policy.go-paddle" in ids and "broken.failed" in ids and not report.ok
    assert [r.id for r in doctor.RULES][:1] == ["engine"]


def pinned_lock(tmp_path: Path) -> Path:
    """The repository lock plus a (made-up) debian pin whose inputs match builders/debian: doctor checks inputs only."""
    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    spec = images.load_spec(REPO / "builders", "debian")
    data["images"] = {"debian": {"inputs": spec.digest(), "suite": "bookworm", "variant": "minbase", "mirror": "apt",
                                 "packages": {"gcc": "4:12.2.0-3"}}}
    path = tmp_path / "toolchains.lock"
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def test_doctor_json_with_a_dead_engine(tmp_path: Path) -> None:
    """Offline: the lock's toolchain sources are not asked (tests/test_doctor_sources.py asks local ones)."""
    lock = pinned_lock(tmp_path)
    r = run_cli("doctor", "--json", "--lock", str(lock),
                env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock", "REPROBUILD_REQUIRE_DOCKER": "0",
                     "REPROBUILD_CACHE": str(tmp_path / "cache"), "GOFLAGS": "-mod=mod",
                     "GITHUB_TOKEN": "ghp_secret_value", "REPROBUILD_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr + r.stdout
    report = json.loads(r.stdout)
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["engine.unreachable"]["severity"] == "warning"
    assert "dead.sock" in by_id["engine.unreachable"]["message"]
    assert by_id["toolchain.go-registry.missing"]["severity"] == "warning"  # offline: nothing can fetch it
    assert "env.leak.GOFLAGS" in by_id and "ghp_secret_value" not in r.stdout
    assert report["ok"] is True
    # The same, with an engine required: an error, exit 1.
    r = run_cli("doctor", "--lock", str(lock), env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock",
                                                    "REPROBUILD_REQUIRE_DOCKER": "1", "REPROBUILD_OFFLINE": "1",
                                                    "REPROBUILD_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 1
    assert "[XX] engine.unreachable" in r.stdout


def test_doctor_names_an_unpinned_or_stale_image(tmp_path: Path) -> None:
    lock = pinned_lock(tmp_path)
    data = yaml.safe_load(lock.read_text())
    data["images"]["debian"]["inputs"] = "0" * 64
    lock.write_text(yaml.safe_dump(data))
    r = run_cli("doctor", "--json", "--lock", str(lock), env={"DOCKER_HOST": f"unix://{tmp_path}/dead.sock",
                                                              "REPROBUILD_CACHE": str(tmp_path / "cache"),
                                                              "REPROBUILD_OFFLINE": "1"})
    assert r.returncode == 1
    ids = [f["id"] for f in json.loads(r.stdout)["findings"]]
    assert "image.debian.lock-stale" in ids


@pytest.mark.docker
def test_doctor_with_a_live_engine_reports_version_and_images(docker_backend: Any, debian_lock: Path,
                                                              shared_cache_root: Path) -> None:
    docker_backend.ensure_image(images_debian())
    r = run_cli("doctor", "--json", "--lock", str(debian_lock), env={"REPROBUILD_CACHE": str(shared_cache_root),
                                                                     "REPROBUILD_OFFLINE": "1"})
    report = json.loads(r.stdout)
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["engine.reachable"]["data"]["version"]
    assert "image.debian.present" in by_id, sorted(by_id)
    assert report["ok"] is True, r.stdout


def images_debian() -> Any:
    from reprobuild.backends import ImageRef

    return ImageRef("debian")


def test_a_host_go_variable_is_reported_once(tmp_path: Path) -> None:
    """GOFLAGS is both a leak doctor knows and a variable of the policy table's host-env rule: one finding."""
    r = run_cli("doctor", "--json", "--root", str(REPO), env={"GOFLAGS": "-mod=mod", "REPROBUILD_OFFLINE": "1"},
                cwd=REPO)
    findings = json.loads(r.stdout)["findings"]
    about = [f["id"] for f in findings if "GOFLAGS" in f["message"]]
    assert about == ["env.leak.GOFLAGS"], about


def test_doctor_promises_nothing_the_machine_cannot_keep(tmp_path: Path) -> None:
    """A missing toolchain, offline: no "fetched on first use", and no source asked; a warning naming the import
    command. (Online, doctor asks the sources: tests/test_doctor_sources.py.)"""
    env = {"DOCKER_HOST": f"unix://{tmp_path}/dead.sock", "REPROBUILD_REQUIRE_DOCKER": "0",
           "REPROBUILD_CACHE": str(tmp_path / "cache"), "REPROBUILD_OFFLINE": "1"}
    r = run_cli("doctor", "--json", "--lock", str(REPO / "toolchains.lock"), "--root", str(tmp_path), env=env)
    offline = {f["id"]: f for f in json.loads(r.stdout)["findings"]}["toolchain.go-registry.missing"]
    assert offline["severity"] == "warning" and "first use" not in offline["hint"]
    assert "offline" in offline["hint"] and "reprobuild toolchain import" in offline["hint"]
    assert "source" not in offline["data"]  # nothing was asked
