"""`reprobuild doctor`."""

from __future__ import annotations

import argparse

from reprobuild.errors import NotAvailableYet


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", help="check the environment and policy", parents=[common])
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYet("doctor")
