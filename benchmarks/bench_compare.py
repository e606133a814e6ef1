"""Benchmark of `reprobuild compare` on two differing ~10 MB Go binaries, against diffoscope in the same run.

    python benchmarks/bench_compare.py [--runs N] [--no-diffoscope] [--no-install] [--json]

The pair: the standard-library HTTP server of tests/data/compare-gohttp built with the go-registry
toolchain with and without `-trimpath` (about 10.7 MB each), each put in an output dir (SHA256SUMS and
manifest.json). Measured:

(a) `reprobuild compare A B`, the whole CLI process: median wall time of N runs (target <= 2 s) and the
    size of its text output (target <= 4 KB); the `--json` report's size too;
(b) diffoscope on the same pair of files (`diffoscope --text -`): wall time, output size, peak memory.
    When diffoscope is missing and apt-get is present, `diffoscope-minimal` is installed first (Debian
    package; `--no-install` to skip). Only this benchmark does that; the tests never need diffoscope.

`main()` returns the figures as a dict and prints a Markdown table. Nothing touches the network except
that optional apt-get: the Go builds run with GOPROXY=off.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
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

from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache  # noqa: E402

TIME_TARGET_S = 2.0
SIZE_TARGET_BYTES = 4096
SERVER = REPO / "tests" / "data" / "compare-gohttp"
DIFFOSCOPE_TIMEOUT_S = 900


def build_pair(work: Path) -> tuple[Path, Path]:
    """The server built with and without -trimpath (a persistent GOCACHE: it never changes output bytes)."""
    go = ToolchainCache().ensure(load_lock(REPO / "toolchains.lock").toolchain("go-registry")).go
    data = Path(os.environ.get("REPROBUILD_TEST_DATA", Path.home() / ".cache" / "reprobuild-tests"))
    env = {"PATH": f"{go.parent}:/usr/bin:/bin", "HOME": str(work), "GOCACHE": str(data / "gocache-compare"),
           "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off",
           "GOSUMDB": "off", "CGO_ENABLED": "0"}
    src = work / "src"
    shutil.copytree(SERVER, src)
    outs = []
    for side, flags in (("A", ["-buildvcs=false"]), ("B", ["-buildvcs=false", "-trimpath"])):
        out_dir = work / side
        binary = out_dir / "go-service" / "server"
        binary.parent.mkdir(parents=True)
        subprocess.run([str(go), "build", *flags, "-o", str(binary), "."], cwd=src, env=env, check=True,
                       capture_output=True, timeout=1800)
        write_output_files(out_dir, ["go-service/server"])
        outs.append(out_dir)
    return outs[0], outs[1]


def write_output_files(root: Path, paths: list[str]) -> None:
    artifacts = []
    for rel in sorted(paths):
        data = (root / rel).read_bytes()
        artifacts.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "mode": f"{(root / rel).stat().st_mode & 0o7777:04o}"})
    (root / "SHA256SUMS").write_text("".join(f"{a['sha256']}  {a['path']}\n" for a in artifacts))
    (root / "manifest.json").write_text(json.dumps({"artifacts": artifacts, "toolchains": {}, "backend": "local",
                                                    "hermetic": False}, indent=2, sort_keys=True))


def run_compare(a: Path, b: Path, *extra: str) -> tuple[float, bytes, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reprobuild", "compare", str(a), str(b), *extra], cwd=REPO,
                          capture_output=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 1:
        raise SystemExit(f"compare exited {done.returncode}, expected 1:\n{done.stderr.decode()}")
    return elapsed, done.stdout, done.returncode


def ensure_diffoscope(install: bool) -> str | None:
    found = shutil.which("diffoscope")
    if found or not install or shutil.which("apt-get") is None:
        return found
    print("bench: installing diffoscope-minimal with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "diffoscope-minimal"], check=False, capture_output=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    return shutil.which("diffoscope")


def run_diffoscope(exe: str, a: Path, b: Path, work: Path) -> dict[str, Any]:
    report = work / "diffoscope.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    with open(report, "wb") as out:
        try:
            done = subprocess.run([exe, "--no-progress", "--text", "-", str(a), str(b)], stdout=out,
                                  stderr=subprocess.PIPE, timeout=DIFFOSCOPE_TIMEOUT_S)
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {DIFFOSCOPE_TIMEOUT_S} s"
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"diffoscope_s": round(elapsed, 2), "diffoscope_bytes": report.stat().st_size,
            "diffoscope_peak_rss_mb": round(peak / 1024) if peak > before else None, "diffoscope_exit": code}


def main(runs: int = 5, diffoscope: bool = True, install: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        work = Path(tmp)
        a, b = build_pair(work)
        size_a = (a / "go-service" / "server").stat().st_size
        size_b = (b / "go-service" / "server").stat().st_size
        run_compare(a, b)  # warm the page cache and Python's bytecode cache, as a user's second run would
        times = []
        text = b""
        for _ in range(runs):
            elapsed, text, _ = run_compare(a, b)
            times.append(elapsed)
        _, report_json, _ = run_compare(a, b, "--json")
        kinds = json.loads(report_json)["kinds"]
        result: dict[str, Any] = {
            "binary_bytes": [size_a, size_b], "compare_s": round(statistics.median(times), 3),
            "compare_s_max": round(max(times), 3), "compare_text_bytes": len(text),
            "compare_json_bytes": len(report_json), "kinds": kinds,
            "time_target_met": statistics.median(times) <= TIME_TARGET_S,
            "size_target_met": len(text) <= SIZE_TARGET_BYTES,
        }
        exe = ensure_diffoscope(install) if diffoscope else None
        if exe:
            result.update(run_diffoscope(exe, a / "go-service" / "server", b / "go-service" / "server", work))
        else:
            result["diffoscope_s"] = None
    result["figures"] = figures(result)
    print(table(result))
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows for BENCHMARKS.md: each target figure against diffoscope on the same pair, in the same run."""
    pair = f"two differing Go binaries ({r['binary_bytes'][0] / 1e6:.1f} / {r['binary_bytes'][1] / 1e6:.1f} MB)"
    ours_s, ours_b = r["compare_s"], r["compare_text_bytes"]
    if r.get("diffoscope_s") is None:
        base_s = base_b = "not measured (diffoscope not installed)"
        ratio_s = ratio_b = ""
    else:
        code = r["diffoscope_exit"]
        timed_out = isinstance(code, str)
        at_least = ">= " if timed_out else ""
        note = "" if code == 1 else f", {code}" if timed_out else f", exit {code}"  # 1: differences found
        base_s = f"{r['diffoscope_s']:.1f} s (diffoscope --text{note})"
        base_b = f"{r['diffoscope_bytes'] / 1e6:.1f} MB (diffoscope --text{note})"
        ratio_s = f"{at_least}{r['diffoscope_s'] / ours_s:.0f}x faster" if ours_s else ""
        ratio_b = f"{at_least}{r['diffoscope_bytes'] / ours_b:,.0f}x smaller" if ours_b else ""
    return [
        {"figure": f"`reprobuild compare` (whole CLI process) vs diffoscope on {pair}: wall time "
                   f"(target <= {TIME_TARGET_S:g} s)",
         "ours": f"{ours_s:.2f} s", "baseline": base_s, "ratio": ratio_s, "ok": r["time_target_met"]},
        {"figure": f"`reprobuild compare` vs diffoscope on {pair}: text output size "
                   f"(target <= {SIZE_TARGET_BYTES // 1024} KB)",
         "ours": f"{ours_b} B", "baseline": base_b, "ratio": ratio_b, "ok": r["size_target_met"]},
    ]


def table(r: dict[str, Any]) -> str:
    mb = f"{r['binary_bytes'][0] / 1e6:.1f} / {r['binary_bytes'][1] / 1e6:.1f} MB"
    rows = ["| tool | wall time | output | target |", "|---|---|---|---|",
            f"| `reprobuild compare` (median) | {r['compare_s']:.2f} s (max {r['compare_s_max']:.2f} s) | "
            f"{r['compare_text_bytes']} B text, {r['compare_json_bytes']} B JSON | ≤ {TIME_TARGET_S:g} s, "
            f"≤ {SIZE_TARGET_BYTES} B: {'met' if r['time_target_met'] and r['size_target_met'] else 'MISSED'} |"]
    if r.get("diffoscope_s") is not None:
        peak = f", peak {r['diffoscope_peak_rss_mb']} MB" if r.get("diffoscope_peak_rss_mb") else ""
        rows.append(f"| diffoscope --text | {r['diffoscope_s']:.1f} s (exit {r['diffoscope_exit']}) | "
                    f"{r['diffoscope_bytes'] / 1e6:.1f} MB{peak} | — |")
    else:
        rows.append("| diffoscope | not installed | — | — |")
    return "\n".join([f"Go binaries with and without -trimpath ({mb}); causes: {', '.join(r['kinds'])}", "", *rows])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-diffoscope", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install diffoscope-minimal")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ns = parser.parse_args()
    res = main(ns.runs, diffoscope=not ns.no_diffoscope, install=not ns.no_install)
    if ns.json:
        print(json.dumps(res, indent=2))
