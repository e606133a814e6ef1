"""`builder: command`: any build command, run in a copy of the source, writing to $OUT (like reprotest);
then the container images its `container_images:` make of the artifacts kept (build/image.py)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from reprobuild.backends import OUT, ImageRef, Mount, RunSpec
from reprobuild.build.manifest import list_files
from reprobuild.config.image import ArtifactImage
from reprobuild.config.pipeline import Pipeline, source_date_epoch
from reprobuild.errors import CheckFailed, FileError, Location
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
    for container in pipeline.container_images:
        _image(pipeline, container, ctx, out, kept)


def _image(pipeline: Pipeline, image: ArtifactImage, ctx: BuildContext, out: Path, kept: list[str]) -> None:
    """One container image of the artifacts just kept (no engine involved), beside them in OUT/<pipeline>/."""
    from reprobuild.build import image as assembly

    where = Location(pipeline.file, image.line)
    clash = [rel for rel in kept if any(rel == o or rel.startswith(o + "/") for o in image.outputs())]
    if clash:
        raise FileError(where, f"container image `{image.name}`: the command wrote `{clash[0]}`, where the image "
                               "goes", "rename the image or the command's output")
    bases = assembly.bases_for(image.spec, (image.platform,), ctx, where)
    revision = assembly.git_revision(ctx.repo_root) if image.spec.revision else None
    job = assembly.plan_artifact_job(image, out, pipeline.source, bases, pipeline.version,
                                     source_date_epoch(pipeline.source_date_epoch), revision, where)
    say(f"{pipeline.name}: image {image.name} for {image.platform}")
    layout = assembly.assemble(job, out, (ctx.cold_cache or ctx.cache.root) / "layers")
    say(f"{pipeline.name}: image {image.name} {layout.top.digest}")
