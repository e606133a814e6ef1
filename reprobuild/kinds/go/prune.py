"""What `go mod vendor` kept of each module, measured against the module zips in the module cache, and
warnings when it dropped C sources, headers or objects a kept cgo package needs."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from reprobuild.kinds.go.gomod import VendoredModule, read_modules_txt
from reprobuild.kinds.go.goproxy import escape_path

# Files a cgo or assembly package may need besides its .go files.
C_LIKE = frozenset({".c", ".h", ".s", ".S", ".sx", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".m",
                    ".f", ".F", ".for", ".f90", ".syso", ".swig", ".swigcxx", ".a", ".so", ".inc"})
# Go stops vendoring dependencies' go.mod and go.sum once the main module says go 1.17 or later.
_MODULE_FILES = frozenset({"go.mod", "go.sum"})


@dataclass(frozen=True)
class ModulePruning:
    """What vendoring kept of one module, measured against its module zip."""

    path: str
    version: str
    packages: tuple[str, ...]
    files_in_zip: int
    bytes_in_zip: int
    files_kept: int
    bytes_kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> files

    @property
    def files_dropped(self) -> int:
        return self.files_in_zip - self.files_kept

    @property
    def bytes_saved(self) -> int:
        return self.bytes_in_zip - self.bytes_kept


def cached_zip(modcache: Path, module: str, version: str) -> Path:
    return modcache / "cache" / "download" / escape_path(module) / "@v" / f"{escape_path(version)}.zip"


def _zip_files(zpath: Path, prefix: str) -> dict[str, int]:
    """File name (relative to the module root) -> size, from a module zip."""
    with zipfile.ZipFile(zpath) as zf:
        return {i.filename[len(prefix):]: i.file_size for i in zf.infolist()
                if i.filename.startswith(prefix) and not i.is_dir()}


def _drop_reason(rel: str, kept_dirs: set[str]) -> str:
    parts = PurePosixPath(rel).parts
    if "testdata" in parts[:-1]:
        return "testdata"
    if rel.endswith("_test.go"):
        return "tests"
    if parts[-1] in _MODULE_FILES:
        return "go.mod/go.sum"
    if str(PurePosixPath(rel).parent) in kept_dirs:
        return "build-ignored"
    return "unused packages" if rel.endswith(".go") else "unused directories"


def prune_report(modcache: Path, vendor_dir: Path) -> tuple[list[ModulePruning], list[str]]:
    """Pruning numbers per vendored module, and warnings about non-Go files vendoring dropped."""
    pruning: list[ModulePruning] = []
    warnings: list[str] = []
    for vm in read_modules_txt(vendor_dir / "modules.txt"):
        if not vm.packages:
            continue  # listed for its go.mod only; nothing of it is vendored
        if not vm.source_version:
            pruning.append(ModulePruning(vm.path, vm.version, vm.packages, 0, 0, 0, 0))
            continue  # a directory replacement: no module zip to compare with
        zpath = cached_zip(modcache, vm.source_path, vm.source_version)
        if not zpath.is_file():
            pruning.append(ModulePruning(vm.path, vm.version, vm.packages, 0, 0, 0, 0))
            warnings.append(f"{vm.path} {vm.version}: no module zip in the cache to measure pruning against")
            continue
        files = _zip_files(zpath, f"{vm.source_path}@{vm.source_version}/")
        vroot = vendor_dir / vm.path
        kept_dirs = {str(PurePosixPath(p[len(vm.path):].lstrip("/") or ".")) for p in vm.packages}
        kept: dict[str, int] = {}
        dropped: dict[str, str] = {}
        for rel, size in files.items():
            if (vroot / rel).is_file():
                kept[rel] = size
            else:
                dropped[rel] = _drop_reason(rel, kept_dirs)
        reasons: dict[str, int] = {}
        for reason in dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        pruning.append(ModulePruning(vm.path, vm.version, vm.packages, len(files), sum(files.values()),
                                     len(kept), sum(kept.values()), reasons))
        warnings.extend(_dropped_needed_files(vm, vroot, kept_dirs, sorted(dropped)))
    return pruning, warnings


_SRCDIR = re.compile(r"\$\{SRCDIR\}/?([^\s\"'`]*)")
_INCLUDE = re.compile(r'^\s*(?://)?\s*#\s*include\s+"([^"]+)"', re.MULTILINE)  # in a preamble or a C file


def _dropped_needed_files(vm: VendoredModule, vroot: Path, kept_dirs: set[str], dropped: list[str]) -> list[str]:
    """Warnings for C sources, headers, assembly or objects that vendoring left out but a kept package needs.

    `go mod vendor` copies only the directories of imported packages; a cgo package whose directives point
    elsewhere in its module (`-I${SRCDIR}/../include`, `#include "../csrc/x.h"`) then fails to build from
    vendor/. A file left out of a kept package's own directory is reported too.
    """
    candidates = [r for r in dropped if PurePosixPath(r).suffix in C_LIKE
                  and "testdata" not in PurePosixPath(r).parts]
    in_pkg_dir = [r for r in dropped if str(PurePosixPath(r).parent) in kept_dirs and not r.endswith(".go")
                  and PurePosixPath(r).name not in _MODULE_FILES and "testdata" not in PurePosixPath(r).parts]
    out: list[str] = []
    if in_pkg_dir:
        out.append(f"{vm.path} {vm.version}: vendor/ lacks {', '.join(in_pkg_dir)}, which sit in the directory of a "
                   "kept package")
    candidates = [c for c in candidates if c not in in_pkg_dir]
    if not candidates:
        return out
    referenced: dict[str, str] = {}  # dropped file -> the package that points at it
    cgo_pkgs: list[str] = []
    for pkg in vm.packages:
        rel_pkg = pkg[len(vm.path):].lstrip("/") or "."
        pdir = vroot / rel_pkg
        texts = [p.read_text(errors="replace") for p in sorted(pdir.glob("*.go"))]
        texts += [p.read_text(errors="replace") for p in sorted(pdir.glob("*")) if p.suffix in {".c", ".h", ".cc"}]
        if not any('import "C"' in t for t in texts):
            continue
        cgo_pkgs.append(pkg)
        dirs = [PurePosixPath(rel_pkg)]
        for t in texts:
            for m in _SRCDIR.finditer(t):
                dirs.append(_norm(PurePosixPath(rel_pkg) / m.group(1)))
        for t in texts:
            for inc in _INCLUDE.findall(t):
                for d in dirs:
                    target = str(_norm(d / inc))
                    if target in candidates:
                        referenced.setdefault(target, pkg)
        for c in candidates:
            if any(str(d) != rel_pkg and _under(c, d) for d in dirs[1:]):
                referenced.setdefault(c, pkg)
    for pkg in sorted(set(referenced.values())):
        files = [f for f, p in referenced.items() if p == pkg]
        out.append(f"{vm.path} {vm.version}: `go mod vendor` dropped {', '.join(sorted(files))}, which cgo package "
                   f"{pkg} needs (its #cgo directives or #include lines point there); Go copies only the directories "
                   "of imported packages, so building from vendor/ will fail. Ask upstream to move them into the "
                   "package directory, or vendor a patched copy through a `replace` directive")
    rest = [c for c in candidates if c not in referenced]
    if rest and cgo_pkgs:
        out.append(f"{vm.path} {vm.version}: `go mod vendor` dropped C sources or headers ({', '.join(rest[:8])}"
                   f"{', ...' if len(rest) > 8 else ''}) from a module whose cgo package(s) {', '.join(cgo_pkgs)} "
                   "are kept; check that they are not needed")
    return out


def _under(rel: str, d: PurePosixPath) -> bool:
    return str(d) == "." or rel.startswith(f"{d}/")


def _norm(p: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")
