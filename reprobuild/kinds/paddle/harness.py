"""The Paddle export harness: runs a user's export script so that its output is reproducible, unchanged.

It runs *inside* the build (the locked Paddle venv's Python), so it imports nothing from reprobuild
except `pdmodel`, which the Paddle builder mounts beside it (both are plain, dependency-free files):

    python paddle_harness.py export --script SCRIPT --out DIR [--prefix NAME] [--seed N] [-- ARGS...]

1. `import zlib` before Paddle: libpaddle.so carries zlib symbols that clash with the system libz
   (a segfault in inflateReset2 when zlib is first loaded after Paddle).
2. Seeds fixed (`random`, `numpy`, `paddle`): initial weights are the same every run.
3. The script runs inside a fresh `paddle.utils.unique_name.guard()`, so parameter names
   (`linear_0.w_0`, ...) do not depend on what ran before in the process.
4. The script gets `sys.argv = [SCRIPT, DIR/NAME, *ARGS]` and saves there (`paddle.jit.save` or
   `paddle.static.save_inference_model`).
5. Afterwards every `.pdmodel` under DIR loses its `op_callstack` attributes (absolute paths and Python
   stacks), which the executor never reads: what the model computes is unchanged; and every
   `.pdiparams.info` (a pickled dict, parameter name -> attributes, whose order follows a set of
   parameter objects, i.e. memory addresses) is written again with its keys sorted.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import random
import runpy
import sys
import zlib  # noqa: F401  (must come before paddle; see the docstring)
from pathlib import Path

try:
    from reprobuild.formats.pdmodel import count_attrs, strip_op_callstack
except ImportError:  # inside the build: pdmodel.py is mounted next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pdmodel import count_attrs, strip_op_callstack  # type: ignore[no-redef,import-not-found]
    sys.path.pop(0)

MODEL_SUFFIXES = (".pdmodel", ".pdiparams", ".pdiparams.info")


def fix_seeds(seed: int) -> None:
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def check_numpy() -> None:
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise SystemExit(f"harness: numpy {np.__version__} is installed; Paddle 2.6 needs numpy<2 (see the lock)")


def run_export(script: Path, out: Path, prefix: str, seed: int, args: list[str]) -> list[Path]:
    """Run the user's script reproducibly and clean the programs it saved; returns the model files."""
    import paddle

    check_numpy()
    out.mkdir(parents=True, exist_ok=True)
    paddle.set_device("cpu")
    fix_seeds(seed)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), str(out / prefix), *args]
    sys.path.insert(0, str(script.parent))
    try:
        with paddle.utils.unique_name.guard():
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return clean_outputs(out)


class _PlainUnpickler(pickle.Unpickler):
    """Only plain data (dicts, strings, numbers, booleans): a .pdiparams.info never holds anything else."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"a .pdiparams.info should hold only plain data, not {module}.{name}")


def sort_params_info(data: bytes) -> bytes:
    """The `.pdiparams.info` pickle with its parameters in name order (Paddle writes protocol 2)."""
    info = _PlainUnpickler(io.BytesIO(data)).load()
    if not isinstance(info, dict):
        raise SystemExit("harness: a .pdiparams.info is not a dict")
    return pickle.dumps({k: info[k] for k in sorted(info)}, protocol=2)


def clean_outputs(out: Path) -> list[Path]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name.endswith(MODEL_SUFFIXES))
    if not any(p.suffix == ".pdmodel" for p in files):
        raise SystemExit(f"harness: the export script saved no .pdmodel under {out}")
    for path in files:
        if path.suffix == ".pdmodel":
            data = strip_op_callstack(path.read_bytes())
            assert count_attrs(data, "op_callstack") == 0
            path.write_bytes(data)
        elif path.name.endswith(".pdiparams.info"):
            path.write_bytes(sort_params_info(path.read_bytes()))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paddle_harness")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="run an export script reproducibly")
    exp.add_argument("--script", type=Path, required=True)
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--prefix", default="inference")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    files = run_export(ns.script, ns.out, ns.prefix, ns.seed, ns.args)
    for path in files:
        print(f"harness: wrote {path.relative_to(ns.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
