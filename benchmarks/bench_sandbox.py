"""Benchmark of the sandbox backend (bubblewrap) against the host, the local backend and a plain `go build`,
measured in the same run.

    python benchmarks/bench_sandbox.py [--runs N] [--json]

(a) per-step overhead: `go version` through the sandbox backend (go root) vs `go version` run directly on the
    host (target <= 25 ms more);
(b) warm rebuild of go-service through the CLI (`--no-cache`, warm GOCACHE): sandbox vs the local backend doing the
    same work (target <= 1.1x) and vs a plain `go build` of the same targets with the same toolchain and a warm
    cache (target <= 1.2x), with the CPU time of every process on the machine during each (the floor);
(c) warm incremental `go build` (one package edited), sandbox vs local backend (target <= 1.1x);
(d) four builds of go-service at once, each into its own --out, vs one build (target <= 4.4x the wall time);
(e) cold build (reprobuild's GOCACHE removed) vs a plain cold `go build` with an empty cache (target <= 1.05x);
(f) `verify --vary=-cache` (2 runs, sandbox) vs one warm build, against the CPU floor: the CPU time of every
    process during the verify spread over all cores, over the build's wall time (target: within 15% of it).

Medians of N runs (default 3); the sides interleaved so they see the same machine noise. Needs bubblewrap, the
`go-registry` toolchain (fetched into the reprobuild cache if missing) and, for the cgo target, the lock's debian
root (made once; without root or the rootfs the pure-Go targets only, and the figures say so).
"""

from __future__ import annotations

import argparse
import json
import os
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

from _bench import figure_table, timed, timed_cpu  # noqa: E402  (benchmarks/ is on sys.path)
from bench_backends import HELLO, build_hello, go_env, step_ok  # noqa: E402
from bench_build import PIPELINE, plain_build, pure_go_pipeline  # noqa: E402

from reprobuild.backends import ImageRef, RunSpec  # noqa: E402
from reprobuild.backends.local import LocalBackend  # noqa: E402
from reprobuild.backends.sandbox import SandboxBackend  # noqa: E402
from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache  # noqa: E402

OVERHEAD_TARGET_S = 0.025
LOCAL_TARGET = 1.1
PLAIN_TARGET = 1.2
INCREMENTAL_TARGET = 1.1
CONCURRENT_TARGET = 4.4
COLD_TARGET = 1.05
VERIFY_FLOOR_MARGIN = 0.15
GOPATH = "/rb/tmp/gopath"  # a step's GOPATH here
def cli_build(pipeline_file: Path, out: Path, backend: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "reprobuild", "build", str(pipeline_file), "--root", str(REPO), "-q",
            "--toolchain", "go=go-registry", "--backend", backend, "--out", str(out), "--no-cache"]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ok(child: subprocess.Popen[str]) -> None:
    _, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"reprobuild build failed (exit {child.returncode}): {err[-2000:]}")


def cli_verify(pipeline_file: Path, report: Path) -> None:
    argv = [sys.executable, "-m", "reprobuild", "verify", str(pipeline_file), "--root", str(REPO), "-q",
            "--toolchain", "go=go-registry", "--backend", "sandbox", "--vary=-cache", "--report", str(report)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reprobuild verify failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def main(runs: int = 3) -> dict[str, Any]:
    lock = load_lock(REPO / "toolchains.lock")
    cache = ToolchainCache()
    inst = cache.ensure(lock.toolchain("go-registry"))
    image = ImageRef("go", inst.root)
    sandbox = SandboxBackend(lock=lock, cache_root=cache.root, builders_dir=REPO / "builders")
    local = LocalBackend()
    backends: dict[str, Any] = {"sandbox": sandbox, "local": local}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-sandbox-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        # (a) per-step overhead
        env = go_env(GOPATH)
        version = RunSpec(("go", "version"), image, env, (), workdir="/tmp")
        sandbox.run(version)
        host = {"PATH": f"{inst.root}/bin:/usr/bin:/bin", "GOTOOLCHAIN": "local", "HOME": str(work)}
        step: dict[str, list[float]] = {"sandbox": [], "host": []}
        for _ in range(max(runs, 10)):
            step["sandbox"].append(timed(lambda: step_ok(sandbox.run(version))))
            step["host"].append(timed(lambda: subprocess.run(["go", "version"], env=host, check=True,
                                                             capture_output=True)))
        overhead = statistics.median(step["sandbox"]) - statistics.median(step["host"])

        # (b) warm rebuild of go-service through the CLI: sandbox, local, plain
        pipeline_file, why = PIPELINE, ""
        host_cache = work / "host" / "gocache"
        try:
            plain_build(inst.root, pipeline_file, work / "plain-warmup", host_cache)
            sandbox.ensure_image(ImageRef("debian"))
        except Exception as exc:  # no cgo on the host, or no debian root here: pure Go on every side
            why = f"pure-Go targets only ({str(exc).splitlines()[0][:120]})"
            pipeline_file = pure_go_pipeline(work)
            plain_build(inst.root, pipeline_file, work / "plain-warmup", host_cache)
        for name in ("sandbox", "local"):
            wait_ok(cli_build(pipeline_file, work / f"{name}-warmup", name))
        wall: dict[str, list[float]] = {"sandbox": [], "local": [], "plain": []}
        cpu: dict[str, list[float]] = {"sandbox": [], "local": [], "plain": []}
        for i in range(runs):
            for name in ("sandbox", "local"):
                w, c = timed_cpu(lambda n=name, i=i: wait_ok(cli_build(pipeline_file, work / f"{n}-{i}", n)))
                wall[name].append(w)
                cpu[name].append(c)
            w, c = timed_cpu(lambda i=i: plain_build(inst.root, pipeline_file, work / f"plain-{i}", host_cache))
            wall["plain"].append(w)
            cpu["plain"].append(c)
        same = len({(work / f"{n}-0" / "SHA256SUMS").read_text() for n in ("sandbox", "local")}) == 1

        # (c) warm incremental build, one package edited, persistent GOCACHE per backend
        src = work / "src"
        shutil.copytree(HELLO, src)
        incremental: dict[str, list[float]] = {"sandbox": [], "local": []}
        for name, backend in backends.items():
            (work / name / "cache").mkdir(parents=True)
            build_hello(backend, image, src, work / name / "out-warmup", work / name / "cache", env)
        for i in range(max(runs, 5)):
            greet = src / "greet" / "greet.go"
            greet.write_text(greet.read_text().replace(f'"hello{i - 1}, "' if i else '"hello, "', f'"hello{i}, "'))
            for name, backend in backends.items():
                out = work / name / f"out{i}"
                incremental[name].append(timed(lambda b=backend, o=out, n=name: build_hello(b, image, src, o,
                                                                                    work / n / "cache", env)))

        # (d) four builds at once vs one
        one: list[float] = []
        four: list[float] = []
        overlap = True
        for i in range(runs):
            one.append(timed(lambda i=i: wait_ok(cli_build(pipeline_file, work / f"one-{i}", "sandbox"))))
            start = time.perf_counter()
            children = [cli_build(pipeline_file, work / f"four-{i}-{k}", "sandbox") for k in range(4)]
            ends = []
            for child in children:
                wait_ok(child)
                ends.append(time.perf_counter())
            four.append(max(ends) - start)
            overlap = overlap and len({(work / f"four-{i}-{k}" / "SHA256SUMS").read_text() for k in range(4)}) == 1

        # (e) cold: reprobuild's Go build cache removed (toolchain and roots kept) vs plain with an empty cache
        rb_gocache = cache.root / "gocache" / f"sandbox-{inst.key[:16]}"
        cold: dict[str, list[float]] = {"sandbox": [], "plain": []}
        for i in range(max(1, runs // 3)):
            shutil.rmtree(rb_gocache, ignore_errors=True)
            cold["sandbox"].append(timed(lambda i=i: wait_ok(cli_build(pipeline_file, work / f"cold-{i}", "sandbox"))))
            cold["plain"].append(timed(lambda i=i: plain_build(inst.root, pipeline_file, work / f"pcold-{i}",
                                                               work / f"pcold-cache-{i}" / "gocache")))
        wait_ok(cli_build(pipeline_file, work / "rewarm", "sandbox"))

        # (f) verify --vary=-cache vs one warm build, with the CPU floor
        verify: dict[str, list[float]] = {"wall": [], "cpu": [], "build": []}
        for i in range(runs):
            verify["build"].append(timed(lambda i=i: wait_ok(cli_build(pipeline_file, work / f"vb-{i}", "sandbox"))))
            w, c = timed_cpu(lambda i=i: cli_verify(pipeline_file, work / f"verify-{i}.json"))
            verify["wall"].append(w)
            verify["cpu"].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {
        "runs": runs, "load_before": load_before, "cores": cores, "pure_go_why": why,
        "step_sandbox_s": statistics.median(step["sandbox"]), "step_host_s": statistics.median(step["host"]),
        "step_overhead_s": overhead, "step_ok": overhead <= OVERHEAD_TARGET_S,
        "warm_sandbox_s": med["sandbox"], "warm_local_s": med["local"], "warm_plain_s": med["plain"],
        "warm_vs_local": med["sandbox"] / med["local"], "warm_vs_plain": med["sandbox"] / med["plain"],
        "cpu_sandbox_s": statistics.median(cpu["sandbox"]), "cpu_local_s": statistics.median(cpu["local"]),
        "cpu_plain_s": statistics.median(cpu["plain"]), "sandbox_local_identical": same,
        "incremental_sandbox_s": statistics.median(incremental["sandbox"]),
        "incremental_local_s": statistics.median(incremental["local"]),
        "one_s": statistics.median(one), "four_s": statistics.median(four), "four_identical": overlap,
        "cold_sandbox_s": statistics.median(cold["sandbox"]), "cold_plain_s": statistics.median(cold["plain"]),
        "verify_s": statistics.median(verify["wall"]), "verify_cpu_s": statistics.median(verify["cpu"]),
        "verify_build_s": statistics.median(verify["build"]),
    }
    result["cold_ratio"] = result["cold_sandbox_s"] / result["cold_plain_s"]
    result["verify_ratio"] = result["verify_s"] / result["verify_build_s"]
    result["verify_floor"] = result["verify_cpu_s"] / cores / result["verify_build_s"]
    result["floor_vs_plain"] = result["cpu_sandbox_s"] / cores / med["plain"]
    result["incremental_ratio"] = result["incremental_sandbox_s"] / result["incremental_local_s"]
    result["four_ratio"] = result["four_s"] / result["one_s"]
    result["figures"] = figures(result)
    print("\n".join(figure_table(result["figures"])))
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    what = "go-service" + (f" ({r['pure_go_why']})" if r["pure_go_why"] else " (hello amd64+arm64, zpack cgo)")
    return [
        {"figure": f"per-step overhead: `go version` in the sandbox vs on the host (target <= "
                   f"{OVERHEAD_TARGET_S * 1000:.0f} ms more)",
         "ours": f"{r['step_sandbox_s'] * 1000:.1f} ms (sandbox)",
         "baseline": f"{r['step_host_s'] * 1000:.1f} ms (host)",
         "ratio": f"+{r['step_overhead_s'] * 1000:.1f} ms", "ok": r["step_ok"]},
        {"figure": f"warm rebuild, {what}, `--no-cache`, sandbox vs local backend (target <= {LOCAL_TARGET}x)",
         "ours": f"{r['warm_sandbox_s']:.2f} s", "baseline": f"{r['warm_local_s']:.2f} s (local backend)",
         "ratio": f"{r['warm_vs_local']:.2f}x", "ok": r["warm_vs_local"] <= LOCAL_TARGET},
        {"figure": f"warm rebuild, {what}, `--no-cache`, sandbox vs plain `go build`, warm GOCACHE "
                   f"(target <= {PLAIN_TARGET}x)",
         "ours": f"{r['warm_sandbox_s']:.2f} s", "baseline": f"{r['warm_plain_s']:.2f} s (plain go build)",
         "ratio": f"{r['warm_vs_plain']:.2f}x", "ok": r["warm_vs_plain"] <= PLAIN_TARGET},
        {"figure": f"CPU time of every process during the warm rebuild ({what}), sandbox, spread over all "
                   f"{r['cores']} cores vs the plain build's wall time (information: the lowest ratio any schedule "
                   "could reach; local backend for comparison)",
         "ours": f"{r['cpu_sandbox_s']:.2f} core-s (local {r['cpu_local_s']:.2f})",
         "baseline": f"{r['cpu_plain_s']:.2f} core-s (plain go build, {r['warm_plain_s']:.2f} s)",
         "ratio": f">= {r['floor_vs_plain']:.2f}x", "ok": None},
        {"figure": f"warm incremental `go build` (one package edited, warm GOCACHE), sandbox vs local backend "
                   f"(target <= {INCREMENTAL_TARGET}x)",
         "ours": f"{r['incremental_sandbox_s']:.3f} s", "baseline": f"{r['incremental_local_s']:.3f} s (local)",
         "ratio": f"{r['incremental_ratio']:.2f}x", "ok": r["incremental_ratio"] <= INCREMENTAL_TARGET},
        {"figure": f"four builds of go-service at once (four --out dirs, sandbox) vs one build "
                   f"(target <= {CONCURRENT_TARGET}x; identical bytes: {'yes' if r['four_identical'] else 'NO'})",
         "ours": f"{r['four_s']:.2f} s", "baseline": f"{r['one_s']:.2f} s (one build)",
         "ratio": f"{r['four_ratio']:.2f}x", "ok": r["four_ratio"] <= CONCURRENT_TARGET and r["four_identical"]},
        {"figure": f"cold build, {what}, sandbox (its GOCACHE removed) vs plain `go build`, empty GOCACHE "
                   f"(target <= {COLD_TARGET}x)",
         "ours": f"{r['cold_sandbox_s']:.2f} s", "baseline": f"{r['cold_plain_s']:.2f} s (plain go build)",
         "ratio": f"{r['cold_ratio']:.2f}x", "ok": r["cold_ratio"] <= COLD_TARGET},
        {"figure": f"verify {what}, 2 runs, --vary=-cache (sandbox) vs one warm build, against the CPU floor "
                   f"(every process's CPU time during the verify over {r['cores']} cores / the build's wall time; "
                   f"target: within {VERIFY_FLOOR_MARGIN:.0%} of it)",
         "ours": f"{r['verify_s']:.2f} s ({r['verify_ratio']:.2f}x)",
         "baseline": f"{r['verify_build_s']:.2f} s (one build); floor {r['verify_floor']:.2f}x "
                     f"({r['verify_cpu_s']:.2f} core-s)",
         "ratio": f"{r['verify_ratio'] / r['verify_floor']:.2f}x the floor",
         "ok": r["verify_ratio"] <= r["verify_floor"] * (1 + VERIFY_FLOOR_MARGIN)},
        {"figure": "sandbox and local backends give identical bytes, go-service (target yes)",
         "ours": "yes" if r["sandbox_local_identical"] else "no", "baseline": "local backend, same build",
         "ratio": "identical bytes" if r["sandbox_local_identical"] else "bytes differ",
         "ok": r["sandbox_local_identical"]},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ns = parser.parse_args()
    res = main(ns.runs)
    if ns.json:
        print(json.dumps(res, indent=2, sort_keys=True))
