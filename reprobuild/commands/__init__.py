"""One module per command; this table is their order and one-line help in `reprobuild --help`.

A command's module (and the library it runs) is imported only when that command runs, or for
`reprobuild --help`: `reprobuild build` does not load the comparators, the resolver or the doctor.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Protocol

HELP: dict[str, str] = {
    "build": "build every target of the pipelines into DIR",
    "verify": "rebuild under varied conditions, compare, name the culprits",
    "compare": "compare two output dirs and explain each difference",
    "plugin-check": "predict whether Go's plugin.Open in HOST accepts each PLUGIN",
    "merge": "combine shard outputs into one output dir, or require rebuilds to agree",
    "image": "load a built image into the engine, or push it to a registry",
    "toolchain": "provision pinned toolchains into the cache",
    "vendor": "vendor and prune dependencies",
    "lock": "resolve toolchains.yaml and write toolchains.lock",
    "doctor": "check the environment and policy",
}


class Command(Protocol):
    def add_parser(self, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                   common: argparse.ArgumentParser) -> None: ...


def load(name: str) -> Command:
    module: Command = importlib.import_module(f"reprobuild.commands.{name.replace('-', '_')}")
    return module
