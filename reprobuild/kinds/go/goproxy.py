"""Go module proxy layouts on disk: module zips, `h1:` sums, and file-based GOPROXY directories.

A file-based proxy is a directory laid out as the GOPROXY protocol's URLs:

    <escaped module>/@v/list             one version a line
    <escaped module>/@v/<v>.info         {"Version": "<v>"}
    <escaped module>/@v/<v>.mod          the module's go.mod (synthesized for modules without one)
    <escaped module>/@v/<v>.zip          the module zip: entries `<module>@<v>/<file>`

and `GOPROXY=file:///that/dir` (with `GOSUMDB=off`, or a go.sum that already holds the sums) makes
Go download from it without a network.

Sources are kept as plain trees, `<modules dir>/<module path>@<version>/...` (the module cache's own
layout), and the proxy is generated from them. Everything written here is deterministic: the same
trees always give the same bytes (sorted entries, fixed timestamps and modes), so a proxy can be
regenerated at will and its zips carry the same `h1:` sums as the upstream module proxy's.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reprobuild.errors import BadInput
from reprobuild.formats.archives import write_zip
from reprobuild.fsutil import remove_tree

# Directories the Go command never puts in a module zip (golang.org/x/mod/zip).
_VCS_DIRS = frozenset({".bzr", ".git", ".hg", ".svn"})


@dataclass(frozen=True)
class ModuleSource:
    """One module version's source tree on disk."""

    path: str  # module path, e.g. github.com/cespare/xxhash/v2
    version: str  # e.g. v2.1.1
    root: Path

    @property
    def prefix(self) -> str:
        return f"{self.path}@{self.version}/"


def escape_path(module_path: str) -> str:
    """Go's case encoding for module paths and versions on disk and in URLs: `A` becomes `!a`."""
    return "".join(f"!{c.lower()}" if "A" <= c <= "Z" else c for c in module_path)


def unescape_path(escaped: str) -> str:
    out: list[str] = []
    bang = False
    for c in escaped:
        if bang:
            out.append(c.upper())
            bang = False
        elif c == "!":
            bang = True
        else:
            out.append(c)
    return "".join(out)


def find_modules(modules_dir: Path) -> list[ModuleSource]:
    """Every `<module path>@<version>` tree under `modules_dir`, sorted by path and version."""
    if not modules_dir.is_dir():
        raise BadInput(f"{modules_dir}: not a directory of module sources",
                       "expected trees laid out as <module path>@<version>/ (e.g. github.com/google/uuid@v1.3.0/)")
    found: list[ModuleSource] = []
    for dirpath, dirnames, _files in os.walk(modules_dir):
        for name in sorted(dirnames):
            if "@" in name:
                root = Path(dirpath) / name
                elem, _, version = name.partition("@")
                rel_parent = Path(dirpath).relative_to(modules_dir).as_posix()
                path = elem if rel_parent == "." else f"{rel_parent}/{elem}"
                found.append(ModuleSource(unescape_path(path), unescape_path(version), root))
        # never look inside a module tree for more modules
        dirnames[:] = sorted(d for d in dirnames if "@" not in d)
    found.sort(key=lambda m: (m.path, m.version))
    return found


def module_files(src: ModuleSource) -> list[tuple[str, Path]]:
    """The files Go puts in the module zip, as (name relative to the module root, path), sorted.

    Like golang.org/x/mod/zip: no VCS directories, no nested modules (a subdirectory with its own
    go.mod), no vendored packages (vendor/<dir>/...), regular files only.
    """
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src.root):
        here = Path(dirpath)
        rel_dir = here.relative_to(src.root).as_posix()
        keep: list[str] = []
        for d in dirnames:
            sub = here / d
            if d in _VCS_DIRS or (sub / "go.mod").is_file():
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            p = here / f
            if p.is_symlink() or not p.is_file():
                continue
            if _in_vendored_package(rel):
                continue
            files.append((rel, p))
    files.sort()
    return files


def _in_vendored_package(name: str) -> bool:
    """golang.org/x/mod/zip's isVendoredPackage, quirk included: module sums depend on it staying as it is."""
    if name.startswith("vendor/"):
        i = len("vendor/")
    elif "/vendor/" in name:
        i = len("/vendor/")  # sic: Go measures from the start of the name, not from the match (golang/go#31562)
    else:
        return False
    return "/" in name[i:]


def go_mod_bytes(src: ModuleSource) -> bytes:
    """The module's go.mod, or the one the Go command synthesizes for a module that has none."""
    gomod = src.root / "go.mod"
    if gomod.is_file():
        return gomod.read_bytes()
    quoted = src.path if all(c.isalnum() or c in "./-_~+" for c in src.path) else json.dumps(src.path)
    return f"module {quoted}\n".encode()


def zip_bytes(src: ModuleSource) -> bytes:
    """The module zip, deterministic: sorted entries, fixed time (1980-01-01), 0644, deflate."""
    buf = io.BytesIO()
    write_zip([(src.prefix + rel, p) for rel, p in module_files(src)], buf, 0, mode=0o644)
    return buf.getvalue()


def h1_sum(entries: Iterable[tuple[str, bytes]]) -> str:
    """Go's dirhash Hash1 over (name, content) pairs: the `h1:` value in go.sum."""
    summary = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                      for name, data in sorted(entries, key=lambda e: e[0]))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def module_h1(src: ModuleSource) -> str:
    """The `h1:` sum of the module zip, as go.sum records it."""
    return h1_sum((src.prefix + rel, p.read_bytes()) for rel, p in module_files(src))


def go_mod_h1(src: ModuleSource) -> str:
    """The `/go.mod h1:` sum, as go.sum records it."""
    return h1_sum([("go.mod", go_mod_bytes(src))])


def write_module(src: ModuleSource, proxy_dir: Path) -> None:
    """Add one module version's .info, .mod and .zip to a proxy directory (its `list` is written separately)."""
    vdir = proxy_dir / escape_path(src.path) / "@v"
    vdir.mkdir(parents=True, exist_ok=True)
    v = escape_path(src.version)
    (vdir / f"{v}.info").write_text(json.dumps({"Version": src.version}) + "\n")
    (vdir / f"{v}.mod").write_bytes(go_mod_bytes(src))
    (vdir / f"{v}.zip").write_bytes(zip_bytes(src))


def write_lists(proxy_dir: Path, modules: Sequence[tuple[str, str]]) -> None:
    """The `@v/list` files for (module path, version) pairs."""
    versions: dict[str, set[str]] = {}
    for path, version in modules:
        versions.setdefault(path, set()).add(version)
    for path, vs in versions.items():
        vdir = proxy_dir / escape_path(path) / "@v"
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "list").write_text("".join(f"{v}\n" for v in sorted(vs)))


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


def write_file_proxy(modules_dir: Path, dest: Path) -> str:
    """Generate a file-based GOPROXY at `dest` from the module trees in `modules_dir`; return its URL.

    `dest` is replaced as a whole (built next to it, then renamed), so a reader never sees half a proxy.
    """
    modules = find_modules(modules_dir)
    if not modules:
        raise BadInput(f"{modules_dir}: no module trees found",
                       "expected trees laid out as <module path>@<version>/ (e.g. github.com/google/uuid@v1.3.0/)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for src in modules:
            write_module(src, tmp)
        write_lists(tmp, [(m.path, m.version) for m in modules])
        tmp.chmod(0o755)  # mkdtemp made it private
        if dest.exists():
            remove_tree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return file_url(dest)
