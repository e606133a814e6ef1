"""The module files Go writes: go.mod (read through `go mod edit -json`), go.sum and vendor/modules.txt.

One reader each, shared by vendoring (`reprobuild vendor`) and the Go builder's assertions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprobuild import proc
from reprobuild.errors import FileError, Location

_MODULE_LINE = re.compile(r"^# (\S+)(?: (\S+))?(?: => (\S+)(?: (\S+))?)?$")
_MISMATCH = re.compile(r"verifying (\S+?)@(\S+?)(/go\.mod)?: checksum mismatch\s*\n\s*downloaded:\s*(\S+)\s*\n"
                       r"\s*go\.sum:\s*(\S+)")
_MALFORMED = re.compile(r"go\.sum:(\d+): ")


# --- go.mod ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Requirement:
    path: str
    version: str
    indirect: bool = False

    def __str__(self) -> str:
        return f"{self.path} {self.version}"


@dataclass(frozen=True)
class GoMod:
    """What `go mod edit -json` says a go.mod holds (the parts reprobuild looks at)."""

    module: str
    go: str | None
    toolchain: str | None
    requires: tuple[Requirement, ...]


def read_go_mod(go: Path, gomod: Path, env: Mapping[str, str]) -> GoMod:
    """go.mod as the Go command itself parses it (`go mod edit -json FILE`); a missing file is an empty module."""
    if not gomod.is_file():
        return GoMod("", None, None, ())
    done = proc.run([str(go), "mod", "edit", "-json", str(gomod)], env=env, cwd=gomod.parent, check=False)
    if done.returncode != 0:
        raise FileError(Location(gomod, 1), f"go mod edit cannot read it: {done.stderr.strip() or done.stdout.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)
    requires = tuple(Requirement(r["Path"], r["Version"], bool(r.get("Indirect"))) for r in data.get("Require") or ())
    return GoMod((data.get("Module") or {}).get("Path", ""), data.get("Go"), data.get("Toolchain"), requires)


# --- vendor/modules.txt ----------------------------------------------------------------------

@dataclass(frozen=True)
class VendoredModule:
    """One `# path version [=> replacement [version]]` block of vendor/modules.txt."""

    path: str
    version: str
    packages: tuple[str, ...]
    source_path: str  # where the files come from: the replacement's path when replaced
    source_version: str  # "" for a directory replacement

    @property
    def replaced(self) -> bool:
        return (self.source_path, self.source_version) != (self.path, self.version)


def read_modules_txt(path: Path) -> list[VendoredModule]:
    """Every module block of a vendor/modules.txt, in file order; [] when there is none."""
    if not path.is_file():
        return []
    result: list[VendoredModule] = []
    cur: list[Any] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            if cur:
                result.append(VendoredModule(cur[0], cur[1], tuple(cur[2]), cur[3], cur[4]))
            m = _MODULE_LINE.match(line)
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


def vendored_versions(module_dir: Path) -> dict[str, str]:
    """Module path -> `version` (or `version => replacement version`), from the module's vendor/modules.txt.

    Replacements without a version on the left (`# path => dir`, Go records them for go.mod's replace
    lines) select no version and are left out.
    """
    return {m.path: m.version + (f" => {m.source_path} {m.source_version}" if m.replaced and m.source_version
                                 else "")
            for m in read_modules_txt(module_dir / "vendor" / "modules.txt") if m.version}


# --- go.sum ----------------------------------------------------------------------------------

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


def bad_go_sum_line(stderr: str, gosum: Path) -> tuple[int, str] | None:
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
