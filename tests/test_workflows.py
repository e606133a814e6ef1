"""The GitHub workflows: they pass actionlint, and they keep the contract of the reusable workflow —
`workflow_call` inputs, no secrets required, no build logic in YAML (every `run:` calls nox or
reprobuild, or installs nox), every action pinned by a full commit SHA.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
REUSABLE = WORKFLOWS / "reprobuild.yml"
INPUTS = {"pipelines", "sessions", "python-version", "shards", "rebuilds", "upload-artifacts"}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
LOCAL = re.compile(r"^\./\.github/workflows/[\w.-]+\.ya?ml$")
INSTALL_NOX = ("python -m pip install nox", "python3 -m pip install nox", "pip install nox")


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    raw: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as a boolean
    return {("on" if key is True else str(key)): value for key, value in raw.items()}


def steps(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in data["jobs"].items() for step in job.get("steps", [])]


def actionlint() -> str | None:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    return found


def test_workflows_exist() -> None:
    assert {p.name for p in workflow_files()} >= {"reprobuild.yml", "ci.yml"}


def test_workflows_pass_actionlint() -> None:
    tool = actionlint()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint is not installed; it comes with the `test` extra (pip install -e '.[test]')")
        pytest.skip("actionlint is not installed (pip install -e '.[test]' provides it)")
    done = subprocess.run([tool, "-no-color", *map(str, workflow_files())], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reusable_workflow_inputs_and_no_required_secrets() -> None:
    call = load(REUSABLE)["on"]["workflow_call"]
    assert set(call["inputs"]) >= INPUTS, INPUTS - set(call["inputs"])
    for name, spec in call["inputs"].items():
        assert spec.get("required", False) is False or "default" in spec, f"input {name} must not be required"
        assert spec.get("description"), f"input {name} has no description"
    assert not any(s.get("required") for s in (call.get("secrets") or {}).values())


def test_the_jobs_build_sharded_rebuild_independently_and_require_agreement() -> None:
    data = load(REUSABLE)
    jobs = data["jobs"]
    assert "shard" in jobs["build"]["strategy"]["matrix"]
    assert jobs["rebuild"]["runs-on"] != jobs["build"]["runs-on"]  # another runner image
    runs = {job_id: " ".join(str(s.get("run", "")) for s in job.get("steps", [])) for job_id, job in jobs.items()}
    assert "--shard" in runs["build"] and "--shard" in runs["rebuild"]
    assert "--no-cache" in runs["rebuild"]  # an independent rebuild must really build
    assert "-s merge" in runs["merge"] and "--require-agreement" in runs["agree"]
    assert "--markdown" in runs["agree"] and "GITHUB_STEP_SUMMARY" in runs["agree"]
    uses = [str(s.get("uses", "")) for _, s in steps(data)]
    assert any(u.startswith("actions/cache") for u in uses)
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    cache_keys = [s["with"]["key"] for _, s in steps(data) if str(s.get("uses", "")).startswith("actions/cache@")]
    assert any("hashFiles('toolchains.lock'" in k for k in cache_keys)


def test_ci_calls_the_reusable_workflow_and_runs_lint_and_tests() -> None:
    jobs = load(WORKFLOWS / "ci.yml")["jobs"]
    assert any(job.get("uses") == "./.github/workflows/reprobuild.yml" for job in jobs.values())
    runs = [str(s.get("run", "")) for _, s in steps({"jobs": jobs})]
    assert any(r.startswith("nox -s lint") for r in runs) and any(r.startswith("nox -s tests") for r in runs)


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_run_step_calls_nox_or_reprobuild(path: Path) -> None:
    for job_id, step in steps(load(path)):
        if "run" not in step:
            continue
        script = str(step["run"]).strip()
        assert "\n" not in script.replace("\\\n", " "), f"{path.name}:{job_id}: one command per step, no scripts"
        assert not re.search(r"[;&|`]|\$\(", script), f"{path.name}:{job_id}: no shell logic in `{script}`"
        words = shlex.split(script)
        assert words[0] in ("nox", "reprobuild") or script in INSTALL_NOX, \
            f"{path.name}:{job_id}: `{script}` calls neither nox nor reprobuild"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_actions_are_pinned_by_full_commit_sha(path: Path) -> None:
    data = load(path)
    refs = [str(s["uses"]) for _, s in steps(data) if "uses" in s]
    refs += [str(job["uses"]) for job in data["jobs"].values() if "uses" in job]
    assert refs
    for ref in refs:
        assert PINNED.match(ref) or LOCAL.match(ref), f"{path.name}: `{ref}` is not pinned by a 40-hex commit SHA"
