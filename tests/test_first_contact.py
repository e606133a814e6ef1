"""First contact: the README's two commands, run the way a new user runs them.

The main job runs verbatim with Debian's system Python (marked EXTERNALLY-MANAGED, PEP 668) in a fresh
HOME on a copy of the repository, with no Docker engine answering; `.ci/run` runs the README's test
command and nothing else; no nox session asks for one exact Python or skips with exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3.11")


def readme_command(marker: str) -> str:
    """The README's quick-start line whose comment starts with `marker`, without the comment."""
    for line in (REPO / "README.md").read_text().splitlines():
        command, sep, comment = line.partition("   # ")
        if sep and comment.strip().startswith(marker):
            return command.strip()
    raise AssertionError(f"README.md has no command commented {marker!r}")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_command("the test suite")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]
    # And nothing else runs tests or nox there.
    assert [line for line in ci if re.search(r"\bnox\b", line) and not line.lstrip().startswith("#")] == [command]


def test_no_session_pins_one_python_or_skips() -> None:
    listed = subprocess.run([sys.executable, "-m", "nox", "--list", "--json"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    sessions = json.loads(listed.stdout)
    assert sessions and all(s["python"] is None for s in sessions), sessions


def test_session_without_its_interpreter_fails(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "nox", "-s", "doctor", "--force-python", "3.99",
                           "--envdir", str(tmp_path / "envs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stderr
    assert "3.99 not found" in done.stderr


def _checkout(dest: Path) -> Path:
    """The repository's tracked files (what a user clones), or its tree without local state."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        for rel in listed.stdout.decode().split("\0"):
            if rel and (REPO / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, dest / rel)
        return dest
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", ".nox", "out", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", "build", "dist"))
    return dest


@pytest.mark.slow
@pytest.mark.go
@pytest.mark.paddle
def test_readme_main_job_on_externally_managed_python_without_engine(tmp_path: Path) -> None:
    if not (SYSTEM_PYTHON.exists() and (SYSTEM_PYTHON.parent.parent / "lib/python3.11/EXTERNALLY-MANAGED").exists()):
        pytest.skip("needs Debian's system Python 3.11 (EXTERNALLY-MANAGED)")
    command = readme_command("the main job")
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / "python3").symlink_to(SYSTEM_PYTHON)
    repo = _checkout(tmp_path / "repo")
    # A new user's shell: the machine's registry configuration (pip's and proxies), nothing of ours, and
    # `python3` is the system Python. No engine is named (DOCKER_HOST, a context): the default backend is the
    # sandbox where bubblewrap can make one, else local; neither needs an engine. (A DOCKER_HOST nobody listens
    # on would be a configured engine that does not answer: exit 3, by design.)
    env = {k: v for k, v in os.environ.items()
           if k.startswith("PIP_") or k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    env.update({"HOME": str(home), "PATH": f"{bin_dir}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8"})

    refused = subprocess.run(["python3", "-m", "pip", "install", "--dry-run", "nox"], env=env, cwd=repo,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr

    done = subprocess.run(["bash", "-c", command], env=env, cwd=repo, capture_output=True, text=True, timeout=1800)
    output = done.stdout + done.stderr  # nox passes a session's stderr on to its stdout
    assert done.returncode == 0, output[-4000:]
    out = repo / "out"
    used = json.loads((out / "manifest.json").read_text())["backend"]
    assert used == ("sandbox" if shutil.which("bwrap") else "local"), used  # no engine was used
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    built = {line.split(": ")[0] for line in checked.stdout.splitlines()}
    assert "go-service/zpack_linux_amd64" in built
    assert "paddle-model/custom-relu/custom_relu.so" in built
    assert len(built) >= 10, built
