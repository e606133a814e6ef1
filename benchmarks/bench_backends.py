"""Benchmark of the Docker backend against the local backend, measured in the same run.

    python benchmarks/bench_backends.py [--runs N] [--json]

(a) container overhead per run: `go version` through the Docker backend (go image) minus the same
    through the local backend (target <= 0.5 s);
(b) warm incremental Go build: one package edited, then rebuilt, with a warm persistent GOCACHE on
    both sides (target: Docker <= 1.5x local); and proof that the cache does not change the output:
    the warm builds' bytes equal a cold build's (fresh cache), and Docker's equal local's;
(c) reuse of a present builder image: `ensure_image` in a fresh backend, image already loaded
    (target <= 0.2 s: no layer is rewritten or hashed).

Figures are medians, Docker and local interleaved so both see the same machine noise. `main()` returns
them as a dict and prints a Markdown table. Needs a Docker engine and the `go-registry` toolchain
(fetched into the reprobuild cache if missing). Nothing touches the network: the builds run offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _bench import timed  # noqa: E402  (benchmarks/ is on sys.path)

from reprobuild.backends import CACHE, OUT, SRC, EnvPolicy, ImageRef, Mount, RunSpec, hermetic_env  # noqa: E402
from reprobuild.backends.docker import DockerBackend  # noqa: E402
from reprobuild.backends.local import LocalBackend  # noqa: E402
from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache, default_cache_root  # noqa: E402

OVERHEAD_TARGET_S = 0.5
WARM_BUILD_TARGET_RATIO = 1.5
REUSE_TARGET_S = 0.2
HELLO = REPO / "tests" / "data" / "hello-go"
BUILD = ("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-o", "/rb/out/hello", ".")


def go_env(gopath: str = "/tmp/gopath") -> dict[str, str]:
    """The environment of BUILD (and `go version`) in a step; bench_sandbox shares it."""
    return hermetic_env(EnvPolicy(source_date_epoch=1700000000, extra={
        "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off", "GOSUMDB": "off", "CGO_ENABLED": "0",
        "GOCACHE": f"{CACHE}/go-build", "GOPATH": gopath, "GOMODCACHE": f"{gopath}/pkg/mod",
        "GOENV": "off"}))


def main(runs: int = 5) -> dict[str, Any]:
    lock = load_lock(REPO / "toolchains.lock")
    cache_root = default_cache_root()
    goroot = ToolchainCache(cache_root).ensure(lock.toolchain("go-registry")).root
    image = ImageRef("go", goroot)
    docker = DockerBackend(lock=lock, cache_root=cache_root, builders_dir=REPO / "builders")
    docker.ensure_image(image)
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    # A private scratch root: the default one is shared (and taken in turns) by every local build on the machine.
    local = LocalBackend(scratch_base=work / "local-scratch")
    backends: dict[str, Any] = {"docker": docker, "local": local}
    try:
        # (a) overhead per run
        version = RunSpec(("go", "version"), image, go_env(), (), workdir="/tmp")
        docker.run(version)  # first container of the session pays for warming the engine's caches
        times: dict[str, list[float]] = {"docker": [], "local": []}
        for _ in range(runs):
            for name, backend in backends.items():
                times[name].append(timed(lambda b=backend: step_ok(b.run(version))))
        overhead = statistics.median(times["docker"]) - statistics.median(times["local"])

        # (b) warm incremental build, persistent GOCACHE per backend
        src = work / "src"
        shutil.copytree(HELLO, src)
        builds: dict[str, list[float]] = {"docker": [], "local": []}
        outputs: dict[str, dict[int, bytes]] = {"docker": {}, "local": {}}
        for name, backend in backends.items():
            (work / name / "cache").mkdir(parents=True)
            build_hello(backend, image, src, work / name / "out-warmup", work / name / "cache")
        for i in range(runs):
            greet = src / "greet" / "greet.go"
            greet.write_text(greet.read_text().replace(f'"hello{i - 1}, "' if i else '"hello, "', f'"hello{i}, "'))
            for name, backend in backends.items():
                out = work / name / f"out{i}"
                builds[name].append(timed(lambda b=backend, o=out, n=name: build_hello(b, image, src, o,
                                                                               work / n / "cache")))
                outputs[name][i] = (out / "hello").read_bytes()
        # A cold build (fresh, empty cache) of the last edit: same bytes as the warm ones.
        cold = {}
        for name, backend in backends.items():
            (work / name / "cold-cache").mkdir()
            build_hello(backend, image, src, work / name / "cold-out", work / name / "cold-cache")
            cold[name] = (work / name / "cold-out" / "hello").read_bytes()
        last = runs - 1
        cache_neutral = cold["docker"] == outputs["docker"][last] and cold["local"] == outputs["local"][last]
        same_bytes = all(outputs["docker"][i] == outputs["local"][i] for i in range(runs))
        warm_docker, warm_local = statistics.median(builds["docker"]), statistics.median(builds["local"])

        # (c) reuse of a present image, in fresh backend objects (no in-memory memo)
        reuse = []
        for _ in range(runs):
            fresh = DockerBackend(lock=lock, cache_root=cache_root, builders_dir=REPO / "builders")
            reuse.append(timed(lambda f=fresh: f.ensure_image(image)))
        reuse_s = statistics.median(reuse)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result: dict[str, Any] = {
        "runs": runs,
        "go_version_docker_s": statistics.median(times["docker"]),
        "go_version_local_s": statistics.median(times["local"]),
        "container_overhead_s": overhead,
        "container_overhead_ok": overhead <= OVERHEAD_TARGET_S,
        "warm_build_docker_s": warm_docker,
        "warm_build_local_s": warm_local,
        "warm_build_ratio": warm_docker / warm_local,
        "warm_build_ok": warm_docker / warm_local <= WARM_BUILD_TARGET_RATIO,
        "gocache_changes_bytes": not cache_neutral,
        "docker_local_identical": same_bytes,
        "image_reuse_s": reuse_s,
        "image_reuse_ok": reuse_s <= REUSE_TARGET_S,
    }
    result["figures"] = figures(result)
    print(table(result))
    return result


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows for BENCHMARKS.md: each target figure against the baseline measured in the same run."""
    docker, local = r["go_version_docker_s"], r["go_version_local_s"]
    return [
        {"figure": f"container overhead per run: `go version`, Docker backend vs local backend "
                   f"(target <= {OVERHEAD_TARGET_S} s more)",
         "ours": f"{docker:.3f} s (docker)", "baseline": f"{local:.3f} s (local)",
         "ratio": f"+{r['container_overhead_s']:.3f} s ({docker / local:.1f}x)", "ok": r["container_overhead_ok"]},
        {"figure": f"warm incremental `go build` (one package edited, warm GOCACHE), Docker backend vs local "
                   f"(target <= {WARM_BUILD_TARGET_RATIO}x)",
         "ours": f"{r['warm_build_docker_s']:.3f} s (docker)", "baseline": f"{r['warm_build_local_s']:.3f} s (local)",
         "ratio": f"{r['warm_build_ratio']:.2f}x", "ok": r["warm_build_ok"]},
        {"figure": f"reuse of a present builder image (`ensure_image`, fresh backend) (target <= {REUSE_TARGET_S} s)",
         "ours": f"{r['image_reuse_s']:.3f} s", "baseline": "none (absolute target)", "ratio": "",
         "ok": r["image_reuse_ok"]},
        {"figure": "warm GOCACHE changes the output bytes, warm builds vs a cold build, both backends (target no)",
         "ours": "yes" if r["gocache_changes_bytes"] else "no", "baseline": "cold build, empty GOCACHE",
         "ratio": "bytes differ" if r["gocache_changes_bytes"] else "identical bytes",
         "ok": not r["gocache_changes_bytes"]},
        {"figure": f"Docker and local backends give identical bytes, {r['runs']} warm builds (target yes)",
         "ours": "yes" if r["docker_local_identical"] else "no", "baseline": "local backend, same builds",
         "ratio": "identical bytes" if r["docker_local_identical"] else "bytes differ",
         "ok": r["docker_local_identical"]},
    ]


def step_ok(result: Any) -> None:
    if result.returncode != 0:
        raise RuntimeError(result.output)


def build_hello(backend: Any, image: ImageRef, src: Path, out: Path, cache: Path,
           env: dict[str, str] | None = None) -> None:
    """BUILD of `src` into `out` as one step of `backend`, with `cache` as the Go build cache."""
    out.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(BUILD, image, env or go_env(), (Mount(src, SRC), Mount(out, OUT, read_only=False),
                                                   Mount(cache, CACHE, read_only=False)))
    step_ok(backend.run(spec))


def table(r: dict[str, Any]) -> str:
    def mark(ok: bool) -> str:
        return "yes" if ok else "**NO**"

    return "\n".join([
        f"| measure (median of {r['runs']}) | docker | local | result | target | met |",
        "|---|---|---|---|---|---|",
        f"| `go version`, per run | {r['go_version_docker_s']:.3f} s | {r['go_version_local_s']:.3f} s | "
        f"overhead {r['container_overhead_s']:.3f} s | <= {OVERHEAD_TARGET_S} s | {mark(r['container_overhead_ok'])} |",
        f"| warm incremental `go build` | {r['warm_build_docker_s']:.3f} s | {r['warm_build_local_s']:.3f} s | "
        f"{r['warm_build_ratio']:.2f}x | <= {WARM_BUILD_TARGET_RATIO}x | {mark(r['warm_build_ok'])} |",
        f"| reuse a present image (`ensure_image`) | {r['image_reuse_s']:.3f} s | - | | <= {REUSE_TARGET_S} s | "
        f"{mark(r['image_reuse_ok'])} |",
        f"| warm GOCACHE changes output bytes | | | {'yes' if r['gocache_changes_bytes'] else 'no'} | no | "
        f"{mark(not r['gocache_changes_bytes'])} |",
        f"| docker and local give identical bytes | | | {'yes' if r['docker_local_identical'] else 'no'} | yes | "
        f"{mark(r['docker_local_identical'])} |",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ns = parser.parse_args()
    res = main(ns.runs)
    if ns.json:
        print(json.dumps(res, indent=2, sort_keys=True))
