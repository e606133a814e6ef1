"""Benchmark of the Go builder against a plain `go build`, measured in the same run.

    python benchmarks/bench_build.py [--runs N] [--pure-go] [--json]

(a) warm rebuild of examples/go-service through the Docker backend (`reprobuild build
    pipelines/go-service.yaml --toolchain go=go-registry --backend docker --no-cache`, end to end through
    the CLI, after one untimed build that warms the images and reprobuild's GOCACHE) vs a plain `go build`
    of the same targets (hello for linux/amd64 and linux/arm64, zpack with cgo) on the host, same Go tree
    (the go-registry toolchain from the cache), same flags (`-mod=vendor -trimpath ...`), warm host GOCACHE:
    target <= 1.3x. For information: the same one unit at a time (`--jobs 1`), and a rebuild of the unchanged tree with
    the defaults (every unit restored from the action cache);
    Also the CPU time of every process on the machine during each warm run (ours: the CLI, the engine, its
    shims and the containers; from /proc/stat): spread over all cores, it is the floor no schedule of the same
    work can beat, given as a ratio to the plain build's wall time;
(b) cold build: reprobuild's Go build cache for the Docker backend (`$REPROBUILD_CACHE/gocache/docker-<key>`)
    removed before each run, toolchain and images kept, vs a plain `go build` with a fresh empty GOCACHE:
    target <= 1.15x.

Medians of N runs (default 3), the two sides interleaved so both see the same machine noise. The plain
builds' binaries are checked against reprobuild's SHA256SUMS. If the cgo target cannot be built on the
host (or with --pure-go), both sides build the pure-Go targets only and the figure names say so.
"""

from __future__ import annotations

import argparse
import hashlib
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

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _bench import figure_table, timed, timed_cpu  # noqa: E402  (benchmarks/ is on sys.path)

from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import Installed, ToolchainCache  # noqa: E402

WARM_TARGET = 1.3
COLD_TARGET = 1.15
PIPELINE = REPO / "pipelines" / "go-service.yaml"

Step = tuple[list[str], dict[str, str], str]  # argv, environment, binary name


def plain_steps(goroot: Path, pipeline_file: Path, out: Path, cache: Path) -> list[Step]:
    """A plain `go build` of every target of the pipeline (read as plain YAML), with the flags it asks for."""
    pipeline = yaml.safe_load(pipeline_file.read_text())
    steps: list[Step] = []
    for t in pipeline["targets"]:
        cgo = bool(t.get("cgo", False))
        fields = {"version": pipeline.get("module_version", "0.0.0"), "pipeline": pipeline["name"],
                  "target": t["name"], "source_date_epoch": pipeline.get("source_date_epoch", 315532800)}
        flags = ["-buildid="] + [f"-X={sym}={str(v).format(**fields)}" for sym, v in t.get("ldflags", {}).items()]
        flags += ["-extldflags=-Wl,--build-id=none"] if cgo and not t.get("keep_gnu_build_id") else []
        for plat in t.get("platforms", ["linux/amd64"]):
            goos, goarch = plat.split("/")
            env = {"PATH": f"{goroot}/bin:/usr/bin:/bin", "HOME": str(cache.parent), "GOTOOLCHAIN": "local",
                   "GOFLAGS": "", "GOPROXY": "off", "GOENV": "off", "GOOS": goos, "GOARCH": goarch,
                   "CGO_ENABLED": "1" if cgo else "0", "GOCACHE": str(cache), "GOPATH": str(cache.parent / "gp"),
                   "TMPDIR": tempfile.gettempdir()}
            env.update({"CC": "gcc", "CGO_CFLAGS": "-O2 -g", "CGO_LDFLAGS": "-O2 -g"} if cgo else {})
            name = f"{t['name']}_{goos}_{goarch}"
            argv = [str(goroot / "bin" / "go"), "build", "-trimpath", "-buildvcs=false", "-mod=vendor"]
            argv += ["-tags", ",".join(t["tags"])] if t.get("tags") else []
            argv += ["-ldflags", " ".join(flags), "-o", str(out / name), t["package"]]
            steps.append((argv, env, name))
    return steps


def plain_build(goroot: Path, pipeline_file: Path, out: Path, cache: Path) -> dict[str, str]:
    """Build every target plainly; returns the binaries' sha256 by name."""
    cache.mkdir(parents=True, exist_ok=True)
    sums = {}
    for argv, env, name in plain_steps(goroot, pipeline_file, out, cache):
        proc = subprocess.run(argv, cwd=REPO / "examples" / "go-service", env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"plain go build of {name} failed: {proc.stderr[-2000:]}")
        sums[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    return sums


def reprobuild_build(pipeline_file: Path, out: Path, *extra: str) -> dict[str, str]:
    """One build through the CLI (`--no-cache` unless `extra` says otherwise); returns SHA256SUMS by file name."""
    argv = [sys.executable, "-m", "reprobuild", "build", str(pipeline_file), "--root", str(REPO), "-q",
            "--toolchain", "go=go-registry", "--backend", "docker", "--out", str(out), *(extra or ("--no-cache",))]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reprobuild build failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    lines = (out / "SHA256SUMS").read_text().splitlines()
    return {path.rsplit("/", 1)[-1]: digest for digest, path in (line.split("  ", 1) for line in lines)}


def pure_go_pipeline(work: Path) -> Path:
    data = yaml.safe_load(PIPELINE.read_text())
    data["targets"] = [t for t in data["targets"] if not t.get("cgo")]
    path = work / "go-service-pure.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(runs: int = 3, pure_go: bool = False) -> dict[str, Any]:
    lock = load_lock(REPO / "toolchains.lock")
    cache = ToolchainCache()
    inst: Installed = cache.ensure(lock.toolchain("go-registry"))  # outside the timings
    rb_gocache = cache.root / "gocache" / f"docker-{inst.key[:16]}"  # where reprobuild keeps its Go build cache
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-build-") as tmp:
        work = Path(tmp)
        pipeline_file, why = PIPELINE, "forced with --pure-go" if pure_go else ""
        host_cache = work / "host" / "gocache"
        if not pure_go:
            try:
                plain_build(inst.root, pipeline_file, work / "plain-warmup", host_cache)
            except RuntimeError as exc:
                why = f"the cgo target does not build on the host: {str(exc)[-200:]}"
        if why:
            pipeline_file = pure_go_pipeline(work)
            plain_build(inst.root, pipeline_file, work / "plain-warmup", host_cache)
        reprobuild_build(pipeline_file, work / "rb-warmup")  # images loaded, reprobuild's GOCACHE warm
        actions = ("--action-cache", str(work / "actions"))
        reprobuild_build(pipeline_file, work / "rb-record", *actions)  # the action cache has every unit
        times: dict[str, list[float]] = {"rb_warm": [], "plain_warm": [], "rb_cold": [], "plain_cold": [],
                                         "rb_serial": [], "rb_unchanged": []}
        sums: dict[str, dict[str, str]] = {}
        cpu: dict[str, list[float]] = {"rb_warm": [], "plain_warm": []}
        for i in range(runs):
            wall, used = timed_cpu(lambda i=i: sums.update(rb=reprobuild_build(pipeline_file, work / f"rw{i}")))
            times["rb_warm"].append(wall)
            cpu["rb_warm"].append(used)
            times["rb_serial"].append(timed(lambda i=i: reprobuild_build(pipeline_file, work / f"rs{i}",
                                                                         "--no-cache", "--jobs", "1")))
            times["rb_unchanged"].append(timed(lambda i=i: sums.update(rb_unchanged=reprobuild_build(
                pipeline_file, work / f"ru{i}", *actions))))
            wall, used = timed_cpu(lambda i=i: sums.update(
                plain=plain_build(inst.root, pipeline_file, work / f"pw{i}", host_cache)))
            times["plain_warm"].append(wall)
            cpu["plain_warm"].append(used)
        for i in range(runs):
            shutil.rmtree(rb_gocache, ignore_errors=True)  # only reprobuild's Go build cache: toolchain, images kept
            times["rb_cold"].append(timed(lambda i=i: sums.update(rb_cold=reprobuild_build(pipeline_file,
                                                                                            work / f"rc{i}"))))
            times["plain_cold"].append(timed(lambda i=i: sums.update(
                plain_cold=plain_build(inst.root, pipeline_file, work / f"pc{i}", work / f"cold{i}" / "gocache"))))
            shutil.rmtree(work / f"cold{i}", ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    identical = all(sums[side].get(name) == digest for name, digest in sums["plain"].items()
                    for side in ("rb", "rb_cold", "rb_unchanged")) and sums["plain"] == sums["plain_cold"]
    result: dict[str, Any] = {
        "runs": runs, "pure_go_only": bool(why), "pure_go_why": why, "targets": sorted(sums["plain"]),
        **{f"{k}_s": round(v, 3) for k, v in med.items()},
        **{f"{k}_runs_s": [round(x, 3) for x in v] for k, v in times.items()},
        "warm_ratio": round(med["rb_warm"] / med["plain_warm"], 2),
        "serial_ratio": round(med["rb_serial"] / med["plain_warm"], 2),
        "unchanged_ratio": round(med["rb_unchanged"] / med["plain_warm"], 2),
        "cold_ratio": round(med["rb_cold"] / med["plain_cold"], 2),
        **{f"{k}_cpu_s": round(statistics.median(v), 3) for k, v in cpu.items()},
        "cores": os.cpu_count() or 1,
        "identical_bytes": identical, "load_before": load_before, "load_after": os.getloadavg()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
    }
    # No schedule can end the rebuild before its CPU time spread over every core: the floor under the ratio.
    result["warm_floor_ratio"] = round(result["rb_warm_cpu_s"] / result["cores"] / med["plain_warm"], 2)
    result["warm_ok"] = result["warm_ratio"] <= WARM_TARGET
    result["cold_ok"] = result["cold_ratio"] <= COLD_TARGET
    result["figures"] = figures(result)
    print(render(result))
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    what = ("go-service, pure-Go targets only (hello amd64+arm64)" if r["pure_go_only"]
            else "go-service (hello amd64+arm64, zpack cgo)")
    return [
        {"figure": f"warm rebuild, {what}, Docker backend vs plain `go build`, warm GOCACHE "
                   f"(target <= {WARM_TARGET}x)",
         "ours": f"{r['rb_warm_s']:.2f} s", "baseline": f"{r['plain_warm_s']:.2f} s (plain go build)",
         "ratio": f"{r['warm_ratio']:.2f}x", "ok": r["warm_ok"]},
        {"figure": f"cold build, {what}, Docker backend vs plain `go build`, empty GOCACHE "
                   f"(target <= {COLD_TARGET}x)",
         "ours": f"{r['rb_cold_s']:.2f} s", "baseline": f"{r['plain_cold_s']:.2f} s (plain go build)",
         "ratio": f"{r['cold_ratio']:.2f}x", "ok": r["cold_ok"]},
        {"figure": f"warm rebuild, {what}, one unit at a time (`--jobs 1 --no-cache`), vs plain `go build` "
                   "(information: what running units at once saves)",
         "ours": f"{r['rb_serial_s']:.2f} s", "baseline": f"{r['plain_warm_s']:.2f} s (plain go build)",
         "ratio": f"{r['serial_ratio']:.2f}x", "ok": None},
        {"figure": f"CPU time of every process (engine, shims, containers included) during the warm rebuild, "
                   f"{what}: ours spread over all {r['cores']} cores vs the plain build's wall time (information: "
                   "the lowest ratio any schedule could reach)",
         "ours": f"{r['rb_warm_cpu_s']:.2f} core-s", "baseline": f"{r['plain_warm_cpu_s']:.2f} core-s "
                 f"(plain go build, {r['plain_warm_s']:.2f} s)", "ratio": f">= {r['warm_floor_ratio']:.2f}x",
         "ok": None},
        {"figure": f"rebuild of an unchanged tree, {what}, defaults (units restored from the action cache, "
                   "hashes checked) vs plain `go build`, warm GOCACHE (information)",
         "ours": f"{r['rb_unchanged_s']:.2f} s", "baseline": f"{r['plain_warm_s']:.2f} s (plain go build)",
         "ratio": f"{r['unchanged_ratio']:.2f}x", "ok": None},
    ]


def render(r: dict[str, Any]) -> str:
    rows = figure_table(r["figures"], f"figure (median of {r['runs']})")
    rows += ["", f"Binaries ({', '.join(r['targets'])}) identical between plain and reprobuild builds, warm and cold: "
             f"{'yes' if r['identical_bytes'] else '**NO**'}."
             + (f" Pure-Go targets only: {r['pure_go_why']}." if r["pure_go_only"] else "")
             + f" Runs (s): {json.dumps({k: v for k, v in r.items() if k.endswith('_runs_s')})}."
             f" Machine: {r['machine']}; load average {r['load_before']:.1f} before, {r['load_after']:.1f} after."]
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pure-go", action="store_true", help="compare the pure-Go targets only")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    res = main(ns.runs, ns.pure_go)
    if ns.json:
        print(json.dumps(res, indent=2))
