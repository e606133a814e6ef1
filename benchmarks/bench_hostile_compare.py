"""Compare on hostile sizes: two 2 GiB sparse files, and a 10 KB tar declaring a 20 GiB (sparse) member.

    python benchmarks/bench_hostile_compare.py

Each case runs `reprobuild compare A B` in a child process and reports its wall time and peak memory
(ru_maxrss of that child), next to `cmp A B` on the same files in the same run (the floor: one
streaming pass in C). Goal (issue 15): under 200 MB and 5 s per case.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hostile import sparse_file, sparse_tar, sums_dir  # noqa: E402


def measure(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak MB, exit code) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, cwd=REPO)
    elapsed = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024, done.returncode


def main() -> dict[str, object]:
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        root = Path(tmp)
        elf = b"\x7fELF\x02\x01\x01"
        a = sparse_file(root / "sparse" / "a" / "big.bin", 2 << 30, elf).parent
        b = sparse_file(root / "sparse" / "b" / "big.bin", 2 << 30, elf, poke=(1_500_000_000, b"X")).parent
        for side in (a, b):  # one claimed digest for both (not hashed here): the bytes must decide
            (side / "SHA256SUMS").write_text("0" * 64 + "  big.bin\n")
        cases = {"two 2 GiB sparse files": (a, b, "big.bin")}
        for side, tail in (("a", b"1"), ("b", b"2")):
            (root / "tar" / side).mkdir(parents=True)
            sparse_tar(root / "tar" / side / "x.tar", 20 << 30, tail)
            sums_dir(root / "tar" / side)
        cases["tar declaring a 20 GiB member"] = (root / "tar" / "a", root / "tar" / "b", "x.tar")
        for label, (x, y, name) in cases.items():
            # The first pass over fresh sparse files fills the page cache with zero pages (slow on a busy
            # machine, whoever reads): `cmp` goes first, cold; compare then runs twice.
            cmp_cold, _, _ = measure(["cmp", str(x / name), str(y / name)])
            runs = [measure([sys.executable, "-m", "reprobuild", "compare", str(x), str(y)]) for _ in range(2)]
            cmp_warm, _, _ = measure(["cmp", str(x / name), str(y / name)])
            secs = min(r[0] for r in runs)
            mb, rc = max(r[1] for r in runs), runs[0][2]
            figures[label] = {"seconds": round(secs, 2), "peak_mb": round(mb, 1), "exit": rc,
                              "cmp_cold_seconds": round(cmp_cold, 2), "cmp_warm_seconds": round(cmp_warm, 2)}
            print(f"| {label} | compare {secs:.2f} s, {mb:.0f} MB, exit {rc} | cmp cold {cmp_cold:.2f} s, "
                  f"warm {cmp_warm:.2f} s | ratio to warm cmp {secs / max(cmp_warm, 0.01):.1f} |")
    return figures


if __name__ == "__main__":
    main()
