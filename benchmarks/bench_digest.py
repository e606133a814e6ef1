"""Benchmark of hashing each source tree once per build and of the stat-keyed digest cache across builds.

    python benchmarks/bench_digest.py [--runs N] [--files N]

The tree: go-mini, a copy of examples/go-service with one pure-Go target (hello, linux/amd64), whose
vendor/ gets N generated files (default 3,000, 4 KiB each, in packages nothing imports), as a real
project with a committed vendor/ has. One untimed build records the unit in a fresh action cache; the
files are then left alone for a few seconds (files changed within 2 s of a walk are never cached).

(a) warm rebuild through the CLI (`reprobuild build`, local backend, action cache on: the unit is
    restored, so the time is the CLI, the lock, the pipeline, the source digest for the key and the
    provenance, and the restore), with the digest cache (`REPROBUILD_DIGEST_CACHE=1`, the default) vs
    without it (`=0`, every file hashed once per build). Medians of N runs, the two interleaved.
(b) the digest work alone, in this process: the way builds did it before (the tree hashed for the action-
    cache key, then again for the provenance's `source:` and its `vendor/` for `vendor:`: three hashes of
    vendor/) vs one walk (`TreeDigests` without the cache) vs one walk with a warm digest cache.
(c) the CLI's import time: `python -c "import reprobuild.cli"` vs `python -c "pass"` (interpreter start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _bench import figure_table, timed  # noqa: E402  (benchmarks/ is on sys.path)

from reprobuild.build.treedigest import TreeDigests  # noqa: E402
from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache  # noqa: E402
from reprobuild.toolchains.extract import tree_hash, tree_records  # noqa: E402

PIPELINE = """version: 1
name: go-mini
builder: go
toolchain: go
source: go-mini
module_version: 1.0.0
targets:
  - name: hello
    package: ./cmd/hello
    cgo: false
    platforms: [linux/amd64]
"""


def make_tree(work: Path, files: int) -> Path:
    """go-mini: go-service's source and vendor/, plus `files` generated files under vendor/."""
    src = work / "go-mini"
    shutil.copytree(REPO / "examples" / "go-service", src, symlinks=True)
    shutil.rmtree(src / "cmd" / "zpack", ignore_errors=True)
    body = "// generated filler: nothing imports this package\n" + "// " + "x" * 76 + "\n"
    for i in range(files):
        pkg = src / "vendor" / "example.com" / "generated" / f"p{i // 50:03d}"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / f"f{i:05d}.go").write_text(f"package p{i // 50:03d}\n" + body * 50)
    (work / "pipelines").mkdir()
    (work / "pipelines" / "go-mini.yaml").write_text(PIPELINE)
    return src


def cli_build(work: Path, out: Path, actions: Path, cache_on: bool) -> None:
    env = {**os.environ, "REPROBUILD_DIGEST_CACHE": "1" if cache_on else "0", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "reprobuild", "build", "pipelines/go-mini.yaml", "--root", str(work), "-q",
            "--lock", str(REPO / "toolchains.lock"), "--toolchain", "go=go-registry", "--backend", "local",
            "--action-cache", str(actions), "--out", str(out)]
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"reprobuild build failed (exit {done.returncode}): {done.stderr[-2000:]}")


def artifacts(out: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert data, f"{out}: no artifacts"
    return data


def old_way(src: Path) -> tuple[str, str]:
    """What a warm rebuild hashed before: the key's source digest, then the provenance's source and vendor."""
    key = tree_hash({k: v for k, v in tree_records(src).items() if k.split("/")[0] != ".git"})
    source = tree_hash({k: v for k, v in tree_records(src).items() if k.split("/")[0] != ".git"})
    vendor = tree_hash(tree_records(src / "vendor"))
    assert key == source
    return source, vendor


def new_way(src: Path, cache: Path | None) -> tuple[str, str, int]:
    trees = TreeDigests(cache)
    return trees.digest(src), trees.digest(src / "vendor", ()), trees.hashed


def import_time() -> float:
    return timed(lambda: subprocess.run([sys.executable, "-c", "import reprobuild.cli"], check=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)}))


def bare_start() -> float:
    return timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))


def main(runs: int = 5, files: int = 3000) -> dict[str, Any]:
    ToolchainCache().ensure(load_lock(REPO / "toolchains.lock").toolchain("go-registry"))  # outside the timings
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in ("cli_cached", "cli_uncached", "old", "one_walk", "cached_walk",
                                                     "import", "bare")}
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-digest-") as tmp:
        work = Path(tmp)
        src = make_tree(work, files)
        count = sum(1 for p in src.rglob("*") if p.is_file())
        actions, digests = work / "actions", work / "digests"
        cli_build(work, work / "record", actions, cache_on=True)  # builds the unit, records it
        time.sleep(2.5)  # the files age past the racy window (2 s): the next walk may cache them
        cli_build(work, work / "prime", actions, cache_on=True)  # the digest cache learns the tree
        new_way(src, digests)  # and so does this process's own cache dir, for (b)
        for i in range(runs):
            times["cli_uncached"].append(timed(lambda i=i: cli_build(work, work / f"u{i}", actions, False)))
            times["cli_cached"].append(timed(lambda i=i: cli_build(work, work / f"c{i}", actions, True)))
            assert artifacts(work / f"u{i}") == artifacts(work / "record") == artifacts(work / f"c{i}")
            got: dict[str, Any] = {}
            times["old"].append(timed(lambda got=got: got.update(old=old_way(src))))
            times["one_walk"].append(timed(lambda got=got: got.update(walk=new_way(src, None))))
            times["cached_walk"].append(timed(lambda got=got: got.update(cached=new_way(src, digests))))
            old, walk, cached = got["old"], got["walk"], got["cached"]
            assert old == walk[:2] == cached[:2], "the digests must not depend on how they are computed"
            assert cached[2] == 0, f"the warm digest cache read {cached[2]} files"
            times["import"].append(import_time())
            times["bare"].append(bare_start())
    med = {k: statistics.median(v) for k, v in times.items()}
    result: dict[str, Any] = {
        "runs": runs, "files": count, **{f"{k}_s": round(v, 4) for k, v in med.items()},
        "cli_ratio": round(med["cli_uncached"] / med["cli_cached"], 2),
        "walk_ratio": round(med["old"] / med["one_walk"], 2),
        "cached_ratio": round(med["old"] / med["cached_walk"], 1),
        "import_over_bare_s": round(med["import"] - med["bare"], 3),
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
    }
    result["figures"] = figures(result)
    print("\n".join(figure_table(result["figures"])))
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    tree = f"go-mini ({r['files']:,} files, {r['files'] - 50:,}+ of them in vendor/)"
    return [
        {"figure": f"warm rebuild (action cache hit, whole CLI, local backend), {tree}: with the digest cache "
                   "vs without it (information)",
         "ours": f"{r['cli_cached_s']:.3f} s", "baseline": f"{r['cli_uncached_s']:.3f} s (REPROBUILD_DIGEST_CACHE=0)",
         "ratio": f"{r['cli_ratio']:.2f}x faster", "ok": None},
        {"figure": f"source digests of one build, {tree}: one walk (action-cache key, provenance source and vendor) "
                   "vs hashing for each, as builds did before (information)",
         "ours": f"{r['one_walk_s']:.3f} s", "baseline": f"{r['old_s']:.3f} s (3 hashes of vendor/)",
         "ratio": f"{r['walk_ratio']:.2f}x faster", "ok": None},
        {"figure": f"source digests of one build, {tree}, unchanged since the last build: stat-keyed digest cache "
                   "vs hashing for each, as before (target: milliseconds)",
         "ours": f"{r['cached_walk_s'] * 1000:.0f} ms (0 files read)", "baseline": f"{r['old_s']:.3f} s",
         "ratio": f"{r['cached_ratio']:.0f}x faster", "ok": r["cached_walk_s"] < 0.1},
        {"figure": "CLI import time: `python -c 'import reprobuild.cli'` vs the bare interpreter start (information)",
         "ours": f"{r['import_s']:.3f} s", "baseline": f"{r['bare_s']:.3f} s (python -c pass)",
         "ratio": f"+{r['import_over_bare_s']:.3f} s", "ok": None},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=3000)
    ns = parser.parse_args()
    main(ns.runs, ns.files)
