"""Builder kinds, one module each, in one table: each says *what* to run; backends say *where*."""

from __future__ import annotations

import logging
import os
import shlex
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from reprobuild.backends import Backend, EnvPolicy, ImageRef, Perturbation, RunResult, RunSpec, hermetic_env
from reprobuild.build.parallel import KeyedLocks
from reprobuild.config.model import Lock, Toolchain
from reprobuild.config.pipeline import Pipeline
from reprobuild.progress import say
from reprobuild.toolchains.cache import Installed, ToolchainCache

step_log = logging.getLogger("reprobuild.step")


@dataclass
class BuildContext:
    lock: Lock
    overrides: dict[str, str]
    backend: Backend
    cache: ToolchainCache
    staging: Path  # the output dir being written; each pipeline writes under staging/<pipeline name>
    repo_root: Path
    toolchains: dict[str, dict[str, Any]] = field(default_factory=dict)  # for the manifest
    images: dict[str, str] = field(default_factory=dict)  # image name -> ID, for the manifest
    perturb: Perturbation = field(default_factory=Perturbation)  # what `verify` varies (nothing by default)
    cleanup: list[Path] = field(default_factory=list)  # temporary dirs removed when the build ends
    # Variations some step could not apply: variation -> step label -> why.
    unapplied: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: int = 1  # steps that may run at once (units, a Go target's platforms)
    serial: KeyedLocks = field(default_factory=KeyedLocks)  # steps of one key run one at a time (shared by units)
    # verify's `cache` variation: an empty directory the build's caches start from, shared by its units
    # (a fresh CI runner's cold cache is cold once per build, not once per target).
    cold_cache: Path | None = None
    builders_dir: Path | None = None  # the image descriptions, for a backend that builds images
    image_specs: dict[str, Any] = field(default_factory=dict)  # name -> ImageSpec, read once (shared by units)

    def image(self, image: ImageRef) -> ImageRef:
        """The image with its description (`builders/<name>/image.yaml`, read once per build) when the
        backend makes its images: the backend gets it as an argument and never reads the repository."""
        if not self.backend.builds_images or image.spec is not None:
            return image
        from reprobuild.backends.images.spec import default_builders_dir, load_spec

        if image.name not in self.image_specs:  # two threads may both read it: the first copy is kept
            where = self.builders_dir or default_builders_dir(Path(self.lock.path))
            self.image_specs.setdefault(image.name, load_spec(where, image.name))
        return replace(image, spec=self.image_specs[image.name])

    def ensure_image(self, image: ImageRef) -> str:
        """Make sure the backend has the image; its ID is recorded for the manifest."""
        image_id = self.backend.ensure_image(self.image(image))
        self.images[image.name] = image_id
        return image_id

    def run(self, spec: RunSpec, log: Path | None = None) -> RunResult:
        """Run one step on the backend, its output shown as progress; note what it could not vary.

        With `log`, the output (build-tool chatter) goes to that file instead, and is shown only with -v;
        the caller shows it when the step fails. Safe to call from several threads: with more than one job,
        each line names its step.
        """
        prefix = f"  [{spec.label}] " if self.jobs > 1 else "  "
        spec = replace(spec, image=self.image(spec.image))
        if step_log.isEnabledFor(logging.DEBUG):  # -v: what the step runs and sees, to reproduce it by hand
            step_log.debug("step %s (%s backend, image %s): in %s: %s\n%s", spec.label, self.backend.name,
                           spec.image.name, spec.workdir, shlex.join(spec.argv),
                           "\n".join(f"    {k}={shlex.quote(v)}" for k, v in sorted(spec.env.items())))
        if log is None or logging.getLogger().isEnabledFor(logging.DEBUG):
            result = self.backend.run(spec, on_line=lambda line: say(prefix + line))
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            partial = log.with_name(f".{log.name}.{os.getpid()}.{threading.get_ident()}")
            with partial.open("w", encoding="utf-8", errors="replace") as f:
                def write(line: str) -> None:
                    f.write(line + "\n")

                try:
                    result = self.backend.run(spec, on_line=write)
                finally:
                    f.close()
                    os.replace(partial, log)  # the step's latest run, never two runs interleaved
            lines = len(result.output.splitlines())
            say(f"  [{spec.label}] {lines} line(s) of build output in {log} (shown with -v)")
        for name, why in result.unapplied.items():
            self.unapplied.setdefault(name, {})[spec.label] = why
        return result

    def step_env(self, source_date_epoch: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The hermetic environment of a step, then the step's own variables, then verify's variation."""
        env = hermetic_env(EnvPolicy(source_date_epoch))
        env.update(extra or {})
        env.update(self.perturb.env)
        if self.perturb.exec_path:
            env["PATH"] = f"{env['PATH']}:{self.perturb.exec_path}"
        return env

    def entry_for(self, pipeline: Pipeline) -> tuple[str, Toolchain]:
        """The lock entry a pipeline asks for, after `--toolchain NAME=ENTRY` substitution."""
        assert pipeline.toolchain is not None
        entry = self.overrides.get(pipeline.toolchain, pipeline.toolchain)
        return entry, self.lock.toolchain(entry)

    def toolchain_for(self, pipeline: Pipeline) -> tuple[Toolchain, Installed]:
        """The substituted lock entry, installed (fetched first when needed)."""
        assert pipeline.toolchain is not None
        entry, tc = self.entry_for(pipeline)
        inst = self.cache.ensure(tc)
        pin = ToolchainCache.pin_for(tc)
        self.toolchains[pipeline.toolchain] = {
            "entry": entry, "substituted": entry != pipeline.toolchain, "version": tc.version,
            "source": tc.source, "platform": pin.platform,
            "files": [{"name": f.name, "sha256": f.sha256} for f in pin.files]}
        return tc, inst


class Kind(Protocol):
    def build(self, pipeline: Pipeline, ctx: BuildContext) -> None:
        """Write the pipeline's artifacts under ctx.staging / pipeline.name."""
        ...


def kind_for(builder: str) -> Kind:
    from reprobuild.kinds import command
    from reprobuild.kinds.go import builder as go
    from reprobuild.kinds.paddle import builder as paddle

    table: dict[str, Kind] = {"go": go, "command": command, "paddle": paddle}
    if builder not in table:
        from reprobuild.errors import NotAvailableYet

        raise NotAvailableYet(f"build (builder `{builder}`)")
    return table[builder]
