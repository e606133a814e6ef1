"""`reprobuild verify [PIPELINE ...]`."""

from __future__ import annotations

import argparse

from reprobuild.errors import NotAvailableYet


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", help="rebuild under varied conditions and explain differences", parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--vary", default="all")
    p.add_argument("--report", metavar="FILE")
    p.add_argument("--backend", choices=["docker", "local"])
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableYet("verify")
