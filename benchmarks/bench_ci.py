"""Benchmark of CI at scale: the action cache, and sharding over local workers.

    python benchmarks/bench_ci.py [--runs N] [--json]

(a) no-op rebuild of 20 unchanged Go targets with the action cache (`reprobuild build`, end to end
    through the CLI) vs a warm rebuild without it (`--no-cache`, warm GOCACHE): target <= 2 s and
    >= 10x faster;
(b) sharded build of 12 targets over 2 local worker processes (`build --shard 1/2` and `2/2` at once,
    then `merge`) vs 1 worker (one unsharded build), no action cache: target >= 1.6x faster.
    Measured on 12 `command` targets that each take a fixed 1 s of wall time (a step waiting on a
    network, a test server, an upload: what sharding over runners buys regardless of the cores the
    machine has), and, for information, on 12 real Go targets (CPU-bound: bounded by the free cores).
    Each worker gets its own TMPDIR: the local backend takes turns on one build root per TMPDIR, the
    way separate runners each have their own.

Every figure is a median; the outputs of the compared runs are checked to be identical. Needs the
`go-registry` toolchain (fetched into the reprobuild cache if missing). `main()` returns the figures
(with a `figures` list for BENCHMARKS.md) and prints a Markdown table.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _bench import figure_table, timed  # noqa: E402  (benchmarks/ is on sys.path)

from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache  # noqa: E402

NOOP_TARGET_S = 2.0
NOOP_TARGET_RATIO = 10.0
SHARD_TARGET_RATIO = 1.6
MINI = REPO / "tests" / "data" / "go-mini"


def go_project(root: Path, targets: int) -> Path:
    """A Go pipeline with `targets` targets of go-mini's pure-Go command, each stamped with its own name."""
    shutil.copytree(MINI, root / "src")
    lines = ["version: 1", "name: mini", "builder: go", "toolchain: go", "source: src", "targets:"]
    for k in range(targets):
        lines += [f"  - name: t{k:02d}", "    package: ./cmd/hi", "    platforms: [linux/amd64]",
                  "    ldflags:", '      main.version: "{target}"']
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "mini.yaml").write_text("\n".join(lines) + "\n")
    return root


def command_project(root: Path, targets: int, seconds: float) -> Path:
    (root / "pipelines").mkdir(parents=True)
    for k in range(targets):
        name = f"c{k:02d}"
        (root / "src" / name).mkdir(parents=True)
        (root / "src" / name / "input.txt").write_text(f"{name}\n")
        (root / "pipelines" / f"{name}.yaml").write_text(
            f"version: 1\nname: {name}\nbuilder: command\nsource: src/{name}\n"
            f"run: 'sleep {seconds} && cp input.txt $OUT/out.txt'\nartifacts: ['*.txt']\n")
    return root


def cli(root: Path, *args: str, tmpdir: Path | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return subprocess.Popen([sys.executable, "-m", "reprobuild", *args, "-q", "--lock",
                             str(root / "toolchains.lock")], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"reprobuild failed (exit {proc.returncode}): {err.decode()[-2000:]}")


def build_args(out: str, *extra: str) -> list[str]:
    return ["build", "--backend", "local", "--toolchain", "go=go-registry", "--out", out, *extra]


def noop_vs_warm(work: Path, runs: int) -> dict[str, Any]:
    root = go_project(work / "noop", 20)
    shutil.copy(REPO / "toolchains.lock", root / "toolchains.lock")
    cache = ["--action-cache", str(work / "actions")]
    wait(cli(root, *build_args("first", *cache)))  # fills the action cache and GOCACHE
    warm = [timed(lambda: wait(cli(root, *build_args("warm", *cache, "--no-cache")))) for _ in range(runs)]
    noop = [timed(lambda: wait(cli(root, *build_args("noop", *cache)))) for _ in range(runs)]
    same = all((root / d / "SHA256SUMS").read_bytes() == (root / "first" / "SHA256SUMS").read_bytes()
               for d in ("warm", "noop"))
    w, n = statistics.median(warm), statistics.median(noop)
    return {"noop_s": round(n, 3), "noop_runs_s": [round(x, 3) for x in noop], "warm_s": round(w, 3),
            "warm_runs_s": [round(x, 3) for x in warm], "noop_speedup": round(w / n, 1),
            "noop_identical": same, "noop_ok": n <= NOOP_TARGET_S and w / n >= NOOP_TARGET_RATIO}


def sharded_vs_single(root: Path, runs: int, label: str) -> dict[str, Any]:
    shutil.copy(REPO / "toolchains.lock", root / "toolchains.lock")
    nocache = ("--no-cache", "--action-cache", str(root / "actions"))
    wait(cli(root, *build_args("warmup", *nocache), tmpdir=root / "tmp1"))  # GOCACHE warm for both sides

    def one_worker() -> None:
        wait(cli(root, *build_args("single", *nocache), tmpdir=root / "tmp1"))

    def two_workers() -> None:
        procs = [cli(root, *build_args(f"shard{i}", "--shard", f"{i}/2", *nocache), tmpdir=root / f"tmp{i}")
                 for i in (1, 2)]
        for p in procs:
            wait(p)
        shutil.rmtree(root / "merged", ignore_errors=True)
        wait(cli(root, "merge", "shard1", "shard2", "--out", "merged"))

    single, sharded = [], []
    for _ in range(runs):  # interleaved, so both see the same machine noise
        single.append(timed(one_worker))
        sharded.append(timed(two_workers))
    same = all((root / "merged" / name).read_bytes() == (root / "single" / name).read_bytes()
               for name in ("SHA256SUMS", "manifest.json", "provenance.json"))
    s, p = statistics.median(single), statistics.median(sharded)
    return {f"{label}_one_worker_s": round(s, 3), f"{label}_two_workers_s": round(p, 3),
            f"{label}_speedup": round(s / p, 2), f"{label}_identical": same,
            f"{label}_ok": s / p >= SHARD_TARGET_RATIO}


def main(runs: int = 3) -> dict[str, Any]:
    lock = load_lock(REPO / "toolchains.lock")
    ToolchainCache().ensure(lock.toolchain("go-registry"))  # fetched once, outside the timings
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-ci-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"runs": runs}
        result.update(noop_vs_warm(work, runs))
        result.update(sharded_vs_single(command_project(work / "latency", 12, 1.0), runs, "shard_latency"))
        result.update(sharded_vs_single(go_project(work / "cpu", 12), runs, "shard_go"))
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    result["machine"] = machine()
    result["figures"] = figures(result)
    print(render(result))
    return result


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}"


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"figure": "no-op rebuild, 20 Go targets, action cache (target <= 2 s, >= 10x)",
         "ours": f"{r['noop_s']:.2f} s", "baseline": f"{r['warm_s']:.2f} s (warm rebuild, --no-cache)",
         "ratio": f"{r['noop_speedup']:.1f}x faster", "ok": r["noop_ok"]},
        {"figure": "12 targets of 1 s each, 2 local workers + merge (target >= 1.6x)",
         "ours": f"{r['shard_latency_two_workers_s']:.2f} s", "baseline": f"{r['shard_latency_one_worker_s']:.2f} s "
         "(1 worker)", "ratio": f"{r['shard_latency_speedup']:.2f}x faster", "ok": r["shard_latency_ok"]},
        {"figure": "12 Go targets (CPU-bound), 2 local workers + merge (information)",
         "ours": f"{r['shard_go_two_workers_s']:.2f} s", "baseline": f"{r['shard_go_one_worker_s']:.2f} s (1 worker)",
         "ratio": f"{r['shard_go_speedup']:.2f}x faster", "ok": None},
    ]


def render(r: dict[str, Any]) -> str:
    rows = figure_table(r["figures"])
    same = r["noop_identical"] and r["shard_latency_identical"] and r["shard_go_identical"]
    rows += ["", f"Outputs identical across the compared runs: {'yes' if same else '**NO**'}. "
             f"Machine: {r['machine']}; load average {r['load_before']:.1f} before, {r['load_after']:.1f} after."]
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    res = main(ns.runs)
    if ns.json:
        print(json.dumps(res, indent=2))
