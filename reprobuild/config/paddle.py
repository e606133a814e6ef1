"""The keys of a `builder: paddle` pipeline, validated when the pipeline is loaded (file:line, did-you-mean).

    requirements: paddle          # an environment of the lock's `python` section (builders/paddle/requirements.in)
    python: "3.11"                # optional: refuse a lock compiled for another Python
    steps:
      - {name: model, kind: export, script: export.py, prefix: inference}
      - {name: custom-relu, kind: custom_op, path: custom_op}
      - {name: package, kind: wheel, path: ., sdist: true}

Validated here, so `doctor` and `build` refuse a bad Paddle pipeline before any work; the Paddle builder
(reprobuild.kinds.paddle) only runs the parsed steps.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reprobuild.config.yamlload import Fields, Node
from reprobuild.errors import FileError, Location

PIPELINE_KEYS = frozenset({"toolchain", "requirements", "steps", "python"})
STEP_KINDS = ("export", "custom_op", "wheel")
STEP_KEYS = {
    "export": frozenset({"name", "kind", "script", "prefix", "seed", "args"}),
    "custom_op": frozenset({"name", "kind", "path"}),
    "wheel": frozenset({"name", "kind", "path", "sdist"}),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    line: int
    path: str = "."  # custom_op/wheel: directory under the source; export: the script
    prefix: str = "inference"
    seed: int = 0
    args: tuple[str, ...] = ()
    sdist: bool = False


@dataclass(frozen=True)
class PaddleSpec:
    requirements: str
    python: str | None
    steps: tuple[Step, ...]
    requirements_where: Location  # the `requirements` key, else the pipeline
    python_where: Location | None = None


def parse_paddle(keys: Mapping[str, object], where: Location, source: Path) -> PaddleSpec:
    """The pipeline's Paddle keys (positioned nodes, as the pipeline loader keeps them), validated with file:line.

    `source` is the pipeline's source directory: scripts and step directories must exist under it.
    """
    if "toolchain" in keys:
        raise _node(keys["toolchain"]).error(
            "a paddle pipeline takes no `toolchain`: its environment is the lock's `python` section "
            "(see `requirements`) and the compilers come from the builder image")
    req_node = keys.get("requirements")
    requirements = _node(req_node).string("requirements") if req_node is not None else "paddle"
    py_node = keys.get("python")
    python = None
    if py_node is not None:
        node = _node(py_node)
        python = str(node.value) if isinstance(node.value, (str, float)) else node.string("python")
    steps_node = keys.get("steps")
    if steps_node is None:
        raise FileError(where, "a paddle pipeline needs `steps` (export, custom_op and wheel steps)")
    steps = tuple(_parse_step(s, source) for s in _node(steps_node).sequence("steps"))
    if not steps:
        raise _node(steps_node).error("steps is empty")
    names = [s.name for s in steps]
    for s in steps:
        if names.count(s.name) > 1:
            raise FileError(Location(where.path, s.line), f"step name `{s.name}` is used twice",
                            "step names name the output subfolders")
    return PaddleSpec(requirements, python, steps, _node(req_node).where if req_node is not None else where,
                      _node(py_node).where if py_node is not None else None)


def _node(value: object) -> Node:
    assert isinstance(value, Node), value
    return value


def _parse_step(node: Node, source: Path) -> Step:
    node.mapping("a step")
    kind_node = node.value.get("kind")
    if kind_node is None:
        raise node.error("a step is missing required key `kind`", f"one of: {', '.join(STEP_KINDS)}")
    kind = kind_node.string("step kind")
    if kind not in STEP_KINDS:
        guess = difflib.get_close_matches(kind, STEP_KINDS, n=1)
        raise kind_node.error(f"unknown step kind `{kind}`",
                              f"did you mean `{guess[0]}`?" if guess else f"one of: {', '.join(STEP_KINDS)}")
    f = Fields(node, f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} step", set(STEP_KEYS[kind]))
    name_node = f.required("name")
    name = name_node.string("step name")
    if not _NAME_RE.match(name):
        raise name_node.error(f"step name `{name}` must be letters, digits, `.`, `_` or `-` (it names a folder)")
    what = f"step `{name}`"
    if kind == "export":
        script = _inside(f.required("script"), f"{what}: script", source, want_file=True)
        prefix_node = f.optional("prefix")
        prefix = prefix_node.string(f"{what}: prefix") if prefix_node else "inference"
        if prefix_node is not None and not _NAME_RE.match(prefix):
            raise prefix_node.error(f"{what}: prefix `{prefix}` must be a plain file name stem")
        seed_node = f.optional("seed")
        seed = seed_node.integer(f"{what}: seed") if seed_node else 0
        args_node = f.optional("args")
        args = tuple(args_node.strings(f"{what}: args")) if args_node else ()
        return Step(name, kind, node.line, script, prefix=prefix, seed=seed, args=args)
    path_node = f.optional("path")
    path = _inside(path_node, f"{what}: path", source, want_file=False) if path_node else "."
    base = source / path
    if kind == "custom_op" and not (base / "setup.py").is_file():
        raise (path_node or node).error(f"{what}: {base} has no setup.py (custom operators are built with "
                                        "paddle.utils.cpp_extension.setup)")
    if kind == "wheel" and not ((base / "pyproject.toml").is_file() or (base / "setup.py").is_file()):
        raise (path_node or node).error(f"{what}: {base} has neither pyproject.toml nor setup.py")
    sdist_node = f.optional("sdist")
    sdist = sdist_node.boolean(f"{what}: sdist") if sdist_node else False
    return Step(name, kind, node.line, path, sdist=sdist)


def _inside(node: Node, what: str, source: Path, want_file: bool) -> str:
    value = node.string(what)
    if value.startswith("/") or ".." in value.split("/"):
        raise node.error(f"{what}: `{value}` must be a relative path inside the source")
    target = source / value
    if want_file and not target.is_file():
        raise node.error(f"{what}: {target} does not exist")
    if not want_file and not target.is_dir():
        raise node.error(f"{what}: {target} is not a directory")
    return value
