"""Assertions after every Go build: what `go version -m` and the ELF file say must match the pins.

A failed assertion is exit 1 (CheckFailed), naming the target and what was found. Forbidden paths are the
paths the build could see (source, build root, caches, toolchain, the home it was given), matched as whole
paths: `/root` is found in `/root/go/x.go` and `"/root"`, never inside `/proc/%d/root/%s`. A pipeline target
adds its own `forbidden_strings` (found anywhere) and `allowed_strings` (a hit whose surrounding string holds
one is accepted). Each finding names the section, the offset and the printable string around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reprobuild.backends import HOME, OUT, SRC
from reprobuild.errors import CheckFailed
from reprobuild.formats.elf import ElfError, ElfFile, Hit
from reprobuild.formats.gobuildinfo import BuildInfo, from_go_version, read_build_info


def read_buildinfo(go: Path, binary: Path, elf: ElfFile | None = None) -> BuildInfo:
    """What `go version -m` prints, read from the binary itself (`gobuildinfo` follows debug/buildinfo; a
    test holds it to `go version -m` on the same binaries). `go version -m` is asked only when the
    reader finds nothing, so a binary it cannot read is not waved through."""
    info = read_build_info(elf or ElfFile.open(binary))
    return info or from_go_version(go, binary) or BuildInfo("")


def visible_paths(source: Path, build_root: Path, toolchain: Path, cache: Path, backend: object) -> tuple[str, ...]:
    """The paths a build could see, on the host and inside the build: the source, the build root (staging), the
    toolchain tree, the caches, the fixed /rb paths, and, for a backend that builds on the host, its scratch root
    (where the home it gives the build is). Not the invoking user's home: no build sees it."""
    paths = {str(source), str(build_root), str(toolchain), str(cache), SRC, OUT, HOME}
    scratch = getattr(backend, "scratch_base", None)
    if isinstance(scratch, Path):
        paths.add(str(scratch))
    return tuple(sorted(paths))


@dataclass(frozen=True)
class Expectation:
    target: str
    go_version: str
    cgo: bool
    vendored: dict[str, str]  # module path -> version, from vendor/modules.txt (gomod.vendored_versions)
    forbidden_paths: tuple[str, ...]
    keep_gnu_build_id: bool = False
    buildmode: str = "exe"
    forbidden_strings: tuple[str, ...] = ()  # the pipeline target's own, matched anywhere
    allowed_strings: tuple[str, ...] = ()  # a hit inside a string holding one of these is accepted


def check_binary(binary: Path, go: Path, exp: Expectation) -> None:
    elf = ElfFile.open(binary)
    problems = binary_problems(binary, read_buildinfo(go, binary, elf), exp, elf)
    if exp.buildmode == "plugin":
        problems += plugin_problems(binary)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise CheckFailed(f"target `{exp.target}`: {binary.name} failed its reproducibility assertions:\n{listed}")


def plugin_problems(binary: Path) -> list[str]:
    """What Go's loader needs a plugin to keep: the package hashes in its dynamic symbol table (resolved against
    the host's at plugin.Open) and a plugin path (the import path: two plugins with one path cannot coexist)."""
    from reprobuild.formats.goplugin import read_link_info

    info = read_link_info(binary)
    problems = []
    if not info.exported or not info.packages:
        problems.append("a plugin without package hashes in its dynamic symbol table: plugin.Open cannot check it")
    if not info.pluginpath or info.pluginpath.startswith("plugin/unnamed-"):
        problems.append(f"plugin path `{info.pluginpath}`: build the plugin from a package path (./dir), not files")
    return problems


def binary_problems(binary: Path, info: BuildInfo, exp: Expectation, elf: ElfFile | None = None) -> list[str]:
    problems = []
    if info.go_version != f"go{exp.go_version}":
        problems.append(f"built with {info.go_version or 'an unknown Go'}, the lock pins go{exp.go_version}")
    if info.settings.get("-trimpath") != "true":
        problems.append("not built with -trimpath (build paths are embedded)")
    if info.settings.get("-buildmode", "exe") != exp.buildmode:
        problems.append(f"-buildmode={info.settings.get('-buildmode')}, the pipeline says buildmode: {exp.buildmode}")
    want_cgo = "1" if exp.cgo else "0"
    if info.settings.get("CGO_ENABLED") != want_cgo:
        problems.append(f"CGO_ENABLED={info.settings.get('CGO_ENABLED')}, the pipeline says cgo: {exp.cgo}")
    vcs = sorted(k for k in info.settings if k.startswith("vcs"))
    if vcs:
        problems.append(f"VCS stamping present ({', '.join(vcs)}); build with -buildvcs=false")
    for mod, dep in info.deps.items():
        if mod not in exp.vendored:
            problems.append(f"dependency {mod} {dep.version} is not in vendor/modules.txt")
        elif exp.vendored[mod].split(" ")[0] != dep.version:
            problems.append(f"dependency {mod} is {dep.version} in the binary, {exp.vendored[mod]} "
                            "in vendor/modules.txt")
    elf = elf or ElfFile.open(binary)
    go_id = elf.note_descriptor(".note.go.buildid")
    if go_id:
        problems.append(f"Go build ID present ({go_id[:24].decode('ascii', 'replace')}...); link with -buildid=")
    if not exp.keep_gnu_build_id and elf.section(".note.gnu.build-id") is not None:
        problems.append("GNU build ID present (.note.gnu.build-id); link with -extldflags=-Wl,--build-id=none")
    try:
        problems += embedded_path_problems(elf, exp)
    except ElfError as exc:  # a section it cannot decompress is not searched, so the check cannot pass
        problems.append(f"cannot search the binary for embedded paths: {exc}")
    return problems


def embedded_path_problems(elf: ElfFile, exp: Expectation) -> list[str]:
    """The forbidden paths (as whole paths) and strings the binary holds, minus what the target allows."""

    def judged(hits: list[Hit]) -> list[Hit]:
        return [h for h in hits if not any(ok in h.context for ok in exp.allowed_strings)]

    problems = []
    for path in sorted({p.rstrip("/") for p in exp.forbidden_paths if len(p.rstrip("/")) >= 4}):
        hits = judged(elf.find_path(path))
        if hits:
            problems.append(f"embeds the path {path} (" + "; ".join(h.describe() for h in hits[:3]) + ")")
    for text in exp.forbidden_strings:
        hits = judged(elf.find_string(text))
        if hits:
            problems.append(f"embeds the forbidden string {text!r} (" + "; ".join(h.describe() for h in hits[:3])
                            + ")")
    return problems
