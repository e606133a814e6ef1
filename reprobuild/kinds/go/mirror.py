"""A module mirror for air-gapped runners: what modules need, copied from the module cache into a
file-based GOPROXY directory (`GOPROXY=file://DIR`), byte for byte as the proxy served it."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reprobuild.errors import BadInput
from reprobuild.formats.jsonstream import json_objects
from reprobuild.fsutil import atomic_write_bytes
from reprobuild.kinds.go.goenv import GoSettings, go_environment, run_go, scratch_dir
from reprobuild.kinds.go.goproxy import escape_path, file_url, unescape_path, write_lists


@dataclass(frozen=True)
class MirrorReport:
    dest: Path
    url: str
    zips: tuple[str, ...]  # `module version` of every module whose zip is in the mirror
    go_mods: int  # .mod files in the mirror (the module graph needs more go.mod files than zips)
    bytes: int


def write_module_mirror(module_dirs: Sequence[Path], dest: Path, settings: GoSettings) -> MirrorReport:
    """Copy what the modules need from the module cache into `dest`, a file-based GOPROXY (added to, not replaced).

    For every module in the build list: its .info, .mod and .zip, byte for byte as the proxy served them;
    for every other module of the module graph: its .info and .mod. `GOPROXY=file://<dest>` then serves
    `go mod download`, `go mod tidy` and `go mod vendor` with no network.
    """
    env = go_environment(settings)
    download = settings.modcache / "cache" / "download"
    zips: set[str] = set()
    with scratch_dir("reprobuild-mirror-") as work:
        for i, module_dir in enumerate(module_dirs):
            w = work / str(i)
            w.mkdir()
            for name in ("go.mod", "go.sum"):
                if (module_dir / name).is_file():
                    shutil.copyfile(module_dir / name, w / name)
            if not (w / "go.mod").is_file():
                raise BadInput(f"{module_dir}: no go.mod (a module mirror is made for Go modules)")
            listing = run_go(settings, env, w, "mod", "download", "-json", "all").stdout
            for item in json_objects(listing):
                if item.get("Main") or not item.get("Version"):
                    continue
                vdir = dest / escape_path(item["Path"]) / "@v"
                vdir.mkdir(parents=True, exist_ok=True)
                for key in ("Info", "GoMod", "Zip"):
                    if item.get(key):
                        _copy_if_changed(Path(item[key]), vdir / Path(item[key]).name)
                if item.get("Zip"):
                    zips.add(f"{item['Path']} {item['Version']}")
            graph = run_go(settings, env, w, "mod", "graph").stdout
            for node in sorted({tok for line in graph.splitlines() for tok in line.split()}):
                path, _, version = node.partition("@")
                if not version or path in ("go", "toolchain"):
                    continue
                src = download / escape_path(path) / "@v"
                vdir = dest / escape_path(path) / "@v"
                for suffix in (".info", ".mod"):
                    f = src / f"{escape_path(version)}{suffix}"
                    if f.is_file():
                        vdir.mkdir(parents=True, exist_ok=True)
                        _copy_if_changed(f, vdir / f.name)
    pairs = _mirror_versions(dest)
    write_lists(dest, pairs)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return MirrorReport(dest, file_url(dest), tuple(sorted(zips)), len(pairs), size)


def _copy_if_changed(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if not dst.is_file() or dst.read_bytes() != data:
        atomic_write_bytes(dst, data)


def _mirror_versions(dest: Path) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for vdir in sorted(dest.rglob("@v")):
        path = unescape_path(vdir.parent.relative_to(dest).as_posix())
        for mod in sorted(vdir.glob("*.mod")):
            pairs.append((path, unescape_path(mod.name[: -len(".mod")])))
    return pairs
