"""Issue 15, item 3: compare follows no link out of its inputs, streams big files, and caps its work."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprobuild.evidence.compare import compare_outputs, render_text
from tests.conftest import REPO
from tests.hostile import Link, artifact_record, shard_dir, sparse_file, sparse_tar, sums_dir

SECRET = "TOP-SECRET-HOST-CONTENT\n"


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    return secret


def test_artifact_that_is_a_link_to_a_host_file_is_not_followed(tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    a = shard_dir(tmp_path / "a", {"x.txt": "hello\n"})
    b = shard_dir(tmp_path / "b", {"x.txt": Link(str(secret))}, artifacts=[artifact_record("x.txt", "hello\n")])
    report = compare_outputs(a, b)
    shown = render_text(report) + json.dumps(report.to_json())
    assert not report.identical
    assert "TOP-SECRET" not in shown
    assert "symbolic link" in shown


def test_artifact_under_a_linked_parent_is_not_read(tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    a = shard_dir(tmp_path / "a", {"d/secret.txt": "hello\n"})
    b = shard_dir(tmp_path / "b", {"d": Link(str(secret.parent))},
                  artifacts=[artifact_record("d/secret.txt", "hello\n")])
    report = compare_outputs(a, b)
    shown = render_text(report) + json.dumps(report.to_json())
    assert not report.identical and "TOP-SECRET" not in shown and "not read" in shown


def test_links_recorded_in_both_manifests_compare_by_target(tmp_path: Path) -> None:
    a = shard_dir(tmp_path / "a", {"t.txt": "x", "l": Link("t.txt")})
    b = shard_dir(tmp_path / "b", {"t.txt": "x", "l": Link("t.txt")})
    assert compare_outputs(a, b).identical
    c = shard_dir(tmp_path / "c", {"t.txt": "x", "u.txt": "x", "l": Link("u.txt")})
    report = compare_outputs(a, c)
    [diff] = [d for d in report.differences if d.artifact == "l"]
    assert "'u.txt'" in diff.causes[0].detail


def _measure(a: Path, b: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run the real CLI on A and B: its result, wall seconds and peak memory in MB (this child only).

    The peak is VmHWM, the high-water mark of the child's own address space: getrusage's ru_maxrss would keep
    the peak of the (large) test process it was forked from across exec."""
    code = ("import re, sys\nfrom pathlib import Path\nfrom reprobuild.cli import main\nrc = main(sys.argv[1:])\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', Path('/proc/self/status').read_text())\n"
            "print('MAXRSS', hwm.group(1), file=sys.stderr)\nsys.exit(rc)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, "compare", str(a), str(b)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    elapsed = time.monotonic() - start
    rss_kb = int(done.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return done, elapsed, rss_kb / 1024


@pytest.mark.slow
def test_two_2gib_sparse_files_compare_in_bounded_memory(tmp_path: Path) -> None:
    size = 2 << 30
    elf = b"\x7fELF\x02\x01\x01"
    a = sparse_file(tmp_path / "a" / "big.bin", size, elf).parent
    sparse_file(tmp_path / "b" / "big.bin", size, elf, poke=(1_500_000_000, b"X"))
    for side in ("a", "b"):  # SHA256SUMS claims one digest for both (not hashed here): the bytes must decide
        (tmp_path / side / "SHA256SUMS").write_text("0" * 64 + "  big.bin\n")
    done, elapsed, mb = _measure(a, tmp_path / "b")
    assert done.returncode == 1, done.stderr
    assert "0x59682f00" in done.stdout  # the differing offset, found by streaming
    assert mb < 200, f"compare used {mb:.0f} MB"
    assert elapsed < 60, f"compare took {elapsed:.1f} s"  # 3-5 s on a quiet 2-core machine; CI is shared


def test_tar_declaring_a_20gib_member_is_not_expanded(tmp_path: Path) -> None:
    declared = 20 << 30
    for side, tail in (("a", b"1"), ("b", b"2")):
        (tmp_path / side).mkdir()
        sparse_tar(tmp_path / side / "x.tar", declared, tail)
        sums_dir(tmp_path / side)
    done, elapsed, mb = _measure(tmp_path / "a", tmp_path / "b")
    assert done.returncode == 1, done.stderr
    assert "not compared: too large" in done.stdout
    assert elapsed < 20 and mb < 200, (elapsed, mb)  # 0.4 s here (more than 100 s before)


def test_nested_archives_share_one_budget(tmp_path: Path) -> None:
    from reprobuild.evidence.comparators.base import Budget

    budget = Budget(bytes=10, members=3)
    assert budget.take_bytes(6) and not budget.take_bytes(6) and budget.exhausted
    assert all(budget.take_member() for _ in range(3)) and not budget.take_member()
