"""Vendoring and pruning of Go modules: plan in a scratch copy, compare with the tree, then apply.

`vendor_module` copies the module (go.mod, go.sum and its sources; never its vendor/) to a scratch
directory and runs there, with the locked Go and an explicit environment:

    go mod tidy      prunes requirements nothing imports, completes go.sum
    go mod vendor    copies only the packages the build uses into vendor/
    go mod verify    the module cache still holds what go.sum says

The result is then compared with the tree (go.mod, go.sum, vendor/): `check=True` reports the drift
and leaves the tree alone (the way CI catches a forgotten `go mod vendor`); otherwise the changed
files are moved into the tree. Either way the report says what pruning did (modules and packages
kept, files dropped, bytes saved, compared with the module zips) and warns when vendoring dropped C
sources or other non-Go files a kept package seems to need.

`write_module_mirror` copies the modules a module needs from the module cache into a file-based
GOPROXY directory, for runners with no network.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from reprobuild import proc
from reprobuild.config import policy
from reprobuild.errors import BadInput, CheckFailed, CommandFailed
from reprobuild.formats.jsonstream import json_objects
from reprobuild.fsutil import atomic_write_bytes, remove_tree
from reprobuild.kinds.go.goproxy import escape_path, file_url, unescape_path, write_lists
from reprobuild.toolchains.cache import Installed

# Passed through from the caller's environment when set: how a user reaches their proxy and which
# modules are private. Everything else Go reads is set here (GOENV=off: no `go env -w` file either).
PASSTHROUGH = (
    "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOVCS", "GOAUTH", "NETRC",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSH_COMMAND", "SSH_AUTH_SOCK", "TMPDIR",
)
# Files a cgo or assembly package may need besides its .go files.
C_LIKE = frozenset({".c", ".h", ".s", ".S", ".sx", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".m",
                    ".f", ".F", ".for", ".f90", ".syso", ".swig", ".swigcxx", ".a", ".so", ".inc"})
# Go stops vendoring dependencies' go.mod and go.sum once the main module says go 1.17 or later.
_MODULE_FILES = frozenset({"go.mod", "go.sum"})
# How many lines of one file's diff a report shows.
DIFF_LINES = 60
_MISMATCH = re.compile(r"verifying (\S+?)@(\S+?)(/go\.mod)?: checksum mismatch\s*\n\s*downloaded:\s*(\S+)\s*\n"
                       r"\s*go\.sum:\s*(\S+)")
_MALFORMED = re.compile(r"go\.sum:(\d+): ")


# --- the model -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoSettings:
    """How Go is run for vendoring: which toolchain, which proxy, where its caches live."""

    go: Installed
    cache_root: Path  # GOPATH, GOMODCACHE and GOCACHE live under cache_root/go
    goproxy: str | None = None  # None: Go's own default
    offline: bool = False  # no network: only the module cache, or a file:// proxy

    @property
    def modcache(self) -> Path:
        return self.cache_root / "go" / "modcache"

    @property
    def proxy_label(self) -> str:
        if self.offline and not (self.goproxy or "").startswith("file:"):
            return "off (module cache only)"
        return self.goproxy or "Go's default"


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


@dataclass(frozen=True)
class Drift:
    """One file where the tree differs from what `go mod tidy && go mod vendor` produce."""

    path: str  # relative to the module directory: go.mod, go.sum, vendor/...
    kind: str  # missing (the tree lacks it) | extra (go would not write it) | changed | checksum
    detail: str  # a unified diff or a sentence

    def describe(self) -> str:
        what = {"missing": "missing from the tree (go mod vendor writes it)",
                "extra": "in the tree but not written by go mod tidy/vendor (stale or added by hand)",
                "changed": "differs from what go mod tidy/vendor write",
                "checksum": "records a checksum the module does not have"}[self.kind]
        return f"{self.path}: {what}"


@dataclass(frozen=True)
class VendorReport:
    module_dir: Path
    go_version: str
    goproxy: str
    check: bool
    modules: tuple[ModulePruning, ...]
    requirements_removed: tuple[str, ...]  # `module version` lines go mod tidy dropped from go.mod
    requirements_added: tuple[str, ...]
    warnings: tuple[str, ...]
    drift: tuple[Drift, ...]
    applied: tuple[str, ...] = ()  # files written into the tree (not in check mode)

    @property
    def clean(self) -> bool:
        return not self.drift

    @property
    def packages_kept(self) -> int:
        return sum(len(m.packages) for m in self.modules)

    @property
    def files_dropped(self) -> int:
        return sum(m.files_dropped for m in self.modules)

    @property
    def bytes_saved(self) -> int:
        return sum(m.bytes_saved for m in self.modules)

    def to_json(self) -> dict[str, Any]:
        modules = [{**asdict(m), "files_dropped": m.files_dropped, "bytes_saved": m.bytes_saved}
                   for m in self.modules]
        return {
            "module_dir": str(self.module_dir), "go_version": self.go_version, "goproxy": self.goproxy,
            "check": self.check, "clean": self.clean, "modules": modules,
            "modules_kept": len(self.modules), "packages_kept": self.packages_kept,
            "files_dropped": self.files_dropped, "bytes_saved": self.bytes_saved,
            "requirements_removed": list(self.requirements_removed),
            "requirements_added": list(self.requirements_added),
            "warnings": list(self.warnings), "applied": list(self.applied),
            "drift": [asdict(d) for d in self.drift],
        }

    def summary(self) -> str:
        """The human report: pruning table, warnings, then the drift with its diffs."""
        lines = [f"{self.module_dir}: go {self.go_version}, GOPROXY {self.goproxy}"]
        for m in self.modules:
            lines.append(f"  {m.path} {m.version}: {len(m.packages)} package(s) kept, "
                         f"{m.files_kept}/{m.files_in_zip} files, {m.files_dropped} dropped "
                         f"({_reasons(m.dropped)}), {_size(m.bytes_saved)} saved")
        lines.append(f"  total: {len(self.modules)} module(s), {self.packages_kept} package(s) kept, "
                     f"{self.files_dropped} file(s) dropped, {_size(self.bytes_saved)} saved")
        for req in self.requirements_removed:
            lines.append(f"  go mod tidy removes the unused requirement {req}")
        for req in self.requirements_added:
            lines.append(f"  go mod tidy adds the missing requirement {req}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        if self.check:
            if self.clean:
                lines.append("  go.mod, go.sum and vendor/ are up to date")
            else:
                lines.append(f"  {len(self.drift)} file(s) drifted:")
                lines.extend(f"    {d.describe()}" for d in self.drift)
                for d in self.drift:
                    if d.detail:
                        lines.append("")
                        lines.append(d.detail.rstrip("\n"))
        elif self.applied:
            lines.append(f"  updated: {', '.join(self.applied)}")
        else:
            lines.append("  nothing to change")
        return "\n".join(lines)


def _reasons(dropped: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "none"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


# --- running Go ----------------------------------------------------------------------------

def go_environment(settings: GoSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment Go runs with: explicit, so the host's GOFLAGS or go env file never leak in."""
    base = os.environ if base is None else base
    gohome = settings.cache_root / "go"
    env = {
        "PATH": f"{settings.go.root / 'bin'}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}",
        "HOME": base.get("HOME", str(gohome / "home")),
        "GOROOT": str(settings.go.root),
        "GOTOOLCHAIN": "local",  # Go >= 1.21 would otherwise switch toolchains on a `toolchain` line
        "GOENV": "off",
        "GOWORK": "off",
        "GOFLAGS": "-mod=mod -modcacherw",  # -modcacherw: the cache stays deletable
        "GOPATH": str(gohome / "path"),
        "GOMODCACHE": str(settings.modcache),
        "GOCACHE": str(gohome / "build"),
        "LC_ALL": "C",
    }
    env.update({k: base[k] for k in PASSTHROUGH if base.get(k)})
    if settings.offline and not (settings.goproxy or "").startswith("file:"):
        env["GOPROXY"] = "off"
        env["GOSUMDB"] = "off"
    else:
        if settings.goproxy:
            env["GOPROXY"] = settings.goproxy
        # A local mirror cannot answer for the checksum database; go.sum still pins every module.
        if "GOSUMDB" not in env and (settings.goproxy or "").startswith(("file:", "off")):
            env["GOSUMDB"] = "off"
    return env


def _go(settings: GoSettings, env: Mapping[str, str], cwd: Path, *args: str) -> proc.Completed:
    return proc.run([settings.go.go, *args], env=env, cwd=cwd)


def go_version(settings: GoSettings, env: Mapping[str, str]) -> str:
    """`go env GOVERSION` without the `go` prefix."""
    done = proc.run([settings.go.go, "env", "GOVERSION"], env=env)
    return done.stdout.strip().removeprefix("go")


# --- the scratch copy ----------------------------------------------------------------------

def _skip_dir(name: str) -> bool:
    # What the go command itself ignores when it looks for packages.
    return name.startswith((".", "_")) or name == "testdata"


def copy_module_sources(module_dir: Path, dest: Path) -> None:
    """Copy what `go mod tidy/vendor` read: go.mod, go.sum and the main module's package files.

    vendor/, nested modules and the directories Go ignores are left out. Sources are hard-linked
    when the two directories share a filesystem (Go never writes them); go.mod and go.sum are copied,
    since Go rewrites them in place.
    """
    if not (module_dir / "go.mod").is_file():
        raise BadInput(f"{module_dir}: no go.mod (vendoring needs a Go module)")
    for dirpath, dirnames, filenames in os.walk(module_dir):
        here = Path(dirpath)
        rel = here.relative_to(module_dir)
        keep = []
        for d in dirnames:
            if _skip_dir(d) or (rel == Path(".") and d == "vendor") or (here / d / "go.mod").exists():
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            src = here / f
            if src.is_symlink() or not src.is_file():
                continue
            target = dest / rel / f
            if rel == Path(".") and f in ("go.mod", "go.sum"):
                shutil.copyfile(src, target)
                continue
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)


def _tidy(settings: GoSettings, env: Mapping[str, str], work: Path, check: bool) -> list[Drift]:
    """`go mod tidy` in the scratch copy; go.sum lines that disagree with the modules become drift.

    In check mode a wrong go.sum line is reported and dropped from the scratch copy so the check can go on
    and show everything else; when applying, it stops everything: it is what a tampered module looks like.
    """
    drift: list[Drift] = []
    gosum = work / "go.sum"
    for _ in range(1 + (len(gosum.read_text().splitlines()) if gosum.exists() else 0)):
        try:
            _go(settings, env, work, "mod", "tidy")
            return drift
        except CommandFailed as exc:
            bad = _bad_gosum_line(exc.stderr, gosum)
            if bad is None:
                raise
            lineno, detail = bad
            if not check:
                raise CheckFailed(detail,
                                  "go.sum disagrees with the module the proxy served (SECURITY: a module "
                                  "changed after it was first recorded). Find out why before you fix go.sum; "
                                  "`reprobuild vendor --check` shows the difference") from None
            drift.append(Drift("go.sum", "checksum", detail))
            lines = gosum.read_text().splitlines(keepends=True)
            del lines[lineno - 1]
            gosum.write_text("".join(lines))
    raise CheckFailed("go.sum: could not be repaired in the scratch copy", "run `go mod tidy` and look at go.sum")


def canonical_go_sum(gosum: Path) -> None:
    """Drop the lines Go skips without a word (malformed, duplicated) but never removes itself.

    `go mod tidy` rewrites go.sum only when the set of sums it needs changes, so junk it ignores would
    otherwise survive every tidy and never show up as drift.
    """
    if not gosum.is_file():
        return
    text = gosum.read_text()
    seen: set[str] = set()
    keep: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2].startswith("h") and ":" in fields[2] and line not in seen:
            seen.add(line)
            keep.append(line + "\n")
    if "".join(keep) != text:
        gosum.write_text("".join(keep))


def _bad_gosum_line(stderr: str, gosum: Path) -> tuple[int, str] | None:
    """(line number, what is wrong) of the go.sum line Go complained about, if that was the failure."""
    if not gosum.exists():
        return None
    lines = gosum.read_text().splitlines()
    m = _MISMATCH.search(stderr)
    if m:
        mod, ver, gomod, downloaded, recorded = m.groups()
        key = f"{mod} {ver}{gomod or ''} {recorded}"
        for i, line in enumerate(lines, 1):
            if line.strip() == key:
                return i, (f"go.sum line {i}: {mod} {ver}{gomod or ''} is recorded as {recorded}, "
                           f"but the module has {downloaded}")
        return None
    m = _MALFORMED.search(stderr)
    if m and "malformed go.sum" in stderr:
        i = int(m.group(1))
        if 1 <= i <= len(lines):
            return i, f"go.sum line {i} is malformed: {lines[i - 1]!r}"
    return None


# --- comparing -------------------------------------------------------------------------------

def _files_under(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in filenames:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = p
    return out


def _diff(rel: str, old: bytes | None, new: bytes | None) -> str:
    try:
        a = old.decode().splitlines(keepends=True) if old is not None else []
        b = new.decode().splitlines(keepends=True) if new is not None else []
    except UnicodeDecodeError:
        return f"Binary file {rel} differs"
    lines = list(difflib.unified_diff(a, b, fromfile=f"{rel} (in the tree)" if old is not None else "/dev/null",
                                      tofile=f"{rel} (go mod tidy/vendor)" if new is not None else "/dev/null"))
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def compare_with_tree(module_dir: Path, work: Path) -> list[Drift]:
    """go.mod, go.sum and vendor/ of the tree against the scratch copy's."""
    drift: list[Drift] = []
    for name in ("go.mod", "go.sum"):
        old = (module_dir / name).read_bytes() if (module_dir / name).is_file() else None
        new = (work / name).read_bytes() if (work / name).is_file() else None
        if old != new:
            kind = "missing" if old is None else "extra" if new is None else "changed"
            drift.append(Drift(name, kind, _diff(name, old, new)))
    have = _files_under(module_dir / "vendor")
    want = _files_under(work / "vendor")
    for rel in sorted(set(have) | set(want)):
        path = f"vendor/{rel}"
        if rel not in have:
            drift.append(Drift(path, "missing", ""))
        elif rel not in want:
            drift.append(Drift(path, "extra", ""))
        else:
            old, new = have[rel].read_bytes(), want[rel].read_bytes()
            if old != new:
                drift.append(Drift(path, "changed", _diff(path, old, new)))
    return drift


def _requirements(gomod: Path) -> set[str]:
    """`module version` of every require line (block or single) of a go.mod."""
    if not gomod.is_file():
        return set()
    reqs: set[str] = set()
    in_block = False
    for raw in gomod.read_text().splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                reqs.add(" ".join(line.split()[:2]))
        elif line.startswith("require"):
            rest = line[len("require"):].strip()
            if rest == "(":
                in_block = True
            elif rest:
                reqs.add(" ".join(rest.split()[:2]))
    return reqs


# --- pruning ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VendoredModule:
    """One `# path version [=> replacement [version]]` block of vendor/modules.txt."""

    path: str
    version: str
    packages: tuple[str, ...]
    source_path: str  # where the files come from: the replacement's path when replaced
    source_version: str  # "" for a directory replacement


def read_modules_txt(path: Path) -> list[VendoredModule]:
    if not path.is_file():
        return []
    result: list[VendoredModule] = []
    cur: list[Any] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            if cur:
                result.append(VendoredModule(cur[0], cur[1], tuple(cur[2]), cur[3], cur[4]))
            m = re.match(r"^# (\S+)(?: (\S+))?(?: => (\S+)(?: (\S+))?)?$", line)
            if not m:
                cur = None
                continue
            path_, ver, repl, repl_ver = m.groups()
            cur = [path_, ver or "", [], repl or path_, (repl_ver or "") if repl else (ver or "")]
        elif line.startswith("##") or not line.strip():
            continue
        elif cur is not None:
            cur[2].append(line.strip())
    if cur:
        result.append(VendoredModule(cur[0], cur[1], tuple(cur[2]), cur[3], cur[4]))
    return result


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


# --- plan and apply ----------------------------------------------------------------------------

@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        remove_tree(work)


def vendor_module(module_dir: Path, go: Installed, goproxy: str | None, check: bool, *,
                  cache_root: Path, offline: bool = False) -> VendorReport:
    """Tidy, vendor and verify `module_dir` with toolchain `go` through `goproxy` (None: Go's default).

    The work happens in a scratch copy. `check=True` only reports how the tree differs (`report.drift`);
    otherwise the changed go.mod, go.sum and vendor/ replace the tree's (`report.applied`).
    """
    settings = GoSettings(go, cache_root, goproxy, offline)
    module_dir = module_dir.resolve()
    if not (module_dir / "go.mod").is_file():
        raise BadInput(f"{module_dir}: no go.mod (vendoring needs a Go module)")
    policy.check_go_directives(module_dir, go.name, go.version)  # before Go says it less clearly
    env = go_environment(settings)
    with _scratch("reprobuild-vendor-") as work:
        copy_module_sources(module_dir, work)
        drift = _tidy(settings, env, work, check)
        canonical_go_sum(work / "go.sum")
        _go(settings, env, work, "mod", "vendor")
        _go(settings, env, work, "mod", "verify")
        drift += compare_with_tree(module_dir, work)
        before, after = _requirements(module_dir / "go.mod"), _requirements(work / "go.mod")
        pruning, warnings = prune_report(settings.modcache, work / "vendor")
        applied = () if check else apply_vendoring(module_dir, work, drift)
    return VendorReport(module_dir, go.version, settings.proxy_label, check, tuple(pruning),
                        tuple(sorted(before - after)), tuple(sorted(after - before)), tuple(warnings),
                        tuple(drift), applied)


def apply_vendoring(module_dir: Path, work: Path, drift: Sequence[Drift]) -> tuple[str, ...]:
    """Move the scratch copy's go.mod, go.sum and vendor/ into the tree, where they drifted.

    vendor/ is swapped as a whole (staged next to it, then renamed), so an interruption leaves either the
    old or the new tree, never a mixture.
    """
    changed: list[str] = []
    for name in ("go.mod", "go.sum"):
        if not any(d.path == name for d in drift):
            continue
        src, dst = work / name, module_dir / name
        if src.is_file():
            mode = dst.stat().st_mode & 0o777 if dst.exists() else 0o644
            atomic_write_bytes(dst, src.read_bytes(), mode)
        else:
            dst.unlink(missing_ok=True)
        changed.append(name)
    if any(d.path.startswith("vendor/") for d in drift):
        target = module_dir / "vendor"
        staged: Path | None = None
        if (work / "vendor").is_dir():
            staged = Path(tempfile.mkdtemp(prefix=".vendor.new.", dir=module_dir))
            staged.rmdir()
            shutil.copytree(work / "vendor", staged)
        old: Path | None = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=".vendor.old.", dir=module_dir))
            os.replace(target, old / "vendor")
        if staged is not None:
            os.replace(staged, target)
        if old is not None:
            remove_tree(old)
        changed.append("vendor/")
    return tuple(changed)


# --- a module mirror for air-gapped runners ---------------------------------------------------

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
    with _scratch("reprobuild-mirror-") as work:
        for i, module_dir in enumerate(module_dirs):
            w = work / str(i)
            w.mkdir()
            for name in ("go.mod", "go.sum"):
                if (module_dir / name).is_file():
                    shutil.copyfile(module_dir / name, w / name)
            if not (w / "go.mod").is_file():
                raise BadInput(f"{module_dir}: no go.mod (a module mirror is made for Go modules)")
            listing = _go(settings, env, w, "mod", "download", "-json", "all").stdout
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
            graph = _go(settings, env, w, "mod", "graph").stdout
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
