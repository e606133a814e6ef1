"""Each comparator on pairs made here (tar, gzip, zip, Paddle programs, text, ELF, raw bytes).

Every pair differs in exactly one way; the test checks that the comparator names that cause kind
and nothing else. Go binaries are built in test_compare.py.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from reprobuild.evidence.comparators import COMPARATORS, KINDS, Cause, comparator_for, elf, explain_files, pdmodel
from reprobuild.formats.elf import ElfFile

# -- helpers -----------------------------------------------------------------------------------------


def kinds(causes: list[Cause]) -> list[str]:
    return [c.kind for c in causes]


def pair(tmp_path: Path, name: str, a: bytes, b: bytes) -> tuple[Path, Path]:
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    pa, pb = tmp_path / "a" / name, tmp_path / "b" / name
    pa.write_bytes(a)
    pb.write_bytes(b)
    return pa, pb


Member = tuple[str, bytes, int, int]  # name, data, mode, mtime


def tar_of(members: list[Member], *, uid: int = 0, uname: str = "root") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode, mtime in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            info.uid, info.gid, info.uname, info.gname = uid, uid, uname, uname
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_of(data: bytes, *, mtime: int = 0, name: str = "") -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, fileobj=buf, mode="wb", mtime=mtime) as gz:
        gz.write(data)
    return buf.getvalue()


def zip_of(members: list[tuple[str, bytes, tuple[int, int, int, int, int, int], int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, date_time, mode in members:
            info = zipfile.ZipInfo(name, date_time)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


FILES: list[Member] = [("pkg/a.txt", b"alpha\n", 0o644, 1_700_000_000), ("pkg/bin/run", b"#!/bin/sh\necho\n", 0o755,
                                                                          1_700_000_000),
                       ("pkg/z.txt", b"zulu\n", 0o644, 1_700_000_000)]


# -- the table ---------------------------------------------------------------------------------------

def test_every_module_in_the_table_has_the_interface() -> None:
    assert COMPARATORS[-1].__name__.endswith(".fallback")  # type: ignore[attr-defined]
    for module in COMPARATORS:
        assert callable(module.recognizes) and callable(module.explain)


def test_identical_files_have_no_causes(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "x.bin", b"same", b"same")
    assert explain_files(a, b) == []


# -- tar ---------------------------------------------------------------------------------------------

def test_tar_only_mtime(tmp_path: Path) -> None:
    later = [(n, d, m, t + 3600) for n, d, m, t in FILES]
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(later))
    causes = explain_files(a, b)
    assert kinds(causes) == ["timestamp"]
    assert "3 of 3" in causes[0].detail and "2023-11-14T22:13:20Z" in causes[0].detail


def test_tar_gz_only_mtime_inside(tmp_path: Path) -> None:
    later = [(n, d, m, t + 1) for n, d, m, t in FILES]
    a, b = pair(tmp_path, "out.tar.gz", gzip_of(tar_of(FILES)), gzip_of(tar_of(later)))
    assert kinds(explain_files(a, b)) == ["timestamp"]


def test_tar_only_order(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(list(reversed(FILES))))
    causes = explain_files(a, b)
    assert kinds(causes) == ["entry-order"]
    assert "position 0" in causes[0].detail and "pkg/a.txt" in causes[0].detail


def test_tar_only_modes(tmp_path: Path) -> None:
    umask_077 = [(n, d, m & 0o700, t) for n, d, m, t in FILES]
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(umask_077))
    causes = explain_files(a, b)
    assert kinds(causes) == ["file-mode"]
    assert "pkg/a.txt' 0644 (A) vs 0600 (B)" in causes[0].detail


def test_tar_only_owner(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(FILES, uid=1000, uname="builder"))
    causes = explain_files(a, b)
    assert kinds(causes) == ["owner"]
    assert "0:0 root:root (A) vs 1000:1000 builder:builder (B)" in causes[0].detail


def test_tar_recurses_into_a_differing_member(tmp_path: Path) -> None:
    changed = [("pkg/a.txt", b"alpha\nbuilt 2026-11-22T04:00:00Z\n", 0o644, 1_700_000_000), *FILES[1:]]
    later = [("pkg/a.txt", b"alpha\nbuilt 2026-11-22T05:30:00Z\n", 0o644, 1_700_000_000), *FILES[1:]]
    a, b = pair(tmp_path, "out.tar", tar_of(changed), tar_of(later))
    causes = explain_files(a, b)
    assert kinds(causes) == ["timestamp"]
    assert causes[0].detail.startswith("pkg/a.txt: ")
    assert "-built 2026-11-22T04:00:00Z" in causes[0].detail


def test_tar_missing_entries(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(FILES[:2]))
    causes = explain_files(a, b)
    assert kinds(causes) == ["missing"]
    assert "only in A: 'pkg/z.txt'" in causes[0].detail


# -- gzip --------------------------------------------------------------------------------------------

def test_gzip_only_header_mtime(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "notes.txt.gz", gzip_of(b"hello\n", mtime=0), gzip_of(b"hello\n", mtime=1_700_000_000))
    causes = explain_files(a, b)
    assert kinds(causes) == ["timestamp"]
    assert "gzip header mtime 0 (unset) (A) vs 1700000000 (2023-11-14T22:13:20Z) (B)" in causes[0].detail


def test_gzip_header_name(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "n.gz", gzip_of(b"x", name="tmpa1b2c3"), gzip_of(b"x", name="tmpz9y8x7"))
    causes = explain_files(a, b)
    assert kinds(causes) == ["timestamp"]
    assert "file name 'tmpa1b2c3' (A) vs 'tmpz9y8x7' (B)" in causes[0].detail


def test_gzip_compression_level_only(tmp_path: Path) -> None:
    data = b"the quick brown fox " * 2000
    a, b = pair(tmp_path, "d.gz", gzip.compress(data, 1, mtime=0), gzip.compress(data, 9, mtime=0))
    causes = explain_files(a, b)
    assert kinds(causes) == ["content"]
    assert causes[0].detail == "gzip header compression flags (XFL) 4 (A) vs 2 (B)"


def test_gzip_same_data_other_stream(tmp_path: Path) -> None:
    data = b"".join(b"%d %x fox\n" % (i * i % 9973, i * 7919 % 65521) for i in range(20000))
    a, b = pair(tmp_path, "d.gz", gzip.compress(data, 3, mtime=0), gzip.compress(data, 8, mtime=0))
    [cause] = explain_files(a, b)
    assert cause.kind == "content" and "same decompressed data" in cause.detail


# -- zip ---------------------------------------------------------------------------------------------

ZIP_TIME = (2020, 1, 1, 0, 0, 0)
ZIP_FILES = [("demo/__init__.py", b"", ZIP_TIME, 0o644), ("demo/core.py", b"x = 1\n", ZIP_TIME, 0o644),
             ("demo-1.0.dist-info/RECORD", b"demo/core.py,,\n", ZIP_TIME, 0o644)]


def test_zip_only_order(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "demo-1.0-py3-none-any.whl", zip_of(ZIP_FILES), zip_of(list(reversed(ZIP_FILES))))
    causes = explain_files(a, b)
    assert kinds(causes) == ["entry-order"]
    assert "'demo/__init__.py' (A) vs 'demo-1.0.dist-info/RECORD' (B)" in causes[0].detail


def test_zip_only_date_time(tmp_path: Path) -> None:
    newer = [(n, d, (2026, 11, 22, 4, 0, 0), m) for n, d, _, m in ZIP_FILES]
    a, b = pair(tmp_path, "x.zip", zip_of(ZIP_FILES), zip_of(newer))
    causes = explain_files(a, b)
    assert kinds(causes) == ["timestamp"]
    assert "2020-01-01T00:00:00 (A) vs 2026-11-22T04:00:00 (B)" in causes[0].detail


def test_zip_only_modes_and_member_content(tmp_path: Path) -> None:
    changed = [(n, d, t, 0o600) for n, d, t, _ in ZIP_FILES]
    changed[1] = ("demo/core.py", b"x = 2\n", ZIP_TIME, 0o600)
    a, b = pair(tmp_path, "x.zip", zip_of(ZIP_FILES), zip_of(changed))
    causes = explain_files(a, b)
    assert kinds(causes) == ["file-mode", "content"]
    assert causes[1].detail.startswith("demo/core.py: ") and "-x = 1" in causes[1].detail


# -- Paddle programs ---------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32s are ten-byte two's complement on the wire
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


ATTR_INT, ATTR_STRINGS = 0, 5


def program(callstack: list[str], col: int = 0) -> bytes:
    """A ProgramDesc with one block: a `feed` var, a `feed` op carrying op_callstack, and a `scale` op."""
    callstack_attr = _len(1, "op_callstack") + _int(2, ATTR_STRINGS) + b"".join(_len(8, s) for s in callstack)
    col_attr = _len(1, "col") + _int(2, ATTR_INT) + _int(3, col)
    feed = (_len(1, _len(1, "X") + _len(2, "feed")) + _len(2, _len(1, "Out") + _len(2, "x")) + _len(3, "feed")
            + _len(4, callstack_attr) + _len(4, col_attr))
    scale = (_len(1, _len(1, "X") + _len(2, "x")) + _len(2, _len(1, "Out") + _len(2, "y")) + _len(3, "scale")
             + _len(4, _len(1, "scale") + _int(2, 1) + b"\x25\x00\x00\x80\x3f"))
    block = _int(1, 0) + _int(2, -1) + _len(3, _len(1, "feed")) + _len(3, _len(1, "x")) + _len(4, feed) + _len(4, scale)
    return _len(1, block) + _len(4, _int(1, 0))


def frames(root: str) -> list[str]:
    return [f'  File "{root}/export.py", line 12, in <module>\n    paddle.jit.save(net, "model")',
            '  File "/venv/lib/python3.11/site-packages/paddle/jit/api.py", line 900, in save']


def test_pdmodel_decoder_reads_the_program() -> None:
    prog = pdmodel.parse_program(program(frames("/home/a")))
    [block] = prog.blocks
    assert [op.type for op in block.ops] == ["feed", "scale"]
    assert set(block.vars) == {"feed", "x"}
    assert set(block.ops[0].attrs) == {"op_callstack", "col"}


def test_pdmodel_only_op_callstack(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "model.pdmodel", program(frames("/home/a")), program(frames("/srv/build")))
    causes = explain_files(a, b)
    assert kinds(causes) == ["paddle-op-callstack"]
    assert "1 of 2 ops (#0 feed)" in causes[0].detail
    assert "/home/a/export.py" in causes[0].detail and "/srv/build/export.py" in causes[0].detail


def test_pdmodel_other_attribute(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "model.pdmodel", program(frames("/x"), col=0), program(frames("/x"), col=1))
    causes = explain_files(a, b)
    assert kinds(causes) == ["content"]
    assert "block 0 op #0 (feed): attr col 0 (A) vs 1 (B)" in causes[0].detail


def test_pdmodel_garbage_is_reported_not_raised(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "model.pdmodel", b"\x0f\xff\xff", b"\x0a\x05ab")
    causes = explain_files(a, b)
    assert kinds(causes) == ["content"] and "not a readable ProgramDesc" in causes[0].detail


# -- text and JSON -----------------------------------------------------------------------------------

def test_text_diff_is_short_and_classified(tmp_path: Path) -> None:
    body = [f"line {i}" for i in range(1000)]
    a_text = "\n".join([*body[:500], "date: Sun Nov 22 04:06:57 UTC 2026", *body[500:]])
    b_text = "\n".join([*body[:500], "date: Mon Nov 23 11:00:01 UTC 2026", *body[500:]])
    a, b = pair(tmp_path, "stamp.txt", a_text.encode(), b_text.encode())
    [cause] = explain_files(a, b)
    assert cause.kind == "timestamp"
    assert cause.detail.splitlines() == ["@@ -499,5 +499,5 @@", " line 498", " line 499",
                                         "-date: Sun Nov 22 04:06:57 UTC 2026", "+date: Mon Nov 23 11:00:01 UTC 2026",
                                         " line 500", " line 501"]


def test_text_path_and_content_kinds(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "pwd.txt", b"cwd=/tmp/build-1/src\n", b"cwd=/var/tmp/other/src\n")
    assert kinds(explain_files(a, b)) == ["embedded-path"]
    a, b = pair(tmp_path, "words.txt", b"apple\nBanana\n", b"Banana\napple\n")
    assert kinds(explain_files(a, b)) == ["content"]


def test_text_diff_is_capped(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "big.txt", "".join(f"a{i}\n" for i in range(5000)).encode(),
                "".join(f"b{i}\n" for i in range(5000)).encode())
    [cause] = explain_files(a, b)
    assert len(cause.detail.splitlines()) <= 31 and len(cause.detail) <= 3000


def test_json_same_data_other_key_order(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "m.json", json.dumps({"a": 1, "b": 2}).encode(), json.dumps({"b": 2, "a": 1}).encode())
    [cause] = explain_files(a, b)
    assert cause.kind == "content" and "same JSON data" in cause.detail


# -- ELF and raw bytes -------------------------------------------------------------------------------

def test_gnu_build_id_only(tmp_path: Path) -> None:
    system = Path("/bin/true")
    data = system.read_bytes()
    parsed = ElfFile(data)
    note = parsed.section(".note.gnu.build-id")
    if note is None:
        pytest.skip("/bin/true has no GNU build ID here")
    # Flip the last byte of the build ID (the note's descriptor ends the section).
    end = note.offset + note.size - 1
    changed = data[:end] + bytes([data[end] ^ 0xFF]) + data[end + 1:]
    a, b = pair(tmp_path, "true", data, changed)
    causes = explain_files(a, b)
    assert kinds(causes) == ["gnu-build-id"]
    assert "GNU build ID" in causes[0].detail


def test_elf_other_section_change_lists_sections(tmp_path: Path) -> None:
    data = Path("/bin/true").read_bytes()
    rodata = ElfFile(data).section(".rodata")
    assert rodata is not None
    pos = rodata.offset + 1
    changed = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
    a, b = pair(tmp_path, "true", data, changed)
    causes = explain_files(a, b)
    assert kinds(causes) == ["content"]
    assert causes[0].detail == "1 section differ: .rodata"


def test_truncated_elf_is_reported_not_raised(tmp_path: Path) -> None:
    data = Path("/bin/true").read_bytes()
    a, b = pair(tmp_path, "true", data, data[:3000])
    causes = explain_files(a, b)
    assert causes and kinds(causes)[0] == "content"
    assert any(f"size {len(data)} (A) vs 3000 (B)" in c.detail for c in causes)


def test_elf_paths_are_grouped() -> None:
    found = elf._paths_in(b"\0/tmp/a/src/x.go\0example.com/m/y.go\0/tmp/a/src/z.go\0")
    assert found == {"/tmp/a/src/x.go", "/tmp/a/src/z.go"}


def test_fallback_offsets(tmp_path: Path) -> None:
    base = bytes(range(256)) * 400
    changed = bytearray(base)
    changed[70000] ^= 1
    a, b = pair(tmp_path, "blob.bin", base + b"\0", bytes(changed) + b"\0")
    assert comparator_for(a, b).__name__.endswith("fallback")  # type: ignore[attr-defined]
    [cause] = explain_files(a, b)
    assert cause.kind == "content"
    assert "same size (102401 bytes)" in cause.detail and "at 0x11170: 70 71" in cause.detail


def test_fallback_appended_bytes(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "blob.bin", b"\0\1\2", b"\0\1\2\3\4")
    [cause] = explain_files(a, b)
    assert "prefix of B (2 extra bytes)" in cause.detail


def test_kinds_stay_in_the_contract_vocabulary(tmp_path: Path) -> None:
    a, b = pair(tmp_path, "out.tar", tar_of(FILES), tar_of(list(reversed(FILES))))
    assert set(kinds(explain_files(a, b))) <= set(KINDS)
    shutil.rmtree(tmp_path / "a")
