"""nox sessions: thin wrappers over the reprobuild CLI (no build logic lives here).

`nox -s build` runs the main job; `nox -s tests -- -k name` passes arguments to pytest.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
# A session whose interpreter cannot be found fails the run: never "skipped" with exit 0.
nox.options.error_on_missing_interpreters = True

# None: every session runs on the interpreter nox itself runs on (any Python >= 3.11, the project's
# requires-python), so `nox -s build` never looks for one exact version that the machine may not have.
PYTHON = None
TEST_TOOLS = [".[test]"]


def _install(session: nox.Session) -> None:
    session.install("-e", ".")


def _reprobuild(session: nox.Session, *args: str) -> None:
    _install(session)
    session.run("reprobuild", *args, *session.posargs)


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build the pipelines (`nox -s build -- --toolchain go=go-registry` on a registry-only machine)."""
    _reprobuild(session, "build", "--out", "out")


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """Rebuild under varied conditions and explain any difference."""
    _reprobuild(session, "verify")


@nox.session(python=PYTHON)
def compare(session: nox.Session) -> None:
    """Compare two output dirs: `nox -s compare -- A B`."""
    _reprobuild(session, "compare")


@nox.session(python=PYTHON)
def merge(session: nox.Session) -> None:
    """Merge shard outputs: `nox -s merge -- DIR... --out OUT` (`-- --require-agreement A B` for rebuilds)."""
    _reprobuild(session, "merge")


@nox.session(python=PYTHON)
def toolchains(session: nox.Session) -> None:
    """Fetch every pinned toolchain this platform can use (`-- go-registry` for one)."""
    _reprobuild(session, "toolchain", "fetch")


@nox.session(python=PYTHON)
def vendor(session: nox.Session) -> None:
    """Vendor and prune dependencies (`-- --check` in CI)."""
    _reprobuild(session, "vendor")


@nox.session(python=PYTHON)
def lock(session: nox.Session) -> None:
    """Resolve toolchains.yaml into toolchains.lock (`-- --check` in CI)."""
    _reprobuild(session, "lock")


@nox.session(python=PYTHON)
def doctor(session: nox.Session) -> None:
    """Check the environment and the Go/Paddle policy."""
    _reprobuild(session, "doctor")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite; `nox -s tests -- -k name -m 'not slow'` passes arguments to pytest."""
    session.install("-e", *TEST_TOOLS)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy (strict), including this file."""
    session.install("-e", *TEST_TOOLS)
    session.run("ruff", "check", ".")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmarks/bench_*.py, then BENCHMARKS.md (`-- --only ci` for one)."""
    _install(session)
    session.run("python", "benchmarks/run_all.py", *session.posargs)
