"""Assertions after every Go build: what `go version -m` and the ELF file say must match the pins.

A failed assertion is exit 1 (CheckFailed), naming the target and what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild import proc
from reprobuild.elf import ElfFile
from reprobuild.errors import CheckFailed


@dataclass(frozen=True)
class BuildInfo:
    go_version: str
    settings: dict[str, str] = field(default_factory=dict)
    deps: dict[str, str] = field(default_factory=dict)  # module path -> version


def read_buildinfo(go: Path, binary: Path) -> BuildInfo:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GOTOOLCHAIN": "local", "GOFLAGS": "",
           "GOENV": "off", "GOROOT": str(go.parent.parent)}
    done = proc.run([str(go), "version", "-m", str(binary)], env=env)
    return parse_buildinfo(done.stdout)


def parse_buildinfo(text: str) -> BuildInfo:
    lines = text.splitlines()
    if not lines:
        return BuildInfo("")
    go_version = lines[0].rsplit(": ", 1)[-1].strip()
    settings: dict[str, str] = {}
    deps: dict[str, str] = {}
    for line in lines[1:]:
        parts = line.strip().split("\t")
        if parts[0] == "build" and len(parts) >= 2:
            key, _, value = parts[1].partition("=")
            settings[key] = value
        elif parts[0] == "dep" and len(parts) >= 3:
            deps[parts[1]] = parts[2]
        elif parts[0] == "=>" and len(parts) >= 3 and deps:
            last = list(deps)[-1]
            deps[last] = f"{deps[last]} => {parts[1]} {parts[2]}"
    return BuildInfo(go_version, settings, deps)


def vendored_modules(module_dir: Path) -> dict[str, str]:
    """Module path -> version, from vendor/modules.txt."""
    path = module_dir / "vendor" / "modules.txt"
    result: dict[str, str] = {}
    if not path.exists():
        return result
    for line in path.read_text().splitlines():
        m = re.match(r"^# (\S+) (v\S+)(?: => (\S+)(?: (v\S+))?)?$", line)
        if m:
            result[m.group(1)] = m.group(2) + (f" => {m.group(3)} {m.group(4)}" if m.group(4) else "")
    return result


@dataclass(frozen=True)
class Expectation:
    target: str
    go_version: str
    cgo: bool
    vendored: dict[str, str]
    forbidden_paths: tuple[str, ...]
    keep_gnu_build_id: bool = False


def check_binary(binary: Path, go: Path, exp: Expectation) -> None:
    problems = binary_problems(binary, read_buildinfo(go, binary), exp)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise CheckFailed(f"target `{exp.target}`: {binary.name} failed its reproducibility assertions:\n{listed}")


def binary_problems(binary: Path, info: BuildInfo, exp: Expectation) -> list[str]:
    problems = []
    if info.go_version != f"go{exp.go_version}":
        problems.append(f"built with {info.go_version or 'an unknown Go'}, the lock pins go{exp.go_version}")
    if info.settings.get("-trimpath") != "true":
        problems.append("not built with -trimpath (build paths are embedded)")
    want_cgo = "1" if exp.cgo else "0"
    if info.settings.get("CGO_ENABLED") != want_cgo:
        problems.append(f"CGO_ENABLED={info.settings.get('CGO_ENABLED')}, the pipeline says cgo: {exp.cgo}")
    vcs = sorted(k for k in info.settings if k.startswith("vcs"))
    if vcs:
        problems.append(f"VCS stamping present ({', '.join(vcs)}); build with -buildvcs=false")
    for mod, version in info.deps.items():
        if mod not in exp.vendored:
            problems.append(f"dependency {mod} {version} is not in vendor/modules.txt")
        elif exp.vendored[mod].split(" ")[0] != version.split(" ")[0]:
            problems.append(f"dependency {mod} is {version} in the binary, {exp.vendored[mod]} in vendor/modules.txt")
    elf = ElfFile.open(binary)
    go_id = elf.note_descriptor(".note.go.buildid")
    if go_id:
        problems.append(f"Go build ID present ({go_id[:24].decode('ascii', 'replace')}...); link with -buildid=")
    if not exp.keep_gnu_build_id and elf.section(".note.gnu.build-id") is not None:
        problems.append("GNU build ID present (.note.gnu.build-id); link with -extldflags=-Wl,--build-id=none")
    for path in exp.forbidden_paths:
        if len(path) < 5:
            continue
        places = elf.find(path.encode())
        if places:
            problems.append(f"embeds the path {path} (in {', '.join(places[:5])})")
    return problems
