"""Pipeline files: the contract's shapes load; malformed ones are exit 2 with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobuild import cli
from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import FileError
from tests.conftest import REPO

GOOD = """\
version: 1
name: mini
builder: go
toolchain: go
source: src
targets:
  - name: hi
    package: ./cmd/hi
    cgo: false
    platforms: [linux/amd64]
---
version: 1
name: stamp
builder: command
source: src
run: sh build.sh
artifacts: ["*"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_contract_shapes_load(tmp_path: Path) -> None:
    go, cmd = load_pipelines([_write(tmp_path, GOOD)], tmp_path)
    assert (go.name, go.builder, go.toolchain, go.source) == ("mini", "go", "go", (tmp_path / "src").resolve())
    assert go.targets[0].platforms == ("linux/amd64",) and go.targets[0].cgo is False
    assert (cmd.builder, cmd.run, cmd.artifacts) == ("command", "sh build.sh", ("*",))


def test_repository_pipelines_load() -> None:
    names = [p.name for p in load_pipelines(None, REPO)]
    assert "go-service" in names


CASES = [
    ("unknown key", GOOD.replace("    cgo: false", "    cgoo: false"), 9, "unknown key `cgoo`", "did you mean `cgo`"),
    ("wrong type", GOOD.replace("cgo: false", "cgo: maybe"), 9, "cgo must be true or false", ""),
    ("missing package", GOOD.replace("    package: ./cmd/hi\n", ""), 7, "missing required key `package`", ""),
    ("unknown platform", GOOD.replace("[linux/amd64]", "[linux/amd46]"), 10, "does not know the platform",
     "linux/amd64"),
    ("bad builder", GOOD.replace("builder: command", "builder: make"), 14, "unknown builder `make`", ""),
    ("bad yaml", GOOD.replace("name: mini", "name: [mini"), 3, "invalid YAML", ""),
    ("duplicate names", GOOD.replace("name: stamp", "name: mini"), 12, "used twice", ""),
    ("not a dir", GOOD.replace("source: src\ntargets", "source: nowhere\ntargets"), 5, "not a directory", ""),
    ("wall clock ldflags", GOOD.replace("    cgo: false", "    ldflags: {main.built: '{now}'}"), 9,
     "unknown placeholder {now}", ""),
]


@pytest.mark.parametrize(("name", "text", "line", "words", "hint"), CASES, ids=[c[0] for c in CASES])
def test_malformed_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: int,
                            words: str, hint: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(FileError) as info:
        load_pipelines([path], tmp_path)
    assert f"{path}:{line}:" in str(info.value)
    assert words in str(info.value) and hint in str(info.value)
    code = cli.main(["build", str(path), "--out", str(tmp_path / "out"), "--root", str(tmp_path),
                     "--lock", str(REPO / "toolchains.lock"), "--backend", "local"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and words in err
    assert not (tmp_path / "out").exists()


def test_pipelines_named_by_name_or_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.errors import BadInput

    (tmp_path / "src").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "two.yaml").write_text(
        "version: 1\nname: first\nbuilder: command\nsource: src\nrun: 'true'\n---\n"
        "version: 1\nname: second\nbuilder: command\nsource: src\nrun: 'true'\n")
    # Another pipeline that does not parse is not the named one's problem.
    (tmp_path / "pipelines" / "broken.yaml").write_text("version: 1\nname: broken\nbuilder: command\nsource: nowhere\n")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in load_pipelines([Path("second")], tmp_path)] == ["second"]
    assert [p.name for p in load_pipelines([Path("pipelines/two.yaml")], tmp_path)] == ["first", "second"]
    with pytest.raises(BadInput, match="no pipeline named `secnd`") as err:
        load_pipelines([Path("secnd")], tmp_path)
    assert err.value.hint == "did you mean `second`?"
    assert [p.name for p in load_pipelines([Path("go-service")], REPO)] == ["go-service"]
