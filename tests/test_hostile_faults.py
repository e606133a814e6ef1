"""Issue 15, items 9 and 10: bytes a step prints that are not UTF-8, compressed debug sections that cannot
be searched, REPROBUILD_RETRIES=0, and doctor masking host values."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from reprobuild.backends.local import LocalBackend
from reprobuild.build.orchestrate import BuildOptions, build
from reprobuild.errors import CheckFailed
from reprobuild.formats.elf import ElfError, ElfFile
from tests.conftest import REPO, command_projects, run_cli, url_entry, write_lock
from tests.hostile import tar_archive, tar_member
from tests.httpserver import LocalServer


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPROBUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return tmp_path


def _opts(root: Path, run: str) -> BuildOptions:
    command_projects(root, 1, "u", run=run)
    return BuildOptions(out=root / "out", lock_path=REPO / "toolchains.lock", repo_root=root)


def test_local_backend_survives_output_that_is_not_utf8(isolated: Path) -> None:
    opts = _opts(isolated / "ok", r"printf 'caf\351 \377\376\n' && cp input.txt $OUT/out.txt")
    result = build(opts, backend=LocalBackend(isolated / "scratch"))
    assert [a.path for a in result.artifacts] == ["u01/out.txt"]


def test_failing_step_with_bad_bytes_reports_them_replaced(isolated: Path) -> None:
    opts = _opts(isolated / "bad", r"printf 'oops \377\376 end\n'; exit 4")
    with pytest.raises(CheckFailed) as err:
        build(opts, backend=LocalBackend(isolated / "scratch"))
    assert "oops \ufffd\ufffd end" in str(err.value) and "exit 4" in str(err.value)


# --- compressed debug sections --------------------------------------------------------------------

def _debug_object(tmp_path: Path, compress: str) -> Path:
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        pytest.skip("gcc and objcopy (binutils) are needed to make an object with compressed DWARF")
    src = tmp_path / "secretdir" / "x.c"
    src.parent.mkdir(parents=True)
    src.write_text("int x(void) { return 42; }\n")
    obj = tmp_path / "x.o"
    subprocess.run(["gcc", "-g", "-c", str(src), "-o", str(obj)], check=True, cwd=src.parent)
    done = subprocess.run(["objcopy", f"--compress-debug-sections={compress}", str(obj)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"objcopy cannot write {compress}: {done.stderr.decode(errors='replace')}")
    return obj


def test_zstd_debug_sections_are_searched_decompressed(tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("the zstd tool (Debian package zstd) reads zstd sections")
    obj = _debug_object(tmp_path, "zstd")
    elf = ElfFile.open(obj)
    assert any(s.compressed for s in elf.sections)
    places = elf.find(str(tmp_path / "secretdir").encode())
    assert places and all(p.startswith(".debug") for p in places), places


def test_a_zstd_bomb_is_cut_off_at_the_declared_size(tmp_path: Path) -> None:
    """A zstd section that decompresses to far more than it declares: read through pipes, the decompressor is
    killed past the declared size (no memory or disk filled, no temporary files), and the search fails."""
    import tempfile

    from reprobuild import proc

    if shutil.which("zstd") is None:
        pytest.skip("the zstd tool (Debian package zstd) reads zstd sections")
    bomb = subprocess.run(["zstd", "-q", "-3", "-c"], input=bytes(256 << 20), capture_output=True,
                          check=True).stdout
    assert len(bomb) < 64 << 10
    before = set(Path(tempfile.gettempdir()).glob("reprobuild-zstd-*"))
    done = proc.filter_bytes(["zstd", "-q", "-d", "-c"], bomb, 1 << 20)
    assert len(done.stdout) == (1 << 20) + 1 and done.returncode != 0
    obj = _debug_object(tmp_path, "zstd")
    data = bytearray(obj.read_bytes())
    section = next(s for s in ElfFile.open(obj).sections if s.compressed)
    struct.pack_into("<Q", data, section.offset + 8, 16)  # ch_size: declared 16 bytes, far less than it holds
    obj.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="declared 16 bytes"):
        ElfFile.open(obj).find(b"secretdir")
    assert set(Path(tempfile.gettempdir()).glob("reprobuild-zstd-*")) == before


def test_oversized_compressed_section_fails_the_search(tmp_path: Path) -> None:
    obj = _debug_object(tmp_path, "zlib")
    data = bytearray(obj.read_bytes())
    elf = ElfFile.open(obj)
    section = next(s for s in elf.sections if s.compressed)
    struct.pack_into("<Q", data, section.offset + 8, 300 << 20)  # ch_size: declared 300 MiB
    obj.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="more than"):
        ElfFile.open(obj).find(b"secretdir")


# --- retries ---------------------------------------------------------------------------------------

def test_retries_zero_still_makes_one_attempt(tmp_path: Path, cache_dir: Path, server: LocalServer) -> None:
    body = tar_archive([(tar_member("go/VERSION", b"go1.21.13"), b"go1.21.13")], compression="gz")
    route = server.add("/dl/go.tar.gz", body=body)
    lock = write_lock(tmp_path / "toolchains.lock", {"go": url_entry(
        "go", "go.tar.gz", hashlib.sha256(body).hexdigest(), len(body), [server.url("/dl/go.tar.gz")])})
    done = run_cli("toolchain", "fetch", "--lock", str(lock), env={"REPROBUILD_RETRIES": "0"})
    assert done.returncode == 0, done.stderr
    assert route.hits == 1


# --- doctor ----------------------------------------------------------------------------------------

SECRET = "-ldflags=-X=main.token=hunter2-SECRET"


def test_doctor_masks_goflags_and_cgo_values(tmp_path: Path) -> None:
    env = {"GOFLAGS": SECRET, "CGO_CFLAGS": "-I/home/alice/SECRET-include", "CGO_ENABLED": "1",
           "REPROBUILD_OFFLINE": "1"}  # no source asked beyond 127.0.0.1
    text = run_cli("doctor", env=env, timeout=120)
    js = run_cli("doctor", "--json", env=env, timeout=120)
    for done in (text, js):
        out = done.stdout + done.stderr
        assert "SECRET" not in out and "hunter2" not in out, out
        assert "GOFLAGS" in out and "CGO_CFLAGS" in out
    json.loads(js.stdout)
