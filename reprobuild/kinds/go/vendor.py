"""Vendoring and pruning of Go modules: plan in a scratch copy, compare with the tree, then apply.

`vendor_module` copies the module (go.mod, go.sum and its sources; never its vendor/) to a scratch
directory and runs there, with the locked Go and an explicit environment (goenv.py):

    go mod tidy      prunes requirements nothing imports, completes go.sum
    go mod vendor    copies only the packages the build uses into vendor/
    go mod verify    the module cache still holds what go.sum says

The result is then compared with the tree (go.mod, go.sum, vendor/): `check=True` reports the drift
and leaves the tree alone (the way CI catches a forgotten `go mod vendor`); otherwise the changed
files are moved into the tree. Either way the report (report.py) says what pruning did (prune.py:
modules and packages kept, files dropped, bytes saved, compared with the module zips) and warns when
vendoring dropped C sources or other non-Go files a kept package seems to need.

`check_vendored` is `vendor --check`: first the offline consistency check of the committed vendor/
(vendorcheck.py: go.mod, go.sum, modules.txt and the digests `reprobuild vendor` records in
vendor/reprobuild.sha256), then, when a module proxy is configured and the network is allowed, this
full re-vendor check. A file-based module mirror for runners with no network is mirror.py's.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from reprobuild.config import policy
from reprobuild.errors import BadInput, CheckFailed, CommandFailed, EnvironmentFailure
from reprobuild.fsutil import atomic_write_bytes, remove_tree
from reprobuild.kinds.go.goenv import GoSettings, go_environment, run_go, scratch_dir
from reprobuild.kinds.go.gomod import bad_go_sum_line, canonical_go_sum, read_go_mod
from reprobuild.kinds.go.prune import prune_report
from reprobuild.kinds.go.report import Drift, VendorReport
from reprobuild.kinds.go.vendorcheck import check_offline, write_digests
from reprobuild.toolchains.cache import Installed

# How many lines of one file's diff a report shows.
DIFF_LINES = 60


class GoModuleFailure(EnvironmentFailure):
    """`go mod tidy/vendor/verify` failed, most often because the proxy cannot serve a module: the whole
    error (Go names the module and the URL first, so a tail would lose them), and the ways out."""

    def __init__(self, module_dir: Path, proxy: str, exc: CommandFailed) -> None:
        output = exc.stderr.strip().splitlines()
        shown = "\n".join("    " + line for line in output[:200])
        more = f"\n    ... {len(output) - 200} more lines" if len(output) > 200 else ""
        super().__init__(f"{module_dir}: `go {' '.join(exc.argv[1:])}` failed (exit {exc.returncode}, "
                         f"GOPROXY {proxy}):\n{shown}{more}",
                         "give a module proxy that has every module: `--goproxy URL` (or GOPROXY), or "
                         "`--goproxy file:///DIR` for a mirror written by `reprobuild vendor --mirror DIR` on a "
                         "machine with network; `reprobuild vendor --check --offline` checks a committed vendor/ "
                         "with no network")


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
            run_go(settings, env, work, "mod", "tidy")
            return drift
        except CommandFailed as exc:
            bad = bad_go_sum_line(exc.stderr, gosum)
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


# --- plan and apply ----------------------------------------------------------------------------

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
    with scratch_dir("reprobuild-vendor-") as work:
        copy_module_sources(module_dir, work)
        try:
            drift = _tidy(settings, env, work, check)
            canonical_go_sum(work / "go.sum")
            run_go(settings, env, work, "mod", "vendor")
            run_go(settings, env, work, "mod", "verify")
        except CommandFailed as exc:
            raise GoModuleFailure(module_dir, settings.proxy_label, exc) from None
        if (work / "vendor").is_dir():
            write_digests(work / "vendor")
        drift += compare_with_tree(module_dir, work)
        before, after = (_requirements(settings, env, module_dir), _requirements(settings, env, work))
        pruning, warnings = prune_report(settings.modcache, work / "vendor")
        applied = () if check else apply_vendoring(module_dir, work, drift)
    return VendorReport(module_dir, go.version, settings.proxy_label, check, tuple(pruning),
                        tuple(sorted(before - after)), tuple(sorted(after - before)), tuple(warnings),
                        tuple(drift), applied)


def check_vendored(module_dir: Path, go: Installed, goproxy: str | None, full: bool, *,
                   cache_root: Path, offline: bool = False) -> VendorReport:
    """`vendor --check`: the offline consistency check of the committed vendor/, then (`full`) the re-vendor
    check through `goproxy`; the report's `level` says which ran."""
    settings = GoSettings(go, cache_root, goproxy, offline)
    module_dir = module_dir.resolve()
    if not (module_dir / "go.mod").is_file():
        raise BadInput(f"{module_dir}: no go.mod (vendoring needs a Go module)")
    policy.check_go_directives(module_dir, go.name, go.version)
    drift, level = check_offline(module_dir, settings, go_environment(settings))
    if not full:
        why = "--offline; with a module proxy (--goproxy URL, --mirror DIR or GOPROXY) it re-vendors and compares"
        return VendorReport(module_dir, go.version, "not used", True, (), (), (), (), tuple(drift),
                            level=f"{level}; the full re-vendor check did not run ({why})")
    report = vendor_module(module_dir, go, goproxy, True, cache_root=cache_root, offline=offline)
    seen = {d.path for d in report.drift}
    return replace(report, drift=(*report.drift, *(d for d in drift if d.path not in seen)),
                   level=f"{level}; full (re-vendored through GOPROXY {settings.proxy_label} and compared)")


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


def _requirements(settings: GoSettings, env: Mapping[str, str], module_dir: Path) -> set[str]:
    """`module version` of every requirement of the module's go.mod, as the Go command reads it."""
    return {str(r) for r in read_go_mod(settings.go.go, module_dir / "go.mod", env).requires}
