"""`reprobuild merge DIR... --out OUT` (shards of one build) and
`reprobuild merge --require-agreement DIR_A DIR_B... [--quorum K] [--out OUT]` (independent rebuilds).

Exit 0 merged / agreed, 1 an artifact disagrees (named with its digests), 2 bad input (missing shard,
outputs of different builds).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from reprobuild.build.merge import agree, merge, render_markdown, render_text, result_json
from reprobuild.commands import HELP
from reprobuild.commands._common import emit
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK, BadInput
from reprobuild.fsutil import atomic_write_text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("merge", help=HELP["merge"],
                       parents=[common],
                       description="Without --require-agreement: the DIRs are the shards of one build; their "
                                   "artifacts are combined into OUT with one SHA256SUMS, manifest and provenance, "
                                   "refusing an artifact two shards built differently. With it: the DIRs are whole "
                                   "outputs of independent rebuilds, and every artifact must be identical in "
                                   "--quorum of them (default: all). Exit 0 ok, 1 disagreement, 2 bad input.")
    p.add_argument("dirs", nargs="+", metavar="DIR", type=Path, help="output dirs of `reprobuild build`")
    p.add_argument("--out", metavar="OUT", type=Path,
                   help="the merged output dir (required without --require-agreement)")
    p.add_argument("--require-agreement", action="store_true",
                   help="the DIRs are independent rebuilds: fail unless they agree (N-of-M)")
    p.add_argument("--quorum", type=int, metavar="K", help="with --require-agreement: rebuilds that must agree "
                   "on each artifact (default: all)")
    p.add_argument("--report", metavar="FILE", type=Path, help="with --require-agreement: write the JSON report")
    p.add_argument("--markdown", nargs="?", const="-", metavar="FILE",
                   help="with --require-agreement: a Markdown summary, appended to FILE (default: "
                        "$GITHUB_STEP_SUMMARY if set, else stdout)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.require_agreement:
        if args.out is None:
            raise BadInput("merge needs --out OUT", "reprobuild merge SHARD_DIR... --out OUT")
        if args.quorum is not None or args.report or args.markdown:
            raise BadInput("--quorum, --report and --markdown go with --require-agreement")
        result = merge(args.dirs, args.out)
        emit(args, result_json(result), f"merged {len(result.shards) or len(args.dirs)} output(s), "
             f"{len(result.artifacts)} artifacts, into {result.out}")
        return EXIT_OK
    report = agree(args.dirs, args.quorum, args.out)
    data = report.to_json()
    if args.report:
        atomic_write_text(args.report, json.dumps(data, indent=2, sort_keys=True) + "\n")
    if args.markdown:
        target = args.markdown if args.markdown != "-" else os.environ.get("GITHUB_STEP_SUMMARY", "-")
        if target == "-":
            print(render_markdown(report))
        else:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(render_markdown(report))
    emit(args, data, render_text(report))
    return EXIT_OK if report.agreed else EXIT_DIFFERENT
