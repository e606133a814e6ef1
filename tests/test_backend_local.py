"""The local backend (the embedded default, no engine needed): the same contract as far as the host allows."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reprobuild.backends import CACHE, HOME, OUT, SRC, EnvPolicy, ImageRef, Mount, Perturbation, RunSpec, hermetic_env
from reprobuild.backends.local import LocalBackend
from reprobuild.errors import EnvironmentFailure
from tests.conftest import HELLO_GO, HELLO_GO_BUILD, hello_go_env

HOST = ImageRef("host")
SECRETS = {"GITHUB_TOKEN": "ghp_leak_me", "AWS_SECRET_ACCESS_KEY": "aws-leak-me", "GOFLAGS": "-mod=mod"}


def env() -> dict[str, str]:
    e = hermetic_env(EnvPolicy(source_date_epoch=1700000000))
    e["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return e


def test_environment_is_exactly_the_allowlist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    spec = RunSpec((sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"), HOST, env(), (),
                   workdir=HOME)
    r = LocalBackend(tmp_path / "scratch").run(spec)
    assert r.returncode == 0 and r.hermetic is False
    inside = json.loads(r.output)
    assert set(inside) == set(spec.env)
    for key, value in SECRETS.items():
        assert key not in inside and value not in r.output
    assert inside["HOME"] != HOME and inside["HOME"].startswith(str(tmp_path / "scratch"))  # mapped to scratch
    assert inside["TZ"] == "UTC" and inside["LC_ALL"] == "C.UTF-8" and inside["SOURCE_DATE_EPOCH"] == "1700000000"
    assert not any((tmp_path / "scratch").glob("build/*"))  # the scratch root is gone afterwards


def test_time_and_locale_variations_are_applied_from_the_perturbation_fields(tmp_path: Path) -> None:
    """verify's time and locale variations are fields of the Perturbation (nothing is decoded from the
    step's environment): the backend sets the locale variables and preloads libfaketime into the build
    command only, which then sees a clock moved forward."""
    from reprobuild.backends.local import faketime_library

    if faketime_library() is None:
        pytest.skip("libfaketime is not installed (Debian package `libfaketime`)")
    script = "import json, os, time; print(json.dumps({**os.environ, 'year': time.gmtime().tm_year}))"
    plain = LocalBackend(tmp_path / "scratch").run(RunSpec((sys.executable, "-c", script), HOST, env(), (),
                                                           workdir=HOME))
    p = Perturbation(name="varied", faketime="+398d", locale="fr_CH.UTF-8")
    varied = LocalBackend(tmp_path / "scratch").run(RunSpec((sys.executable, "-c", script), HOST, env(), (),
                                                            workdir=HOME, perturb=p))
    assert plain.returncode == 0 and varied.returncode == 0, varied.output
    before, after = json.loads(plain.output), json.loads(varied.output)
    assert after["year"] > before["year"] and varied.unapplied == {}
    assert (after["LC_ALL"], after["LANG"], after["LANGUAGE"]) == ("fr_CH.UTF-8", "fr_CH.UTF-8", "fr_CH:fr")
    assert after["FAKETIME"] == "+398d" and "faketime" in after["LD_PRELOAD"]
    assert "LD_PRELOAD" not in before and before["LC_ALL"] == "C.UTF-8"


def test_outputs_get_umask_022_and_lines_are_streamed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    seen: list[str] = []
    script = "mkdir /rb/out/sub && echo data > /rb/out/sub/file && echo one && echo two >&2"
    spec = RunSpec(("sh", "-c", script), HOST, env(), (Mount(out, OUT, read_only=False),), workdir=OUT)
    r = LocalBackend(tmp_path / "scratch").run(spec, on_line=seen.append)
    assert r.returncode == 0, r.output
    assert seen == ["one", "two"]
    assert (out / "sub" / "file").stat().st_mode & 0o777 == 0o644
    assert (out / "sub").stat().st_mode & 0o777 == 0o755


def test_time_limit_kills_the_step(tmp_path: Path) -> None:
    """A quiet step (no output at all) is killed at its limit, with its children."""
    start = time.monotonic()
    with pytest.raises(EnvironmentFailure, match="timed out"):
        LocalBackend(tmp_path / "scratch").run(RunSpec(("sh", "-c", "sleep 30 & sleep 30"), HOST, env(), (),
                                                       workdir=HOME, timeout=1))
    assert time.monotonic() - start < 5


@pytest.mark.go
@pytest.mark.slow
def test_go_build_is_the_same_from_any_source_location(go_registry: Any, tmp_path: Path) -> None:
    """-trimpath and the mapped fixed paths: two checkouts in different places give identical bytes."""
    binaries = []
    for i in range(2):
        src = tmp_path / f"checkout-{i}" / ("deeper/" * i) / "hello"
        shutil.copytree(HELLO_GO, src)
        out = tmp_path / f"out{i}"
        cache = tmp_path / f"cache{i}"
        out.mkdir()
        cache.mkdir()
        spec = RunSpec(HELLO_GO_BUILD, ImageRef("go", go_registry.root), hello_go_env(),
                       (Mount(src, SRC), Mount(out, OUT, read_only=False), Mount(cache, CACHE, read_only=False)))
        r = LocalBackend(tmp_path / "scratch").run(spec)
        assert r.returncode == 0, r.output
        binaries.append((out / "hello").read_bytes())
        assert os.access(out / "hello", os.X_OK)
    assert binaries[0] == binaries[1]


@pytest.mark.go
@pytest.mark.skipif(os.geteuid() != 0, reason="running the build as another user needs root")
def test_another_user_builds_with_a_toolchain_and_warm_cache_in_private_dirs(go_registry: Any, tmp_path: Path) -> None:
    """The user_group variation: the build runs as uid 1234 while the toolchain (in the shared test cache under
    root's home) and a warm build cache sit in directories only root may enter; the build sees both, its
    binary equals the one built as root, and the shared cache gains nothing written by the other user."""
    private = tmp_path / "private"
    (private / "cache").mkdir(parents=True)
    os.chmod(private, 0o700)
    binaries, entries = [], []
    for who in (Perturbation(), Perturbation(name="varied", uid=1234, gid=1234)):
        out = tmp_path / f"out-{who.name}"
        out.mkdir()
        spec = RunSpec(HELLO_GO_BUILD, ImageRef("go", go_registry.root), hello_go_env(),
                       (Mount(HELLO_GO, SRC), Mount(out, OUT, read_only=False),
                        Mount(private / "cache", CACHE, read_only=False)), perturb=who)
        r = LocalBackend().run(spec)  # the default scratch root: one other users may enter
        assert r.returncode == 0, r.output
        binaries.append((out / "hello").read_bytes())
        entries.append(sorted(p.relative_to(private) for p in (private / "cache").rglob("*")))
    assert binaries[0] == binaries[1]
    assert entries[0] == entries[1] and entries[0], "the warm cache was used, not changed"


def test_local_backend_warns_when_the_host_lacks_pinned_packages(tmp_path: Path) -> None:
    """The host stands in for the builder image: a package the lock pins for it and the host lacks is named."""
    import yaml

    from tests.conftest import REPO, command_projects, run_cli

    root = command_projects(tmp_path / "repo", 1, "p")
    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    data["images"]["debian"]["packages"]["reprobuild-no-such-package"] = "1.0-1"
    (root / "toolchains.lock").write_text(yaml.safe_dump(data, sort_keys=True))
    done = run_cli("build", "--backend", "local", "--no-cache", "--out", str(tmp_path / "out"), cwd=root)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "lacks" in line]
    assert warnings == ["reprobuild: local backend: this host lacks 1 package(s) the lock pins for the `debian` "
                        "image: reprobuild-no-such-package (`apt-get install reprobuild-no-such-package`, or use "
                        "the Docker backend)"]


def test_a_pinned_target_is_seen_at_exactly_its_path_and_removed_afterwards(tmp_path: Path) -> None:
    """The Python environment's path ends up in outputs (RUNPATH): the local backend gives it to the step at
    the same absolute path a container does (bound in the step's mount namespace, or a symlink for the run where
    none can be made), not at a mapped host path; nothing of it is left on the host."""
    from reprobuild.backends import PYENV

    tree = tmp_path / "env"
    (tree / "venv").mkdir(parents=True)
    (tree / "venv" / "marker").write_text("mine\n")
    spec = RunSpec(("sh", "-c", f'cat {PYENV}/venv/marker; echo "$VENV"; cd {PYENV}/venv && pwd'), HOST,
                   {**env(), "VENV": f"{PYENV}/venv"}, (Mount(tree, PYENV),), workdir=HOME)
    r = LocalBackend(tmp_path / "scratch").run(spec)
    assert r.returncode == 0, r.output
    assert r.output.splitlines() == ["mine", f"{PYENV}/venv", f"{PYENV}/venv"]
    assert not os.path.islink(PYENV) and not (os.path.isdir(PYENV) and os.listdir(PYENV))


def test_a_pinned_path_that_is_not_a_link_is_refused_not_replaced(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.backends import local

    pinned = tmp_path / "pinned"  # not the real PYENV: other builds on this machine use that
    monkeypatch.setattr(local, "PINNED", (str(pinned),))
    pinned.mkdir()
    spec = RunSpec(("true",), HOST, env(), (Mount(tmp_path / "scratch", str(pinned)),), workdir=HOME)
    (pinned / "theirs").write_text("another user's\n")
    unbound = LocalBackend(tmp_path / "scratch")
    unbound._binder = []  # where no mount namespace can be made: the symlink for the run
    with pytest.raises(EnvironmentFailure, match="exists and is not a link reprobuild may replace"):
        unbound.run(spec)
    assert (pinned / "theirs").read_text() == "another user's\n"
    (pinned / "theirs").unlink()
    pinned.rmdir()
    (tmp_path / "env").mkdir()
    pinned.symlink_to(tmp_path / "elsewhere")  # a link a dead run left: replaced, then removed
    spec = RunSpec(("test", "-d", str(pinned)), HOST, env(), (Mount(tmp_path / "env", str(pinned)),), workdir=HOME)
    assert unbound.run(spec).returncode == 0
    assert not os.path.lexists(pinned)
