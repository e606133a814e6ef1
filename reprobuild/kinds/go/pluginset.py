"""Plugin sets: a host target and the `buildmode: plugin` targets that name it, checked after every build.

The pipeline parser already made the plugins take their host's toolchain, cgo, platforms and tags; this
runs `plugin-check` on the built files (host, then the plugins in pipeline order, as one process would open
them) and refuses the build (exit 1) when the host's plugin.Open would refuse one. The records it returns
go into the manifest (`plugin_sets`) and link each plugin to its host's digest in the provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reprobuild.build.manifest import Artifact
from reprobuild.config.pipeline import GoTarget, Pipeline
from reprobuild.errors import CheckFailed
from reprobuild.evidence.plugincheck import check
from reprobuild.kinds.go.builder import binary_name
from reprobuild.progress import say


def plugin_sets(pipeline: Pipeline) -> list[tuple[GoTarget, list[GoTarget]]]:
    """Each host target of the pipeline with its plugins, in pipeline order."""
    if pipeline.builder != "go":
        return []
    sets = []
    for host in pipeline.targets:
        plugins = [t for t in pipeline.targets if t.buildmode == "plugin" and t.host == host.name]
        if plugins:
            sets.append((host, plugins))
    return sets


def check_sets(pipelines: list[Pipeline], staging: Path, artifacts: list[Artifact]) -> list[dict[str, Any]]:
    """Check every plugin set the build wrote; one manifest record per set and platform.

    A set whose host or plugins this build did not write (another shard builds them) is skipped."""
    digests = {a.path: a.sha256 for a in artifacts}
    records: list[dict[str, Any]] = []
    for pipeline in pipelines:
        for host, plugins in plugin_sets(pipeline):
            for platform in host.platforms:
                host_rel = f"{pipeline.name}/{binary_name(host, platform)}"
                rels = [f"{pipeline.name}/{binary_name(p, platform)}" for p in plugins]
                if any(r not in digests for r in [host_rel, *rels]):
                    say(f"{pipeline.name}: plugin set of `{host.name}` ({platform}) not all in this build; "
                        "run `reprobuild plugin-check` on the merged output")
                    continue
                result = check(staging / host_rel, [staging / r for r in rels])
                if not result.ok:
                    raise CheckFailed(f"{pipeline.name}: the plugins of `{host.name}` ({platform}) would not load "
                                      f"in it:\n" + _indent(result.render_text()))
                say(f"{pipeline.name}: plugin-check: {host.name} loads {', '.join(p.name for p in plugins)} "
                    f"({platform})")
                records.append({
                    "pipeline": pipeline.name, "platform": platform, "go_version": result.host.go_version,
                    "host": {"path": host_rel, "sha256": digests[host_rel]},
                    "plugins": [{"path": r, "sha256": digests[r], "loads": v.loads, "packages": v.packages}
                                for r, v in zip(rels, result.verdicts, strict=True)]})
    return records


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
