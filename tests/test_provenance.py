"""provenance.json: valid in-toto Statement v1 + SLSA Provenance v1, byte-identical for the same inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import REPO, run_cli

SCHEMAS = REPO / "tests" / "data" / "schemas"


def _validate(statement: dict[str, Any], predicate_schema: str | None) -> None:
    jsonschema.validate(statement, json.loads((SCHEMAS / "intoto-statement-v1.json").read_text()))
    if predicate_schema:
        jsonschema.validate(statement["predicate"], json.loads((SCHEMAS / predicate_schema).read_text()))


def _project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "build.sh").write_text("printf 'fixed\\n' > \"$OUT/fixed.txt\"\n")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "p.yaml").write_text(
        "version: 1\nname: stamp\nbuilder: command\nsource: src\nrun: sh build.sh\nartifacts: ['*']\n")
    shutil.copy(REPO / "toolchains.lock", root / "toolchains.lock")
    return root


def test_schemas_reject_what_they_must() -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validate({"_type": "https://in-toto.io/Statement/v0.1", "subject": [], "predicateType": "x:y",
                   "predicate": {}}, None)


def test_build_writes_valid_deterministic_provenance(tmp_path: Path) -> None:
    a = _project(tmp_path / "a")
    b = _project(tmp_path / "somewhere" / "else" / "b")
    for root in (a, b):
        res = run_cli("build", "--out", "out", "--backend", "local", cwd=root)
        assert res.returncode == 0, res.stderr
    prov_a = (a / "out" / "provenance.json").read_bytes()
    assert prov_a == (b / "out" / "provenance.json").read_bytes()
    statement = json.loads(prov_a)
    _validate(statement, "slsa-provenance-v1.json")
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    sums = (a / "out" / "SHA256SUMS").read_text().split()
    assert statement["subject"] == [{"name": sums[1], "digest": {"sha256": sums[0]}}]
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert "toolchains.lock" in deps and "source:stamp" in deps
    assert statement["predicate"]["buildDefinition"]["internalParameters"] == {"backend": "local",
                                                                               "hermetic": False}
    assert "provenance.json" not in (a / "out" / "SHA256SUMS").read_text()


def test_verify_attestation_names_the_same_subjects(tmp_path: Path) -> None:
    root = _project(tmp_path / "v")
    assert run_cli("build", "--out", "out", "--backend", "local", cwd=root).returncode == 0
    res = run_cli("verify", "--backend", "local", "--attestation", "verify.json", "--vary=-all,+build_path",
                  cwd=root)
    assert res.returncode == 0, res.stderr
    att = json.loads((root / "verify.json").read_text())
    _validate(att, None)
    build_prov = json.loads((root / "out" / "provenance.json").read_text())
    assert att["subject"] == build_prov["subject"]
    assert att["predicate"]["reproducible"] is True and att["predicate"]["runs"] == 2
