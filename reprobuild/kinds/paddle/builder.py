"""`builder: paddle`: model exports, custom C++ operators and wheels, from the locked Paddle environment.

The pipeline's Paddle keys (`requirements`, `python`, `steps`) are parsed and validated when the pipeline
is loaded (reprobuild.config.paddle); this module runs the parsed steps.

The environment is installed once per lock content (and backend/image) into the reprobuild cache,
`<cache>/paddle-env/<key>/venv`, from the wheelhouse with the network off, and given to every step
of every build read-only at the one fixed path /tmp/reprobuild-pyenv/venv (backends.PYENV, the same
in every backend, never mapped): never reinstalled per step. Paddle writes the venv path into custom
operators' RUNPATH and their debug info names its headers, so outputs are the same bytes for every
user, checkout and backend only because the path is.

Each step writes under `<out>/<pipeline>/<step>/`; everything then goes through the shared
manifest / SHA256SUMS path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reprobuild.backends import CACHE, OUT, PYENV, EnvPolicy, ImageRef, Mount, RunSpec, hermetic_env
from reprobuild.config.model import Lock
from reprobuild.config.paddle import PaddleSpec, Step, parse_paddle
from reprobuild.config.pipeline import Pipeline, source_date_epoch
from reprobuild.errors import BadInput, CheckFailed, EnvironmentFailure, FileError, ReprobuildError
from reprobuild.formats.archives import normalize_modes
from reprobuild.fsutil import atomic_write_bytes, remove_tree, sha256_file
from reprobuild.kinds import BuildContext
from reprobuild.progress import say

ENV_ROOT = PYENV  # the environment directory, read-only in every step, at the same path in every backend
VENV = f"{ENV_ROOT}/venv"
PYTHON = f"{VENV}/bin/python"
WHEELHOUSE = CACHE  # mounted only while installing
IMAGE = "debian"  # python3, python3-venv, gcc, g++
ENV_FORMAT = 3  # bump to rebuild every cached environment


@dataclass(frozen=True)
class Env:
    """An installed environment: `root` on the host is what the steps see at ENV_ROOT."""

    name: str
    key: str
    root: Path
    lock_file: Path
    reused: bool


# --- the pipeline -------------------------------------------------------------------------------------

def parse_spec(pipeline: Pipeline) -> PaddleSpec:
    """The pipeline's Paddle keys, validated when it was loaded (reprobuild.config.paddle)."""
    if pipeline.paddle is not None:
        return pipeline.paddle
    return parse_paddle(pipeline.extra, pipeline.where, pipeline.source)


# --- the environment ----------------------------------------------------------------------------------

def locked_env(pipeline: Pipeline, spec: PaddleSpec, lock: Lock, repo_root: Path) -> tuple[Path, str]:
    """The requirements lock file the pipeline asks for and its sha256, checked against toolchains.lock."""
    from reprobuild.config.pylock import parse_python_section

    envs = parse_python_section(lock)
    env = envs.get(spec.requirements)
    if env is None:
        known = ", ".join(sorted(envs)) or "none"
        raise FileError(spec.requirements_where, f"{lock.path} has no python environment "
                        f"`{spec.requirements}` (environments: {known})",
                        f"add builders/{spec.requirements}/requirements.in and run `reprobuild lock`")
    if spec.python is not None and spec.python != env.python:
        raise FileError(spec.python_where or pipeline.where,
                        f"the pipeline wants Python {spec.python}, but `{env.name}` is locked for Python {env.python}",
                        "recompile the lock with that Python (`reprobuild lock`) or change `python`")
    lock_file = repo_root / env.lock_file
    if not lock_file.is_file() or sha256_file(lock_file) != env.lock_sha256:
        raise BadInput(f"{lock_file} is missing or changed since {lock.path} recorded it",
                       "run `reprobuild lock` (and commit both files)")
    return lock_file, env.lock_sha256


def env_installed(cache_root: Path, lock_sha256: str, backend: str) -> bool:
    """Some environment of this lock content is installed for this backend (the preflight then needs no
    wheelhouse: the environment is reused, unless its builder image changed since)."""
    for marker in (cache_root / "paddle-env").glob("*/complete.json"):
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("lock_sha256") == lock_sha256 and record.get("backend") == backend:
            return True
    return False


def env_key(lock_sha256: str, backend: str, image_id: str) -> str:
    data = {"format": ENV_FORMAT, "lock": lock_sha256, "backend": backend, "image": image_id}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def ensure_env(pipeline: Pipeline, spec: PaddleSpec, ctx: BuildContext) -> Env:
    """Install the locked environment once (per lock content, backend and image); reuse it afterwards."""
    from filelock import FileLock

    from reprobuild.toolchains import wheelhouse

    lock_file, lock_sha = locked_env(pipeline, spec, ctx.lock, ctx.repo_root)
    image = ImageRef(IMAGE)
    image_id = ctx.ensure_image(image)
    key = env_key(lock_sha, ctx.backend.name, image_id)
    base = ctx.cache.root / "paddle-env"
    root = base / key
    marker = root / "complete.json"
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{key}.lock")):
        if marker.exists():
            return Env(spec.requirements, key, root, lock_file, reused=True)
        wh = wheelhouse.ensure_wheelhouse(
            lock_file, wheelhouse.default_wheelhouse(ctx.cache.root, spec.requirements, lock_sha), ctx.cache.offline)
        if root.exists():
            remove_tree(root)  # an install that was interrupted
        root.mkdir(parents=True)
        os.chmod(root, 0o755)
        shutil.copyfile(lock_file, root / "requirements.lock")
        say(f"{pipeline.name}: installing the locked `{spec.requirements}` environment "
            f"({ctx.backend.name} backend, network off)")
        env = _env_vars(source_date_epoch(pipeline.source_date_epoch))
        mounts = (Mount(root, ENV_ROOT, read_only=False), Mount(wh, WHEELHOUSE))
        for label, argv in (
            ("venv", ("python3", "-m", "venv", VENV)),
            ("install", (PYTHON, "-m", "pip", "install", "--no-index", "--find-links", WHEELHOUSE,
                         "--require-hashes", "--only-binary=:all:", "--no-deps",
                         "-r", f"{ENV_ROOT}/requirements.lock")),  # .pyc written once: every step imports fast
            ("check", (PYTHON, "-c", "import zlib, numpy, paddle; print('paddle', paddle.__version__, "
                                     "'numpy', numpy.__version__)")),
        ):
            _run(ctx, RunSpec(argv=argv, image=image, env=env, mounts=mounts, workdir=ENV_ROOT,
                              label=f"{pipeline.name}/env {label}"), f"installing the environment ({label})",
                 EnvironmentFailure)
        normalize_modes(root)  # 0755/0644 whatever the caller's umask: a container's build user reads it all
        record = {"key": key, "lock_sha256": lock_sha, "backend": ctx.backend.name, "image": image_id}
        atomic_write_bytes(marker, json.dumps(record, indent=2, sort_keys=True).encode())
        return Env(spec.requirements, key, root, lock_file, reused=False)


def _harness_dir(env: Env) -> str:
    """The harness (and the pdmodel module it uses) copied into the environment, content-addressed."""
    from reprobuild.formats import pdmodel
    from reprobuild.kinds.paddle import harness as paddle_harness

    files = {"paddle_harness.py": Path(paddle_harness.__file__), "pdmodel.py": Path(pdmodel.__file__)}
    digest = hashlib.sha256(b"".join(p.read_bytes() for _, p in sorted(files.items()))).hexdigest()[:16]
    target = env.root / "harness" / digest
    if not target.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=env.root))
        for name, path in files.items():
            shutil.copyfile(path, tmp / name)
        normalize_modes(tmp)  # not the caller's umask: the steps' build user reads it
        (env.root / "harness").mkdir(exist_ok=True)
        os.chmod(env.root / "harness", 0o755)
        try:
            tmp.rename(target)
        except OSError:  # another build put it there first
            remove_tree(tmp)
    return f"{ENV_ROOT}/harness/{digest}"


def _env_vars(sde: int) -> dict[str, str]:
    """The hermetic environment plus what every Paddle step needs."""
    env = hermetic_env(EnvPolicy(sde))
    env.update(PADDLE_ENV)
    return env


PADDLE_ENV = {
    "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": VENV,
    "PYTHONDONTWRITEBYTECODE": "1",  # never write __pycache__ into the (possibly read-only) source
    "PYTHONHASHSEED": "0",
    "PIP_CONFIG_FILE": os.devnull,  # the machine's pip configuration stays out of the build
    "PIP_NO_INDEX": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "OMP_NUM_THREADS": "1",
    "GLOG_minloglevel": "2",
    "CC": "gcc",
    "CXX": "g++",
}


def step_env(ctx: BuildContext, sde: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A step's environment: hermetic, the Paddle variables, the step's own, then verify's variation."""
    return ctx.step_env(sde, {**PADDLE_ENV, **(extra or {})})


# --- steps --------------------------------------------------------------------------------------------

def build(pipeline: Pipeline, ctx: BuildContext) -> None:
    spec = parse_spec(pipeline)  # before installing anything
    env = ensure_env(pipeline, spec, ctx)
    say(f"{pipeline.name}: {'reusing' if env.reused else 'installed'} environment {env.key}")
    ctx.toolchains[f"python/{spec.requirements}"] = {
        "entry": spec.requirements, "lock_file": str(env.lock_file.relative_to(ctx.repo_root)),
        "lock_sha256": sha256_file(env.lock_file), "environment": env.key}
    sde = source_date_epoch(pipeline.source_date_epoch)
    out = ctx.staging / pipeline.name
    out.mkdir(parents=True, exist_ok=True)
    for step in spec.steps:
        step_out = out / step.name
        step_out.mkdir(parents=True, exist_ok=True)
        os.chmod(step_out, 0o777)  # the build runs as an unprivileged user; the backend hands files back
        STEPS[step.kind](pipeline, step, env, ctx, sde, step_out)
        if not any(step_out.rglob("*")):
            raise CheckFailed(f"{pipeline.name}: step `{step.name}` wrote nothing")


def _export(pipeline: Pipeline, step: Step, env: Env, ctx: BuildContext, sde: int, out: Path) -> None:
    from reprobuild.formats.pdmodel import count_attrs

    harness = _harness_dir(env)
    src = ctx.perturb.src
    argv = (PYTHON, f"{harness}/paddle_harness.py", "export", "--script", f"{src}/{step.path}", "--out", OUT,
            "--prefix", step.prefix, "--seed", str(step.seed), "--", *step.args)
    say(f"{pipeline.name}: exporting `{step.name}` ({step.path})")
    _run(ctx, RunSpec(argv=argv, image=ImageRef(IMAGE), env=step_env(ctx, sde),
                      mounts=(Mount(pipeline.source, src), Mount(out, OUT, read_only=False),
                              Mount(env.root, ENV_ROOT)),
                      workdir=src, label=f"{pipeline.name}/{step.name}", perturb=ctx.perturb),
         f"step `{step.name}` (export)")
    for model in out.rglob("*.pdmodel"):
        if count_attrs(model.read_bytes(), "op_callstack"):
            raise CheckFailed(f"{pipeline.name}: {model.name} still carries op_callstack attributes")


# Runs in the step's private copy of the operator's directory: the wheel goes straight to $OUT, and the
# built library next to it (setup.py leaves it under build/). umask 022: the wheel records file modes.
_CUSTOM_OP = """\
import glob, os, shutil, subprocess, sys
os.umask(0o022)
out = sys.argv[1]
subprocess.run([sys.executable, "setup.py", "--quiet", "bdist_wheel", "--dist-dir", out], check=True)
libraries = sorted(glob.glob("build/**/*.so", recursive=True))
for library in libraries:
    shutil.copyfile(library, out + "/" + library.rsplit("/", 1)[-1])
print("custom_op: built", ", ".join(libraries) or "no library")
"""


def _custom_op(pipeline: Pipeline, step: Step, env: Env, ctx: BuildContext, sde: int, out: Path) -> None:
    # Source and build paths are mapped to `.` (-ffile-prefix-map covers __FILE__ and debug info; setuptools
    # passes CFLAGS to C++ too), and no GNU build ID. The venv path stays in RUNPATH: it is fixed (PYENV).
    src = ctx.perturb.src
    extra = {"CFLAGS": f"-ffile-prefix-map={src}=.", "LDFLAGS": "-Wl,--build-id=none"}
    say(f"{pipeline.name}: building custom operator `{step.name}` ({step.path})")
    _run(ctx, RunSpec(argv=(PYTHON, "-c", _CUSTOM_OP, OUT), image=ImageRef(IMAGE), env=step_env(ctx, sde, extra),
                      mounts=(Mount(pipeline.source / step.path, src, read_only=False, copy=True),
                              Mount(out, OUT, read_only=False), Mount(env.root, ENV_ROOT)),
                      workdir=src, label=f"{pipeline.name}/{step.name}", perturb=ctx.perturb),
         f"step `{step.name}` (custom_op)")
    libraries, wheels = sorted(out.glob("*.so")), sorted(out.glob("*.whl"))
    if not libraries or not wheels:
        raise CheckFailed(f"{pipeline.name}: step `{step.name}` made no .so or no wheel "
                          f"({len(libraries)} libraries, {len(wheels)} wheels)")
    _check_library(out, pipeline, step)


def _check_library(out: Path, pipeline: Pipeline, step: Step) -> None:
    from reprobuild.formats.elf import ElfFile

    for lib in out.glob("*.so"):
        if ElfFile.open(lib).section(".note.gnu.build-id") is not None:
            raise CheckFailed(f"{pipeline.name}: step `{step.name}`: {lib.name} has a GNU build ID "
                              "(LDFLAGS=-Wl,--build-id=none did not reach the link)")


def _wheel(pipeline: Pipeline, step: Step, env: Env, ctx: BuildContext, sde: int, out: Path) -> None:
    from reprobuild.formats.archives import normalize_tar_gz

    # PEP 517 hooks of the locked setuptools, called directly: no build isolation, no index, no pip temp dirs.
    # (setuptools rewrites sys.argv inside the hooks: read the arguments first.)
    hooks = ("import os, sys; os.umask(0o022); out, sdist = sys.argv[1], sys.argv[2] == '1'; "
             "import setuptools.build_meta as b; print(b.build_wheel(out)); "
             "print(b.build_sdist(out)) if sdist else None")
    src = ctx.perturb.src
    say(f"{pipeline.name}: building the wheel of `{step.name}` ({step.path})")
    _run(ctx, RunSpec(argv=(PYTHON, "-c", hooks, OUT, "1" if step.sdist else "0"), image=ImageRef(IMAGE),
                      env=step_env(ctx, sde),
                      mounts=(Mount(pipeline.source / step.path, src, read_only=False, copy=True),
                              Mount(out, OUT, read_only=False), Mount(env.root, ENV_ROOT)),
                      workdir=src, label=f"{pipeline.name}/{step.name}", perturb=ctx.perturb),
         f"step `{step.name}` (wheel)")
    for sdist in out.glob("*.tar.gz"):
        normalize_tar_gz(sdist, sde)  # setuptools sdists ignore SOURCE_DATE_EPOCH
    if not list(out.glob("*.whl")):
        raise CheckFailed(f"{pipeline.name}: step `{step.name}` made no wheel")


STEPS: dict[str, Callable[[Pipeline, Step, Env, BuildContext, int, Path], None]] = {
    "export": _export, "custom_op": _custom_op, "wheel": _wheel}


# Failures whose cause is the builder image, not the user's code: (text in the output, what to do).
_IMAGE_HINTS = (
    ("Python.h: No such file", "the builder image lacks the Python headers that Paddle's extension.h includes "
                               "(pybind11): add `python3-dev` to builders/debian/image.yaml and `reprobuild lock`"),
    ("No module named venv", "the builder image lacks python3-venv"),
)


def step_log(ctx: BuildContext, label: str) -> Path:
    """Where a step's build-tool output goes (setup.py and pip say ~130 lines per build): one file per step
    in the cache (its latest run), named in the progress line and in the error when the step fails."""
    return ctx.cache.root / "logs" / f"{label.replace('/', '-').replace(' ', '-')}.log"


def _run(ctx: BuildContext, spec: RunSpec, what: str, error: type[ReprobuildError] = CheckFailed) -> None:
    log = step_log(ctx, spec.label)
    result = ctx.run(spec, log=log)
    if result.returncode != 0:
        tail = "\n".join("    " + line for line in result.output.strip().splitlines()[-40:])
        hint = next((h for needle, h in _IMAGE_HINTS if needle in result.output), None)
        shown = f" (the whole output: {log})" if log.exists() else ""
        raise error(f"{spec.label}: {what} failed (exit {result.returncode}){shown}:\n{tail}", hint)
