"""Benchmark of image assembly for go-service's `hello` (linux/amd64 + linux/arm64), with no engine.

    python benchmarks/bench_image.py [--runs N] [--json]

The two binaries are built once with the go-registry toolchain (GOPROXY=off, -mod=vendor). Measured,
median wall time of N warm runs in this process:

(a) `build.image.assemble`: both layers, configs, manifests, the image index, the layout and the two
    docker-archives (target <= 1 s), warm: the compressed layers come from the layer cache, as in a
    rebuild of unchanged binaries; and cold (empty layer cache: every layer compressed);
(b) baseline: `formats.archives.write_tar_gz` of the same two binaries (the `.tar.gz` packaging every Go
    target already gets), so the ratio says what the image costs over plain archives.

`main()` returns the figures as a dict and prints a Markdown table. No network, no Docker engine.
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

from benchmarks._bench import figure_table  # noqa: E402
from reprobuild.build.image import Base, ImageJob, assemble  # noqa: E402
from reprobuild.config.image import ImageSpec  # noqa: E402
from reprobuild.config.lock import load_lock  # noqa: E402
from reprobuild.formats.archives import write_tar_gz  # noqa: E402
from reprobuild.toolchains.cache import ToolchainCache  # noqa: E402

TARGET_S = 1.0
PLATFORMS = ("linux/amd64", "linux/arm64")
SDE = 315532800


def build_binaries(work: Path) -> list[tuple[str, Path]]:
    go = ToolchainCache().ensure(load_lock(REPO / "toolchains.lock").toolchain("go-registry")).go
    data = Path(os.environ.get("REPROBUILD_TEST_DATA", Path.home() / ".cache" / "reprobuild-tests"))
    src = work / "src"
    shutil.copytree(REPO / "examples" / "go-service", src)
    binaries = []
    for plat in PLATFORMS:
        goos, goarch = plat.split("/")
        out = work / f"hello_{goos}_{goarch}"
        env = {"PATH": f"{go.parent}:/usr/bin:/bin", "HOME": str(work), "GOCACHE": str(data / "gocache-bench-image"),
               "GOPATH": str(work / "gopath"), "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off",
               "GOSUMDB": "off", "CGO_ENABLED": "0", "GOOS": goos, "GOARCH": goarch}
        subprocess.run([str(go), "build", "-trimpath", "-buildvcs=false", "-mod=vendor", "-ldflags=-buildid=",
                        "-o", str(out), "./cmd/hello"], cwd=src, env=env, check=True, capture_output=True)
        binaries.append((plat, out))
    return binaries


def _median(fn: Any, runs: int) -> float:
    fn()  # warm: page cache, imports
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp_s:
        tmp = Path(tmp_s)
        binaries = build_binaries(tmp)
        job = ImageJob("hello", ImageSpec("scratch", None), tuple(binaries), (),
                       tuple((p, Base("scratch", None)) for p in PLATFORMS), "1.0.0", SDE, None, "hello:1.0.0")
        out = tmp / "out"
        out.mkdir()

        def image() -> None:
            assemble(job, out, tmp / "layers")

        def image_cold() -> None:
            shutil.rmtree(tmp / "layers", ignore_errors=True)
            assemble(job, out, tmp / "layers")

        def tar_gz() -> None:
            for plat, binary in binaries:
                write_tar_gz([("hello", binary)], out / f"hello_{plat.replace('/', '_')}.tar.gz", SDE)

        warm, cold, base = _median(image, runs), _median(image_cold, runs), _median(tar_gz, runs)
        size = sum(b.stat().st_size for _, b in binaries)
    what = f"hello x2 platforms ({size / 1e6:.1f} MB of binaries)"
    baseline = f"{base:.3f} s (write_tar_gz of the same binaries)"
    figures = [{"figure": f"image assembly, {what}, warm layer cache, target <= {TARGET_S:.0f} s",
                "ours": f"{warm:.3f} s", "baseline": baseline, "ratio": f"{warm / base:.2f}x", "ok": warm <= TARGET_S},
               {"figure": f"image assembly, {what}, empty layer cache", "ours": f"{cold:.3f} s", "baseline": baseline,
                "ratio": f"{cold / base:.2f}x", "ok": None}]
    print("\n".join(figure_table(figures)))
    return {"figures": figures, "image_warm_s": warm, "image_cold_s": cold, "tar_gz_s": base}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = main(args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
