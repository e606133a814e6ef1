"""`reprobuild verify [PIPELINE ...] [--runs N] [--vary LIST] [--report FILE] [--markdown [FILE]]`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from reprobuild.build.orchestrate import BuildOptions
from reprobuild.build.provenance import verification_statement, write_statement
from reprobuild.commands import HELP
from reprobuild.commands._common import emit, lock_path, toolchain_overrides
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK
from reprobuild.evidence.verify import VerifyOptions, parse_vary, render_markdown, render_text, verify
from reprobuild.fsutil import atomic_write_text
from reprobuild.toolchains.cache import offline_requested


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", help=HELP["verify"],
                       parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", type=Path)
    p.add_argument("--runs", type=int, default=2, help="builds to compare (the first is the control; default 2)")
    p.add_argument("--vary", default="all", help="reprotest syntax: all, -all, +x, -x (comma-separated)")
    p.add_argument("--report", metavar="FILE", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                   help="write a Markdown summary (default: $GITHUB_STEP_SUMMARY if set, else stdout)")
    p.add_argument("--attestation", metavar="FILE", type=Path,
                   help="write an in-toto statement of the verification, naming the same subjects as the build")
    p.add_argument("--keep", metavar="DIR", type=Path, help="keep every run's output dir under DIR")
    p.add_argument("--backend", choices=["sandbox", "docker", "local"])
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root (default: current directory)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    build = BuildOptions(out=Path("unused"), lock_path=lock_path(args), repo_root=args.root.resolve(),
                         pipelines=tuple(args.pipelines), backend=args.backend,
                         overrides=tuple(toolchain_overrides(args.toolchain).items()),
                         offline=offline_requested(args.offline))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    report = verify(VerifyOptions(build=build, runs=args.runs, vary=parse_vary(args.vary), keep=args.keep))
    data = report.to_json()
    if args.report:
        atomic_write_text(args.report, json.dumps(data, indent=2, sort_keys=True) + "\n")
    if args.attestation:
        write_statement(args.attestation, verification_statement(report.digests, data))
    if args.markdown:
        target = args.markdown if args.markdown != "-" else os.environ.get("GITHUB_STEP_SUMMARY", "-")
        md = render_markdown(report)
        if target == "-":
            print(md)
        else:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(md)
    emit(args, data, render_text(report))
    return EXIT_OK if report.reproducible else EXIT_DIFFERENT
