"""The custom ReLU operator (custom_op/relu_op.cc), built by `paddle.utils.cpp_extension`.

The custom_op step makes `custom_relu.so` (and a wheel that installs it into site-packages).
`load_custom_relu()` registers the operator with Paddle and returns a module whose `custom_relu(x)`
runs the C++ forward and backward kernels.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

LIBRARY = "custom_relu.so"
_loaded: dict[str, ModuleType] = {}


def find_library() -> Path:
    """`$CUSTOM_RELU_LIBRARY`, else `custom_relu.so` on sys.path (where its wheel installs it)."""
    explicit = os.environ.get("CUSTOM_RELU_LIBRARY")
    if explicit:
        return Path(explicit)
    for entry in sys.path:
        candidate = Path(entry or ".") / LIBRARY
        if candidate.is_file():
            return candidate
    raise ImportError(f"{LIBRARY} is not installed: build custom_op/ (`reprobuild build pipelines/paddle-model.yaml`)"
                      " and install its wheel, or set CUSTOM_RELU_LIBRARY")


def load_custom_relu(library: Path | None = None) -> ModuleType:
    """Register the operator from the built library (once per process) and return its Python API."""
    from paddle.utils.cpp_extension.extension_utils import (
        _generate_python_module,
        load_op_meta_info_and_register_op,
    )

    path = str((library or find_library()).resolve())
    if path not in _loaded:
        op_names = load_op_meta_info_and_register_op(path)
        # Paddle writes the generated Python API next to the library; site-packages may be read-only.
        _loaded[path] = _generate_python_module("custom_relu", op_names, tempfile.mkdtemp(prefix="custom_relu-"))
    return _loaded[path]


def custom_relu(x: Any) -> Any:
    return load_custom_relu().custom_relu(x)
