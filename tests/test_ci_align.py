""".ci/align-host-packages: the CI host gets the lock's versions of the compile packages (local == Docker bytes).

It runs before any venv (no PyYAML): its reading of the lock must agree with a YAML parser's, and a pin apt
cannot give must stop CI with the way out instead of leaving the host as it was.
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import COMPILE_PACKAGES, REPO

SCRIPT = REPO / ".ci" / "align-host-packages"


def test_reads_the_debian_pins_as_yaml_does(tmp_path: Path) -> None:
    debian_pins = runpy.run_path(str(SCRIPT))["debian_pins"]
    lock = REPO / "toolchains.lock"
    assert debian_pins(lock) == yaml.safe_load(lock.read_text())["images"]["debian"]["packages"]
    odd = {"images": {"debian": {"packages": {"a": "1:2.3-4+b1", "b": "3.134", "c": "0.270", "d": "it's"}},
                      "other": {"packages": {"a": "9"}}},
           "toolchains": {"go": {"platforms": {"linux-amd64": {"files": [{"name": "x", "version": "1"}]}}}}}
    path = tmp_path / "toolchains.lock"
    path.write_text("# a comment\n" + yaml.safe_dump(odd, sort_keys=True))
    assert debian_pins(path) == odd["images"]["debian"]["packages"]  # type: ignore[index]


def test_every_compile_package_is_pinned_for_the_debian_image() -> None:
    pins = yaml.safe_load((REPO / "toolchains.lock").read_text())["images"]["debian"]["packages"]
    assert [p for p in COMPILE_PACKAGES if p not in pins] == []


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="needs apt (a Debian host)")
def test_a_pin_apt_cannot_give_stops_with_the_way_out(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    data["images"]["debian"]["packages"]["zlib1g-dev"] = "0.0-not-a-version"
    lock = tmp_path / "toolchains.lock"
    lock.write_text(yaml.safe_dump(data, sort_keys=True))
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", str(lock)], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "zlib1g-dev 0.0-not-a-version" in done.stderr and "run `reprobuild lock`" in done.stderr


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg (a Debian host)")
def test_drift_is_an_expected_failure_on_a_developers_host_and_a_failure_in_ci(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local == Docker bytes tests xfail on drift; where CI aligned the host, drift fails them instead and says
    whether the committed lock is the stale side."""
    from tests.conftest import host_package_drift

    data = yaml.safe_load((REPO / "toolchains.lock").read_text())
    data["images"]["debian"]["packages"]["zlib1g-dev"] = "0.0-newer"
    lock = tmp_path / "toolchains.lock"
    lock.write_text(yaml.safe_dump(data, sort_keys=True))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("REPROBUILD_REQUIRE_DOCKER", "0")
    (drift,) = host_package_drift(lock, ("zlib1g-dev",))
    assert drift.startswith("zlib1g-dev ") and drift.endswith("(the image has 0.0-newer)")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"align-host-packages.*zlib1g-dev.*run `reprobuild lock`"):
        host_package_drift(lock, ("zlib1g-dev",))
