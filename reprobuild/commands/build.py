"""`reprobuild build [PIPELINE ...] --out DIR`."""

from __future__ import annotations

import argparse

from reprobuild.errors import NotAvailableYet


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("build", help="build every target of the pipelines into DIR", parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--backend", choices=["docker", "local"])
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYet("build")
