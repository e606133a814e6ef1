"""`reprobuild compare A B`."""

from __future__ import annotations

import argparse

from reprobuild.errors import NotAvailableYet


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compare", help="compare two output dirs and explain each difference", parents=[common])
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json-file", dest="json_file", metavar="FILE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYet("compare")
