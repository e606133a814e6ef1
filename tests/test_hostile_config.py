"""Issue 15, items 5 and 6: YAML bombs and values that smuggle flags or leave the repository are exit 2 at
file:line, fast, with no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reprobuild.config.lock import load_lock
from reprobuild.config.pipeline import load_pipelines
from reprobuild.errors import BadInput, FileError
from tests.conftest import REPO, run_cli
from tests.hostile import ALIASED_PIPELINE, RECURSIVE_ALIAS, billion_laughs

GO = ("version: 1\nname: mini\nbuilder: go\ntoolchain: go\nsource: src\ntargets:\n"
      "  - name: hi\n    package: ./cmd/hi\n")


def _repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


# (id, pipeline text, line the error must name, words it must contain): one line per hostile case
PIPELINES: list[tuple[str, str, int, str]] = [
    ("recursive-alias", RECURSIVE_ALIAS, 1, "anchor"),
    ("billion-laughs", billion_laughs(), 1, "anchor"),
    ("aliased-value", ALIASED_PIPELINE, 2, "anchor `&n`"),
    ("empty-file", "", 1, "no pipeline"),
    ("comment-only", "# nothing here\n", 1, "no pipeline"),
    ("ldflags-smuggle", GO + "    ldflags:\n      main.version: 1.0 -s -w\n", 10, "whitespace"),
    ("ldflags-quote", GO + "    ldflags:\n      main.version: \"a'b\"\n", 10, "quote"),
    ("module-version-space", GO.replace("source: src\n", "source: src\nmodule_version: 1 -s\n"), 6,
     "module_version"),
    ("source-escape", GO.replace("source: src", "source: ../../../etc"), 5, "outside the repository"),
    ("source-absolute", GO.replace("source: src", "source: /etc"), 5, "outside the repository"),
    ("package-escape", GO.replace("./cmd/hi", "./../../.."), 8, "inside the module"),
    ("sde-too-large", GO + "source_date_epoch: 99999999999999999999\n", 9, "out of range"),
    ("sde-negative", GO + "source_date_epoch: -1\n", 9, "out of range"),
]


@pytest.mark.parametrize(("text", "line", "words"), [c[1:] for c in PIPELINES], ids=[c[0] for c in PIPELINES])
def test_hostile_pipeline_is_refused_at_its_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _repo(tmp_path, text)
    start = time.monotonic()
    with pytest.raises(FileError) as err:
        load_pipelines([path], tmp_path)
    assert time.monotonic() - start < 2
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_source_through_a_link_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "src").symlink_to(tmp_path)
    path = tmp_path / "repo" / "p.yaml"
    path.write_text(GO)
    with pytest.raises(FileError, match="outside the repository"):
        load_pipelines([path], tmp_path / "repo")


def test_cli_billion_laughs_is_exit_2_fast_without_traceback(tmp_path: Path) -> None:
    path = _repo(tmp_path, billion_laughs(levels=12))
    start = time.monotonic()
    done = run_cli("build", str(path), "--out", str(tmp_path / "out"), "--lock", str(REPO / "toolchains.lock"),
                   cwd=tmp_path, timeout=60)
    assert time.monotonic() - start < 20
    assert done.returncode == 2, done.stderr
    assert f"{path}:1" in done.stderr and "Traceback" not in done.stderr


def test_cli_empty_pipeline_is_exit_2(tmp_path: Path) -> None:
    path = _repo(tmp_path, "")
    done = run_cli("build", str(path), "--out", str(tmp_path / "out"), "--lock", str(REPO / "toolchains.lock"),
                   cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr + done.stdout
    assert f"{path}:1" in done.stderr and "wrote 0" not in done.stderr


def test_lock_with_aliases_in_images_is_refused(tmp_path: Path) -> None:
    text = (REPO / "toolchains.lock").read_text()
    lock = tmp_path / "toolchains.lock"
    lock.write_text(text.replace("\nimages:", "\nimages: &imgs") if "\nimages:" in text
                    else text + "images: &imgs {}\n")
    with pytest.raises(FileError, match="anchor"):
        load_lock(lock)


def test_oversized_yaml_is_refused_before_parsing(tmp_path: Path) -> None:
    from reprobuild.config.yamlload import MAX_YAML_BYTES

    path = tmp_path / "p.yaml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_YAML_BYTES + 1)
    with pytest.raises(FileError, match="larger than"):
        load_pipelines([path], tmp_path)


def test_source_date_epoch_env_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.config.pipeline import source_date_epoch

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "999999999999999")
    with pytest.raises(BadInput, match="out of range"):
        source_date_epoch(0)
