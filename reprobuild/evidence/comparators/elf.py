"""ELF binaries, Go's in particular: build IDs, build info, embedded paths, then differing sections.

Order matters for a reader: build info first (it names the flag or the dependency that changed),
then embedded absolute paths (the build directory, GOROOT or module cache leaking in), then Go
string variables set with `-X`, then the build IDs. Each root cause is named once, and what follows
from it is not listed as another cause:
- `-trimpath` on one side only is one cause (with the paths the other side embeds as its evidence);
  that Go leaves `-ldflags` and `CGO_*FLAGS` out of the build info under `-trimpath` is its consequence.
- A Go build ID, and a GNU build ID from an external linker, is a hash of the rest of the binary:
  when both binaries carry one and something else differs, the ID differs *because* of it and is
  not reported; an ID on one side only is a cause of its own (a flag differs).
- `/_/...` (Go's `-trimpath` placeholder) is not an absolute path.
Hints fit the format: `-trimpath` for Go binaries, `-ffile-prefix-map` for C/C++ objects.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

from reprobuild import proc
from reprobuild.errors import EnvironmentFailure
from reprobuild.evidence.comparators import fallback
from reprobuild.evidence.comparators.base import Cause, Context, clip, cut, examples, plural, short
from reprobuild.formats.elf import SHT_NOBITS, STT_OBJECT, ElfError, ElfFile, Section
from reprobuild.formats.gobuildinfo import BuildInfo, from_go_version, read_build_info

NT_GO_BUILD_ID = 4
NT_GNU_BUILD_ID = 3
# An absolute path: '/' then at least two components of ordinary file-name characters. The byte before
# it must not be a path character, so `example.com/hello/main.go` (trimmed) is not mistaken for `/hello/...`.
_PATH = re.compile(rb"/(?:[A-Za-z0-9._+~@=,-]{1,255}/){1,64}[A-Za-z0-9._+~@=,-]{1,255}")
_PATH_CHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+~@=,-/")
_MIN_PATH = 6
_TRIMPATH_PLACEHOLDER = b"/_/"
# Build settings Go leaves out of the build info when it builds with -trimpath.
_HIDDEN_BY_TRIMPATH = frozenset({"-ldflags", "CGO_CFLAGS", "CGO_CPPFLAGS", "CGO_CXXFLAGS", "CGO_LDFLAGS"})
_GO_SECTIONS = (".go.buildinfo", ".gopclntab", ".note.go.buildid")
_C_HINT = "build with -ffile-prefix-map=OLD=NEW, or -fdebug-prefix-map=OLD=NEW for the debug info only"
_GO_HINT = "build with -trimpath"
_MAX_STRING_VAR = 4096


def recognizes(path: Path, head: bytes) -> bool:
    return head[:4] == b"\x7fELF"


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    try:
        ea, eb = _load(a, ctx), _load(b, ctx)
    except ElfError as exc:
        return [Cause("content", f"ELF: unreadable ({exc})"), *fallback.explain(a, b, ctx)]
    differing = _differing_sections(ea, eb)
    is_go = any(elf.section(name) is not None for elf in (ea, eb) for name in _GO_SECTIONS)
    ia, ib = _info(ea, a, ctx), _info(eb, b, ctx)
    untrimmed = _untrimmed_side(ia, ib)
    x_vars = _x_changes(ea, eb) if is_go else []
    causes: list[Cause] = []
    causes += _build_info(ia, ib, untrimmed, x_vars)
    causes += _embedded_paths(ea, eb, differing, is_go, untrimmed)
    causes += [Cause("ldflags-x", clip(f"-X {name}: {short(va, 120)} (A) vs {short(vb, 120)} (B)"))
               for name, va, vb in x_vars[:3]]
    ids = _build_ids(ea, eb)
    if ids and not causes and _only_ids_differ(ea, eb):
        return [cause for cause, _ in ids]
    # An ID on both sides is a hash of the rest: with another cause found, it differs because of it.
    id_causes = [cause for cause, one_sided in ids if one_sided or not causes]
    # An ID present on one side only shifts every later byte: that alone explains the sections.
    explained = causes or any(one_sided for _, one_sided in ids)
    return causes + id_causes + ([] if explained else [_content(ea, eb, differing)])


def _load(path: Path, ctx: Context) -> ElfFile:
    elf = ElfFile(path.read_bytes())
    if any(s.compressed for s in elf.sections):
        try:
            for s in elf.sections:
                if s.compressed:
                    elf.contents(s)
        except ElfError:
            # zstd-compressed debug sections: binutils can still read them.
            out = ctx.scratch_pair(path.name)[0]
            if shutil.which("objcopy") is None:
                raise
            proc.run(["objcopy", "--decompress-debug-sections", path, out], timeout=120)
            elf = ElfFile(out.read_bytes())
    return elf


def _differing_sections(ea: ElfFile, eb: ElfFile) -> list[str]:
    names_a = {s.name: s for s in ea.sections if s.name}
    names_b = {s.name: s for s in eb.sections if s.name}
    differing = []
    for name in sorted(set(names_a) | set(names_b), key=lambda n: _order(n, ea, eb)):
        sa, sb = names_a.get(name), names_b.get(name)
        if sa is None or sb is None or sa.size != sb.size or ea.raw(sa) != eb.raw(sb):
            differing.append(name)
    return differing


def _order(name: str, ea: ElfFile, eb: ElfFile) -> int:
    for i, s in enumerate(ea.sections):
        if s.name == name:
            return i
    for i, s in enumerate(eb.sections):
        if s.name == name:
            return 1000 + i
    return 2000


def _content(ea: ElfFile, eb: ElfFile, differing: list[str]) -> Cause:
    if not differing:
        return Cause("content", "all sections are identical; the ELF headers or the bytes between sections differ")
    items = []
    for name in differing:
        sa, sb = ea.section(name), eb.section(name)
        if sa is None:
            items.append(f"{name} (only in B)")
        elif sb is None:
            items.append(f"{name} (only in A)")
        elif sa.size != sb.size:
            items.append(f"{name} ({sa.size} vs {sb.size} bytes)")
        else:
            items.append(name)
    return Cause("content", clip(f"{plural(len(differing), 'section')} differ: {examples(items, 8)}"))


# -- build IDs ---------------------------------------------------------------------------------------

def _note(elf: ElfFile, section_name: str, owner: bytes, typ: int) -> bytes | None:
    section = elf.section(section_name)
    if section is None:
        return None
    for note in elf.notes(section):
        if note.owner == owner and note.type == typ:
            return note.desc
    return None


def _build_ids(ea: ElfFile, eb: ElfFile) -> list[tuple[Cause, bool]]:
    """Build-ID causes, each with whether only one binary has the ID."""
    causes: list[tuple[Cause, bool]] = []
    go_a = _note(ea, ".note.go.buildid", b"Go", NT_GO_BUILD_ID)
    go_b = _note(eb, ".note.go.buildid", b"Go", NT_GO_BUILD_ID)
    if go_a != go_b:
        causes.append((Cause("go-buildid", _id_detail("Go build ID (.note.go.buildid)", _text(go_a), _text(go_b),
                                                      "-ldflags=-buildid=")), go_a is None or go_b is None))
    gnu_a = _note(ea, ".note.gnu.build-id", b"GNU", NT_GNU_BUILD_ID)
    gnu_b = _note(eb, ".note.gnu.build-id", b"GNU", NT_GNU_BUILD_ID)
    if gnu_a != gnu_b:
        causes.append((Cause("gnu-build-id", _id_detail("GNU build ID (.note.gnu.build-id)",
                                                        gnu_a.hex() if gnu_a is not None else None,
                                                        gnu_b.hex() if gnu_b is not None else None,
                                                        "-extldflags=-Wl,--build-id=none")),
                       gnu_a is None or gnu_b is None))
    return causes


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _id_detail(what: str, a: str | None, b: str | None, how_absent: str) -> str:
    if a is None or b is None:
        present = "A" if a is not None else "B"
        value = cut(a if a is not None else b or "", 60)
        return f"{what}: only {present} has one ({value}); the other has none (built with {how_absent})"
    return f"{what}: {cut(a, 60)} (A) vs {cut(b, 60)} (B); a hash of the inputs and content"


def _only_ids_differ(ea: ElfFile, eb: ElfFile) -> bool:
    """True when the binaries are equal once each one's build IDs are blanked out."""
    if len(ea.data) != len(eb.data):
        return False
    blank_a, blank_b = bytearray(ea.data), bytearray(eb.data)
    for elf, blank in ((ea, blank_a), (eb, blank_b)):
        for name in (".note.go.buildid", ".note.gnu.build-id"):
            s = elf.section(name)
            if s is not None:
                blank[s.offset:s.offset + s.size] = bytes(s.size)
    return blank_a == blank_b


# -- build info --------------------------------------------------------------------------------------

def _info(elf: ElfFile, path: Path, ctx: Context) -> BuildInfo | None:
    info = read_build_info(elf)
    if info is None and elf.section(".go.buildinfo") is not None:
        go = ctx.go or (Path(found) if (found := shutil.which("go")) else None)
        if go is not None:
            with contextlib.suppress(EnvironmentFailure):
                info = from_go_version(go, path)
    return info


def _untrimmed_side(ia: BuildInfo | None, ib: BuildInfo | None) -> str | None:
    """"A" or "B" when only the other side was built with -trimpath (as its build info says), else None."""
    if ia is None or ib is None:
        return None
    trim_a, trim_b = ia.settings.get("-trimpath") == "true", ib.settings.get("-trimpath") == "true"
    if trim_a == trim_b:
        return None
    return "B" if trim_a else "A"


def _build_info(ia: BuildInfo | None, ib: BuildInfo | None, untrimmed: str | None,
                x_vars: list[tuple[str, str, str]]) -> list[Cause]:
    if ia is None and ib is None:
        return []
    if ia is None or ib is None:
        return [Cause("buildinfo", f"only {'A' if ia else 'B'} carries Go build info")]
    items: list[str] = []
    vcs: list[str] = []
    if ia.go_version != ib.go_version:
        items.append(f"Go version {ia.go_version} (A) vs {ib.go_version} (B)")
    if ia.path != ib.path:
        items.append(f"path {ia.path} (A) vs {ib.path} (B)")
    if ia.main != ib.main:
        items.append(f"main module {_mod(ia.main)} (A) vs {_mod(ib.main)} (B)")
    for dep in sorted(set(ia.deps) | set(ib.deps)):
        da, db = ia.deps.get(dep), ib.deps.get(dep)
        if da != db:
            items.append(f"dep {dep} {_dep(da)} (A) vs {_dep(db)} (B)")
    for key in sorted(set(ia.settings) | set(ib.settings), key=lambda k: (k.startswith("vcs"), k)):
        va, vb = ia.settings.get(key), ib.settings.get(key)
        if va == vb or _consequence(key, va, vb, untrimmed, x_vars):
            continue
        line = f"{key}: {_setting(va)} (A) vs {_setting(vb)} (B)"
        (vcs if key == "vcs" or key.startswith("vcs.") else items).append(line)
    causes = []
    if items:
        causes.append(Cause("buildinfo", clip("build info: " + "; ".join(items[:6]) + _more(items, 6))))
    if vcs:
        one_sided = ("vcs" in ia.settings) != ("vcs" in ib.settings)
        hint = " (one side built with -buildvcs=false, or without a checkout or git)" if one_sided else ""
        causes.append(Cause("vcs-stamp", clip("VCS stamp: " + "; ".join(vcs[:4]) + _more(vcs, 4) + hint)))
    return causes


def _consequence(key: str, va: str | None, vb: str | None, untrimmed: str | None,
                 x_vars: list[tuple[str, str, str]]) -> bool:
    """Whether a differing build setting follows from a cause reported elsewhere."""
    if untrimmed is not None:
        if key == "-trimpath":
            return True  # reported with the paths it lets in
        trimmed_value = vb if untrimmed == "A" else va
        if key in _HIDDEN_BY_TRIMPATH and trimmed_value is None:
            return True  # not recorded under -trimpath: says nothing about the flags themselves
    if key == "-ldflags" and x_vars and va is not None and vb is not None:
        return _without_x(va) == _without_x(vb)  # only -X values differ: named by the -X cause
    return False


_X_FLAG = re.compile(r"(-X[= ]?'?\"?[^=\s]+=)(?:'[^']*'|\"[^\"]*\"|\S*)")


def _without_x(ldflags: str) -> str:
    return _X_FLAG.sub(r"\1", ldflags)


# -- -X string variables -----------------------------------------------------------------------------

def _string_vars(elf: ElfFile) -> dict[str, str]:
    """Go string variables with data (`-X` sets these): symbol name -> value, read from `.symtab`."""
    word = elf.bits // 8
    data_sections = {i for i, sec in enumerate(elf.sections) if sec.name in (".data", ".noptrdata")}
    found: dict[str, str] = {}
    for sym in elf.symbols():
        if sym.type != STT_OBJECT or sym.size != 2 * word or sym.section_index not in data_sections:
            continue
        if "." not in sym.name or sym.name.startswith(("go:", "type:", "runtime.")):
            continue
        try:
            header = elf.read_vaddr(sym.value, 2 * word)
            pointer, length = elf.uint(header[:word], word), elf.uint(header[word:], word)
            if length > _MAX_STRING_VAR or (pointer == 0) != (length == 0):
                continue
            found[sym.name] = elf.read_vaddr(pointer, length).decode("utf-8") if length else ""
        except (ElfError, UnicodeDecodeError):
            continue
    return found


def _x_changes(ea: ElfFile, eb: ElfFile) -> list[tuple[str, str, str]]:
    """String variables whose values differ: (symbol, A's value, B's value), by symbol name."""
    try:
        va, vb = _string_vars(ea), _string_vars(eb)
    except ElfError:
        return []
    return [(name, va[name], vb[name]) for name in sorted(set(va) & set(vb)) if va[name] != vb[name]]


def _mod(m: object) -> str:
    return "none" if m is None else f"{getattr(m, 'path', '')} {m}".strip()


def _dep(m: object) -> str:
    return "absent" if m is None else str(m)


def _setting(value: str | None) -> str:
    return "absent" if value is None else cut(value, 60)


def _more(items: list[str], shown: int) -> str:
    return f"; and {len(items) - shown} more" if len(items) > shown else ""


# -- embedded paths ----------------------------------------------------------------------------------

def _paths_in(data: bytes) -> set[str]:
    found = set()
    for m in _PATH.finditer(data):
        start = m.start()
        if start and data[start - 1] in _PATH_CHAR:
            continue
        if data.startswith(_TRIMPATH_PLACEHOLDER, start):
            continue  # Go's -trimpath placeholder for a module path, not a path on a machine
        if m.end() - start >= _MIN_PATH:
            found.add(m.group().decode("ascii"))
    return found


def _section_paths(elf: ElfFile, section: Section | None) -> set[str]:
    if section is None or section.type == SHT_NOBITS:
        return set()
    try:
        return _paths_in(elf.contents(section))
    except ElfError:
        return _paths_in(elf.raw(section))


def _embedded_paths(ea: ElfFile, eb: ElfFile, differing: list[str], is_go: bool,
                    untrimmed: str | None) -> list[Cause]:
    only_a: dict[str, set[str]] = defaultdict(set)  # path -> sections
    only_b: dict[str, set[str]] = defaultdict(set)
    for name in differing:
        pa, pb = _section_paths(ea, ea.section(name)), _section_paths(eb, eb.section(name))
        for p in pa - pb:
            only_a[p].add(name)
        for p in pb - pa:
            only_b[p].add(name)
    if untrimmed is not None:
        trimmed = "B" if untrimmed == "A" else "A"
        paths = only_a if untrimmed == "A" else only_b
        evidence = f"{untrimmed} embeds {_summarise(paths)}" if paths else f"no path found only in {untrimmed}"
        return [Cause("embedded-path", clip(f"-trimpath: only {trimmed} was built with it (build info); "
                                            f"{evidence} ({_GO_HINT})"))]
    if not only_a and not only_b:
        return []
    detail = f"A: {_summarise(only_a)}; B: {_summarise(only_b)}"
    return [Cause("embedded-path", clip(f"absolute paths found in only one binary: {detail} "
                                        f"({_GO_HINT if is_go else _C_HINT})"))]


def _summarise(paths: dict[str, set[str]]) -> str:
    """`12 paths under /tmp/a/src (.gopclntab, .debug_line), ...`, grouped by their leading directories."""
    if not paths:
        return "none"
    if len(paths) <= 2:
        return ", ".join(f"{cut(p, 100)} in {', '.join(sorted(paths[p]))}" for p in sorted(paths))
    groups: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        parts = p.split("/")
        groups["/".join(parts[:3])].append(p)
    ranked = sorted(groups.values(), key=len, reverse=True)
    shown = []
    for members in ranked[:3]:
        root = _common_dir(members)
        sections = sorted(set().union(*(paths[m] for m in members)))
        shown.append(f"{plural(len(members), 'path')} under {cut(root, 120)} in {examples(sections, 4)}")
    rest = sum(len(m) for m in ranked[3:])
    return "; ".join(shown) + (f"; and {rest} more" if rest else "")


def _common_dir(paths: list[str]) -> str:
    return os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
