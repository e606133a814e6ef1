"""`builder: command`: any build command, run in a copy of the source, writing to $OUT (like reprotest)."""

from __future__ import annotations

import fnmatch
import os

from reprobuild.backends import OUT, ImageRef, Mount, RunSpec
from reprobuild.build.manifest import list_files
from reprobuild.config.pipeline import Pipeline, source_date_epoch
from reprobuild.errors import CheckFailed
from reprobuild.kinds import BuildContext
from reprobuild.progress import say


def build(pipeline: Pipeline, ctx: BuildContext) -> None:
    assert pipeline.run is not None
    toolchain_root = None
    env = ctx.step_env(source_date_epoch(pipeline.source_date_epoch), {"OUT": OUT})
    if pipeline.toolchain:
        _, inst = ctx.toolchain_for(pipeline)
        toolchain_root = inst.tree
    image = ImageRef(pipeline.image, toolchain_root)
    ctx.ensure_image(image)
    out = ctx.staging / pipeline.name
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o777)
    src = ctx.perturb.src
    say(f"{pipeline.name}: running `{pipeline.run}` ({ctx.backend.name} backend)")
    spec = RunSpec(argv=("/bin/sh", "-c", pipeline.run), image=image, env=env,
                   mounts=(Mount(pipeline.source, src, read_only=False, copy=True), Mount(out, OUT, read_only=False)),
                   workdir=src, label=pipeline.name, perturb=ctx.perturb)
    result = ctx.run(spec)
    if result.returncode != 0:
        tail = "\n".join("    " + line for line in result.output.strip().splitlines()[-40:])
        raise CheckFailed(f"{pipeline.name}: `{pipeline.run}` failed (exit {result.returncode}):\n{tail}")
    kept = [rel for rel in list_files(out) if any(fnmatch.fnmatchcase(rel, g) for g in pipeline.artifacts)]
    for rel in list_files(out):
        if rel not in kept:
            (out / rel).unlink()
    if not kept:
        raise CheckFailed(f"{pipeline.name}: the command wrote no file matching {list(pipeline.artifacts)} in $OUT")
