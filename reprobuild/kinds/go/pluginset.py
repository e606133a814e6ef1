"""Plugin sets: a host target and the `buildmode: plugin` targets that name it, checked after every build.

The pipeline parser already made the plugins take their host's toolchain, cgo, platforms and tags. The plan
of the sets (which file is whose host) is pure, so every shard of a build records the same one in its
manifest (`plugin_sets`) and the merge of the shards equals the unsharded build. `check` runs `plugin-check`
on the built files (the host, then its plugins in pipeline order, as one process opens them) and refuses the
build (exit 1) when the host's plugin.Open would refuse one; a shard that lacks part of a set leaves its
check to the merge. The provenance names each plugin's host digest (`provenance.link_plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprobuild.config.pipeline import Pipeline
from reprobuild.errors import CheckFailed
from reprobuild.evidence.plugincheck import check as plugin_check
from reprobuild.kinds.go.builder import binary_name
from reprobuild.progress import say


def plan(pipelines: list[Pipeline]) -> list[dict[str, Any]]:
    """One record per host target with plugins and per platform: the host's path and its plugins' paths
    (relative to the output dir), in pipeline order."""
    records: list[dict[str, Any]] = []
    for pipeline in pipelines:
        if pipeline.builder != "go":
            continue
        for host in pipeline.targets:
            plugins = [t for t in pipeline.targets if t.buildmode == "plugin" and t.host == host.name]
            for platform in host.platforms if plugins else ():
                records.append({"pipeline": pipeline.name, "platform": platform,
                                "host": f"{pipeline.name}/{binary_name(host, platform)}",
                                "plugins": [f"{pipeline.name}/{binary_name(p, platform)}" for p in plugins]})
    return records


def check(records: list[dict[str, Any]], locate: Callable[[str], Path | None]) -> int:
    """plugin-check each recorded set whose files `locate` finds; returns how many sets were checked."""
    checked = 0
    for rec in records:
        files = [locate(rel) for rel in [rec["host"], *rec["plugins"]]]
        where = f"{rec['pipeline']}: the plugins of {rec['host']}"
        present = [f for f in files if f is not None]
        if len(present) != len(files):
            say(f"{where}: not all built here; the merge checks them")
            continue
        result = plugin_check(present[0], present[1:])
        if not result.ok:
            raise CheckFailed(f"{where} would not load in it:\n" + _indent(result.render_text()))
        say(f"{where}: plugin-check: all {len(rec['plugins'])} load ({result.host.go_version})")
        checked += 1
    return checked


def in_dir(root: Path) -> Callable[[str], Path | None]:
    """Find recorded paths under an output directory."""
    def locate(rel: str) -> Path | None:
        path = root / rel
        return path if path.is_file() else None
    return locate


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
