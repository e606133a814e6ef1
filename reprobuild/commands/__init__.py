"""One module per command; this table is their order in `reprobuild --help`."""

from __future__ import annotations

import argparse
from typing import Protocol

from reprobuild.commands import build, compare, doctor, lock, merge, toolchain, vendor, verify


class Command(Protocol):
    def add_parser(self, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                   common: argparse.ArgumentParser) -> None: ...


COMMANDS: tuple[Command, ...] = (build, verify, compare, merge, toolchain, vendor, lock, doctor)
