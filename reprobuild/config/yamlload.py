"""Load YAML keeping the line of every mapping key and sequence item, for `file:line` messages.

Validation code reads plain dicts and lists; positions live beside them in `Node` wrappers
only while validating, so the model itself stays plain frozen dataclasses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reprobuild.errors import FileError, Location


@dataclass(frozen=True)
class Node:
    """A value with the file and line it came from."""

    value: Any
    path: Path
    line: int

    @property
    def where(self) -> Location:
        return Location(self.path, self.line)

    def error(self, problem: str, hint: str | None = None) -> FileError:
        return FileError(self.where, problem, hint)

    # --- typed accessors -------------------------------------------------------------
    def mapping(self, what: str) -> dict[str, Node]:
        if not isinstance(self.value, dict):
            raise self.error(f"{what} must be a mapping, not {_typename(self.value)}")
        return self.value

    def sequence(self, what: str) -> list[Node]:
        if not isinstance(self.value, list):
            raise self.error(f"{what} must be a list, not {_typename(self.value)}")
        return self.value

    def string(self, what: str) -> str:
        if not isinstance(self.value, str) or isinstance(self.value, bool):
            raise self.error(f"{what} must be a string, not {_typename(self.value)}")
        return self.value

    def integer(self, what: str) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise self.error(f"{what} must be an integer, not {_typename(self.value)}")
        return self.value

    def boolean(self, what: str) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"{what} must be true or false, not {_typename(self.value)}")
        return self.value

    def strings(self, what: str) -> list[str]:
        return [item.string(f"each item of {what}") for item in self.sequence(what)]

    def plain(self) -> Any:
        """The value with positions stripped."""
        return strip(self)


def _typename(value: Any) -> str:
    if value is None:
        return "empty (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def strip(node: Node) -> Any:
    if isinstance(node.value, dict):
        return {k: strip(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [strip(v) for v in node.value]
    return node.value


class Fields:
    """Reads a mapping's keys: required and optional ones, rejecting unknown keys with a did-you-mean."""

    def __init__(self, node: Node, what: str, allowed: set[str]) -> None:
        self.node = node
        self.what = what
        self.items = node.mapping(what)
        for key, value in self.items.items():
            if key not in allowed:
                guess = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f"did you mean `{guess[0]}`?" if guess else f"allowed keys: {', '.join(sorted(allowed))}"
                raise value.error(f"unknown key `{key}` in {what}", hint)

    def required(self, key: str) -> Node:
        if key not in self.items:
            raise self.node.error(f"{self.what} is missing required key `{key}`")
        return self.items[key]

    def optional(self, key: str) -> Node | None:
        return self.items.get(key)

    def __iter__(self) -> Iterator[tuple[str, Node]]:
        return iter(self.items.items())


# libyaml's parser when PyYAML has it (10x faster on the lock; the same nodes, with the same line marks).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Node] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise FileError(Location(path, key_node.start_mark.line + 1), f"key {key!r} must be a string")
            if key in result:
                raise FileError(Location(path, key_node.start_mark.line + 1), f"duplicate key `{key}`")
            value = _construct(loader, value_node, path)
            # Report a key's problems at the key's own line.
            result[key] = Node(value.value, path, key_node.start_mark.line + 1)
        return Node(result, path, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_construct(loader, item, path) for item in node.value], path, line)
    return Node(loader.construct_object(node, deep=True), path, line)


MAX_YAML_BYTES = 16 << 20
"""Pipelines, locks and image descriptions are small; a larger file is refused before it is parsed."""


def _read_capped(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise FileError(Location(path), "file not found") from None
    except OSError as exc:
        raise FileError(Location(path), f"cannot read file: {exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise FileError(Location(path), f"larger than {MAX_YAML_BYTES >> 20} MiB; not a pipeline, lock or "
                                        "image description reprobuild would write or read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError(Location(path), f"cannot read file: {exc}") from None


def refuse_aliases(path: Path, text: str) -> None:
    """FileError at the first anchor (`&x`) or alias (`*x`): these files need none, and aliases are how
    a few hundred bytes expand to gigabytes (or recurse forever). Events only: nothing is expanded."""
    loader = _Loader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            is_alias = isinstance(event, yaml.AliasEvent)
            if is_alias or getattr(event, "anchor", None) is not None:
                what = f"alias `*{event.anchor}`" if is_alias else f"anchor `&{event.anchor}`"
                raise FileError(Location(path, event.start_mark.line + 1), f"YAML {what} is not allowed",
                                "write the value out in full: pipelines and locks take no anchors, aliases or "
                                "merge keys")
    except yaml.MarkedYAMLError:
        return  # the real parse below reports it at its line
    finally:
        loader.dispose()


def load_documents(path: Path, text: str | None = None) -> list[Node]:
    """Parse every YAML document of `path`; a syntax error becomes a FileError at its line."""
    if text is None:
        text = _read_capped(path)
    elif len(text) > MAX_YAML_BYTES:
        raise FileError(Location(path), f"larger than {MAX_YAML_BYTES >> 20} MiB")
    refuse_aliases(path, text)
    loader = _Loader(text)
    docs: list[Node] = []
    try:
        while loader.check_node():
            root = loader.get_node()
            if root is not None:
                docs.append(_construct(loader, root, path))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        raise FileError(Location(path, line), f"invalid YAML: {problem}",
                        "fix the syntax at that line (indentation, quoting, a missing `:`)") from None
    except yaml.YAMLError as exc:
        raise FileError(Location(path), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return docs


def load_one(path: Path) -> Node:
    docs = load_documents(path)
    if len(docs) != 1:
        raise FileError(Location(path, 1), f"expected exactly one YAML document, found {len(docs)}")
    return docs[0]
