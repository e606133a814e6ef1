"""`reprobuild vendor [--check]`."""

from __future__ import annotations

import argparse

from reprobuild.errors import NotAvailableYet


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("vendor", help="vendor and prune dependencies", parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE")
    p.add_argument("--check", action="store_true", help="exit 1 with a diff when anything drifted")
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYet("vendor")
