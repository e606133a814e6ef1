"""Sharding and merging: `build --shard i/n` covers every unit once; `merge` of the shards equals an
unsharded build byte for byte; disagreeing outputs and rebuilds make `merge` exit 1 naming the artifact.

Command pipelines on the local backend (cheap), run through the real CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reprobuild.build.shard import assign, parse_shard, plan_digest, plan_units, select
from reprobuild.config.pipeline import GoTarget, Pipeline
from tests.conftest import COPY_INPUT, REPO, command_projects, run_cli

UNITS = 12
FILES = ("SHA256SUMS", "manifest.json", "provenance.json")


def project(root: Path, n: int = UNITS, run: str = COPY_INPUT) -> Path:
    """n command pipelines (one per file), each with its own source tree."""
    return command_projects(root, n, "unit", run)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private cache and a private local-backend build root (other test runs may share the machine)."""
    (tmp_path / "tmp").mkdir()
    return {"REPROBUILD_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}


def cli(root: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    res = run_cli(*args, "--lock", str(REPO / "toolchains.lock"), env=env, cwd=root)
    return res.returncode, res.stdout + res.stderr


def build(root: Path, env: dict[str, str], out: str, *extra: str) -> None:
    code, text = cli(root, env, "build", "--backend", "local", "--out", out, "-q", *extra)
    assert code == 0, text


def artifacts(out: Path) -> list[str]:
    return [line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()]


def test_three_shards_cover_every_unit_once_and_merge_to_the_unsharded_build(tmp_path: Path,
                                                                            env: dict[str, str]) -> None:
    root = project(tmp_path / "p")
    build(root, env, "full", "--no-cache")
    for i in (1, 2, 3):
        build(root, env, f"shard{i}", "--shard", f"{i}/3", "--no-cache")
    seen = [a for i in (1, 2, 3) for a in artifacts(root / f"shard{i}")]
    assert sorted(seen) == artifacts(root / "full") and len(seen) == UNITS == len(set(seen))
    manifests = [json.loads((root / f"shard{i}" / "manifest.json").read_text()) for i in (1, 2, 3)]
    assert [m["shard"] for m in manifests] == ["1/3", "2/3", "3/3"]
    assert len({m["shard_plan"] for m in manifests}) == 1
    assert sorted(u for m in manifests for u in m["shard_units"]) == [f"unit{k:02d}" for k in range(1, UNITS + 1)]

    code, text = cli(root, env, "merge", "shard3", "shard1", "shard2", "--out", "merged")
    assert code == 0, text
    for name in FILES:
        assert (root / "merged" / name).read_bytes() == (root / "full" / name).read_bytes(), name
    for rel in artifacts(root / "full"):
        assert (root / "merged" / rel).read_bytes() == (root / "full" / rel).read_bytes()
    assert "shard" not in json.loads((root / "merged" / "manifest.json").read_text())


def test_a_missing_shard_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 4)
    build(root, env, "s1", "--shard", "1/2")
    code, text = cli(root, env, "merge", "s1", "--out", "merged")
    assert code == 2 and "2/2" in text, text
    assert not (root / "merged").exists()


def test_dry_run_prints_the_plan_and_a_matrix(tmp_path: Path, env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 5)
    gh = tmp_path / "github_output"
    code, text = cli(root, env, "build", "--dry-run", "--shards", "2", "--rebuilds", "2", "--github-output",
                     str(gh), "--export-costs", str(tmp_path / "costs.json"), "--json")
    assert code == 0, text
    plan = json.loads(text[text.index("{"):])
    assert [s["units"] for s in plan["shards"]] == [["unit01", "unit03", "unit05"], ["unit02", "unit04"]]
    assert gh.read_text() == "shards=[1, 2]\nrebuilds=[1, 2]\n"
    assert json.loads((tmp_path / "costs.json").read_text()) == {}
    assert not (root / "out").exists()


def test_merge_refuses_an_artifact_two_outputs_built_differently(tmp_path: Path, env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 1, run="date +%s.%N > $OUT/out.txt")
    build(root, env, "a", "--no-cache")
    build(root, env, "b", "--no-cache")
    digests = [(root / d / "SHA256SUMS").read_text().split()[0] for d in ("a", "b")]
    assert digests[0] != digests[1]
    code, text = cli(root, env, "merge", "a", "b", "--out", "merged")
    assert code == 1, text
    assert "unit01/out.txt" in text and digests[0] in text and digests[1] in text
    assert not (root / "merged").exists()


def test_rebuilds_that_disagree_fail_the_agreement_naming_the_artifact(tmp_path: Path,
                                                                      env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 2)
    (root / "pipelines" / "stamp.yaml").write_text(
        "version: 1\nname: stamp\nbuilder: command\nsource: src/unit01\nrun: 'date +%s.%N > $OUT/out.txt'\n")
    for rebuild in ("r1", "r2"):  # independent rebuilds, each sharded and merged
        for i in (1, 2):
            build(root, env, f"{rebuild}-s{i}", "--shard", f"{i}/2", "--no-cache")
        code, text = cli(root, env, "merge", f"{rebuild}-s1", f"{rebuild}-s2", "--out", rebuild)
        assert code == 0, text
    report = tmp_path / "agreement.json"
    summary = tmp_path / "summary.md"
    code, text = cli(root, env, "merge", "--require-agreement", "r1", "r2", "--out", "final",
                     "--report", str(report), "--markdown", str(summary))
    assert code == 1, text
    assert "stamp/out.txt" in text and "unit01/out.txt" not in text
    data = json.loads(report.read_text())
    assert data["agreed"] is False and [d["artifact"] for d in data["disagreements"]] == ["stamp/out.txt"]
    assert "stamp/out.txt" in summary.read_text()
    assert not (root / "final").exists()
    code, text = cli(root, env, "compare", "r1", "r2")  # the other way to look at it: explained
    assert code == 1 and "stamp/out.txt" in text


def test_rebuilds_that_agree_give_the_output(tmp_path: Path, env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 3)
    build(root, env, "r1", "--no-cache")
    build(root, env, "r2", "--no-cache")
    code, text = cli(root, env, "merge", "--require-agreement", "r1", "r2", "--out", "final")
    assert code == 0, text
    for name in FILES:
        assert (root / "final" / name).read_bytes() == (root / "r1" / name).read_bytes()


# --- the pure planning --------------------------------------------------------------------------

def go_pipeline(name: str, targets: int) -> Pipeline:
    return Pipeline(name=name, builder="go", source=Path("/src"), file=Path("/p.yaml"), line=1, toolchain="go",
                    targets=tuple(GoTarget(f"t{k:02d}", f"./cmd/t{k}", False, ("linux/amd64",))
                                  for k in range(targets)))


def command_pipeline(name: str) -> Pipeline:
    return Pipeline(name=name, builder="command", source=Path("/src"), file=Path("/p.yaml"), line=1, run="true")


def test_units_are_go_targets_and_whole_pipelines_sorted_by_id() -> None:
    units = plan_units([command_pipeline("zz"), go_pipeline("svc", 3), command_pipeline("aa")])
    assert [u.id for u in units] == ["aa", "svc/t00", "svc/t01", "svc/t02", "zz"]
    narrowed = units[2].as_pipeline()
    assert [t.name for t in narrowed.targets] == ["t01"] and narrowed.name == "svc"


def test_selection_is_stable_complete_and_round_robin_without_costs() -> None:
    units = plan_units([go_pipeline("svc", 12)])
    shards = [select(units, i, 3) for i in (1, 2, 3)]
    assert sorted(u.id for s in shards for u in s) == sorted(u.id for u in units)
    assert [u.id for u in shards[0]] == ["svc/t00", "svc/t03", "svc/t06", "svc/t09"]
    assert shards == [select(list(reversed(units)), i, 3) for i in (1, 2, 3)]  # input order does not matter


def test_recorded_costs_balance_the_shards() -> None:
    units = plan_units([go_pipeline("svc", 6)])
    costs = {"svc/t00": 10.0, "svc/t01": 6.0, "svc/t02": 4.0, "svc/t03": 3.0, "svc/t04": 2.0, "svc/t05": 1.0}
    shards = assign(units, 2, costs)
    loads = [sum(costs[u.id] for u in s) for s in shards]
    assert loads == [13.0, 13.0]
    assert plan_digest(shards) != plan_digest(assign(units, 2))
    # unknown units count at the median known cost; a little timing noise does not reshuffle
    noisy = {k: v + 0.01 for k, v in costs.items() if k != "svc/t05"}
    assert plan_digest(assign(units, 2, noisy)) == plan_digest(assign(units, 2, {**costs, "svc/t05": 4.0}))


@pytest.mark.parametrize("spec", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shard_specs_are_bad_input(spec: str) -> None:
    from reprobuild.errors import BadInput

    with pytest.raises(BadInput, match=re.escape(spec)):
        parse_shard(spec)


def test_a_quorum_of_rebuilds_outvotes_a_dissenting_one(tmp_path: Path, env: dict[str, str]) -> None:
    root = project(tmp_path / "p", 2)
    build(root, env, "r1", "--no-cache")
    build(root, env, "r2", "--no-cache")
    (root / "src" / "unit02" / "input.txt").write_text("a different input\n")
    build(root, env, "r3", "--no-cache")
    code, text = cli(root, env, "merge", "--require-agreement", "r3", "r1", "r2", "--out", "all")
    assert code == 1 and "unit02/out.txt" in text and "unit01/out.txt" not in text, text
    code, text = cli(root, env, "merge", "--require-agreement", "--quorum", "2", "r3", "r1", "r2", "--out", "two")
    assert code == 0 and "unit02/out.txt" in text, text  # agreed, and the dissent is still reported
    assert (root / "two" / "SHA256SUMS").read_bytes() == (root / "r1" / "SHA256SUMS").read_bytes()
