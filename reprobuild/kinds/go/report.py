"""What `reprobuild vendor` found: the drift between the tree and Go's output, and what pruning did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reprobuild.kinds.go.prune import ModulePruning


@dataclass(frozen=True)
class Drift:
    """One file where the tree differs from what `go mod tidy && go mod vendor` produce."""

    path: str  # relative to the module directory: go.mod, go.sum, vendor/...
    # missing (the tree lacks it) | extra (go would not write it) | changed | checksum; and from the offline
    # check: inconsistent (go.mod, go.sum and modules.txt disagree) | modified | unrecorded (vs the digests)
    kind: str
    detail: str  # a unified diff or a sentence

    def describe(self) -> str:
        what = {"missing": "missing from the tree (go mod vendor writes it)",
                "extra": "in the tree but not written by go mod tidy/vendor (stale or added by hand)",
                "changed": "differs from what go mod tidy/vendor write",
                "checksum": "records a checksum the module does not have",
                "inconsistent": "inconsistent",
                "modified": "differs from the digest `reprobuild vendor` recorded",
                "unrecorded": "is not among the files `reprobuild vendor` recorded"}[self.kind]
        if self.detail and "\n" not in self.detail and self.kind not in ("changed", "checksum"):
            return f"{self.path}: {what}: {self.detail}"  # a sentence; diffs are shown after the list
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
    # Which checks ran (check mode): the offline consistency check, and/or the full re-vendor check.
    level: str = ""

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
            "drift": [asdict(d) for d in self.drift], "level": self.level,
        }

    def summary(self) -> str:
        """The human report: pruning table, warnings, then the drift with its diffs."""
        lines = [f"{self.module_dir}: go {self.go_version}, GOPROXY {self.goproxy}"]
        if self.level:
            lines.append(f"  checked: {self.level}")
        for m in self.modules:
            lines.append(f"  {m.path} {m.version}: {len(m.packages)} package(s) kept, "
                         f"{m.files_kept}/{m.files_in_zip} files, {m.files_dropped} dropped "
                         f"({_reasons(m.dropped)}), {_size(m.bytes_saved)} saved")
        if self.modules or not self.level.startswith("offline"):
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
                    if "\n" in d.detail or d.kind in ("changed", "checksum"):
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
