"""Benchmark: `reprobuild vendor --check` on the clean example tree vs. a plain `go mod vendor`.

Target (issue 4): `vendor --check` on a clean tree <= 2 s. Both sides use the same Go (the lock's
`go-registry` entry), the same file-based GOPROXY made from examples/go-modules, and the same warm
module cache; the first run of each warms it and is not counted.

    python benchmarks/bench_vendor.py [--runs N]

Prints a Markdown table; `main()` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.kinds.go.goenv import GoSettings, go_environment  # noqa: E402
from reprobuild.kinds.go.goproxy import write_file_proxy  # noqa: E402
from reprobuild.kinds.go.vendor import vendor_module  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache, default_cache_root  # noqa: E402

TARGET_S = 2.0


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up: fills the module cache, not counted
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(runs: int = 5) -> dict[str, Any]:
    cache_root = default_cache_root()
    go = ToolchainCache(root=cache_root).ensure(load_lock(REPO / "toolchains.lock").toolchain("go-registry"))
    with tempfile.TemporaryDirectory(prefix="bench-vendor-") as tmp_s:
        tmp = Path(tmp_s)
        proxy = write_file_proxy(REPO / "examples" / "go-modules", tmp / "proxy")
        repo = tmp / "repo"
        (repo / "pipelines").mkdir(parents=True)
        shutil.copy(REPO / "pipelines" / "go-service.yaml", repo / "pipelines")
        shutil.copytree(REPO / "examples" / "go-service", repo / "examples" / "go-service")
        module = repo / "examples" / "go-service"

        cli = [sys.executable, "-m", "reprobuild", "vendor", "--check", "--quiet", "--root", str(repo),
               "--lock", str(REPO / "toolchains.lock"), "--toolchain", "go=go-registry", "--goproxy", proxy]
        cli_env = {**os.environ, "REPROBUILD_CACHE": str(cache_root)}

        def run_cli() -> None:
            done = subprocess.run(cli, env=cli_env, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"vendor --check failed ({done.returncode}):\n{done.stdout}{done.stderr}")

        def run_library() -> None:
            if not vendor_module(module, go, proxy, True, cache_root=cache_root).clean:
                raise SystemExit("vendor --check found drift in a clean copy of the example")

        plain = tmp / "plain"
        shutil.copytree(module, plain)
        go_env = go_environment(GoSettings(go, cache_root, proxy))

        def run_plain() -> None:
            subprocess.run([str(go.go), "mod", "vendor"], cwd=plain, env=go_env, check=True, capture_output=True)

        def run_plain_tidy() -> None:
            subprocess.run([str(go.go), "mod", "tidy"], cwd=plain, env=go_env, check=True, capture_output=True)
            subprocess.run([str(go.go), "mod", "vendor"], cwd=plain, env=go_env, check=True, capture_output=True)

        rows = {
            "reprobuild vendor --check (CLI, end to end)": _timed(run_cli, runs),
            "vendor_module(check=True) (library)": _timed(run_library, runs),
            "go mod vendor (baseline)": _timed(run_plain, runs),
            "go mod tidy && go mod vendor (baseline)": _timed(run_plain_tidy, runs),
        }
    cli_median = statistics.median(rows["reprobuild vendor --check (CLI, end to end)"])
    baseline = statistics.median(rows["go mod vendor (baseline)"])
    result: dict[str, Any] = {
        "runs": runs,
        "go": go.version,
        "target_s": TARGET_S,
        "vendor_check_cli_median_s": round(cli_median, 3),
        "vendor_check_cli_max_s": round(max(rows["reprobuild vendor --check (CLI, end to end)"]), 3),
        "vendor_check_library_median_s": round(statistics.median(rows["vendor_module(check=True) (library)"]), 3),
        "go_mod_vendor_median_s": round(baseline, 3),
        "go_mod_tidy_vendor_median_s": round(statistics.median(rows["go mod tidy && go mod vendor (baseline)"]), 3),
        "ratio_cli_to_go_mod_vendor": round(cli_median / baseline, 1) if baseline else None,
        "meets_target": cli_median <= TARGET_S,
    }
    result["figures"] = figures(result)
    print(f"`vendor --check` on the clean examples/go-service, warm module cache, Go {go.version}, "
          f"{runs} runs after one warm-up (target: <= {TARGET_S:.0f} s)\n")
    print("| what | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")
    print(f"\nmeets the <= {TARGET_S:.0f} s target: {'yes' if result['meets_target'] else 'NO'}")
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The row for BENCHMARKS.md: the target figure against the baseline measured in the same run."""
    ours, base = r["vendor_check_cli_median_s"], r["go_mod_tidy_vendor_median_s"]
    return [
        {"figure": f"`reprobuild vendor --check` (CLI, end to end) on the clean examples/go-service, warm module "
                   f"cache, vs `go mod tidy && go mod vendor` (target <= {r['target_s']:g} s)",
         "ours": f"{ours:.3f} s", "baseline": f"{base:.3f} s (go mod tidy && go mod vendor)",
         "ratio": f"{ours / base:.1f}x" if base else "", "ok": r["meets_target"]},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args().runs)
