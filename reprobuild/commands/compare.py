"""`reprobuild compare A B [--json [FILE]] [--markdown [FILE]] [--diffoscope]`.

A and B are two files or two directories (output dirs, manifests, or any trees). `--json` alone prints
the report on stdout, like every command's `--json`; `--json FILE` writes it to FILE (docs/reports.md)
and prints the terse text. `--markdown FILE` appends to FILE, the way
`$GITHUB_STEP_SUMMARY` is meant to be written. Exit 0 identical, 1 differences, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reprobuild.commands import HELP
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK, BadInput
from reprobuild.evidence.compare import DIFFOSCOPE_TIMEOUT, CompareReport, compare_outputs, render_markdown, render_text
from reprobuild.fsutil import atomic_write_text

STDOUT = "-"
USAGE = ("reprobuild compare A B [--json [FILE]] [--markdown [FILE]] [--diffoscope] "
         "[--diffoscope-timeout SECONDS] [-q] [-v]")


class _OptionalFile(argparse.Action):
    """`--json [FILE]`: remembers whether the option came before A, to undo `--json A B` (see `_paths`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        if getattr(namespace, "a", None) is None:
            setattr(namespace, f"{self.dest}_before_a", True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    from reprobuild.cli import common_options  # this command owns `--json`, which takes an optional FILE

    p = sub.add_parser("compare", help=HELP["compare"], usage=USAGE,
                       parents=[common_options(with_json=False)],
                       description="Compare two files, or two directories, and explain each difference by "
                                   "format (ELF and Go build info, archives, Paddle programs, text). A directory "
                                   "may be an output directory of `reprobuild build` (its artifacts), its "
                                   "manifest.json (hashes only), or any tree (every file in it). The report's JSON "
                                   "is described in docs/reports.md. Exit 0 identical, 1 differences, 2 bad input.")
    p.add_argument("a", metavar="A", help="a file, a directory (e.g. an output directory of `reprobuild build`), "
                                          "or a manifest.json")
    # B is optional to argparse only so that `--json A B` can be repaired (`--json` would take A as FILE).
    p.add_argument("b", metavar="B", nargs="?", help="the other file, directory or manifest.json")
    p.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE", action=_OptionalFile,
                   help="the JSON report on stdout, or written to FILE")
    p.add_argument("--markdown", nargs="?", const=STDOUT, metavar="FILE", action=_OptionalFile,
                   help="a Markdown summary on stdout, or appended to FILE (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument("--diffoscope", action="store_true",
                   help="also run diffoscope on each differing pair (if installed), time- and size-capped")
    p.add_argument("--diffoscope-timeout", type=float, default=DIFFOSCOPE_TIMEOUT, metavar="SECONDS",
                   help=f"stop diffoscope after this long per pair (default {DIFFOSCOPE_TIMEOUT:g})")
    p.set_defaults(handler=run)


def _paths(args: argparse.Namespace) -> tuple[str, str]:
    """A and B, taking back a path that `--json`/`--markdown` swallowed as its FILE."""
    if args.b is not None:
        return args.a, args.b
    if args.a is not None:
        for dest in ("json", "markdown"):
            value = getattr(args, dest)
            if value is not None and value != STDOUT:
                setattr(args, dest, STDOUT)
                return (value, args.a) if getattr(args, f"{dest}_before_a", False) else (args.a, value)
    raise BadInput("compare needs two paths", "reprobuild compare A B [--json [FILE]]")


def run(args: argparse.Namespace) -> int:
    a, b = _paths(args)
    if args.json == STDOUT and args.markdown == STDOUT:
        raise BadInput("--json and --markdown cannot both print on stdout", "give one of them a FILE")
    report = compare_outputs(Path(a), Path(b), diffoscope=args.diffoscope,
                             diffoscope_timeout=args.diffoscope_timeout)
    write_outputs(report, json_to=args.json, markdown_to=args.markdown)
    return EXIT_OK if report.identical else EXIT_DIFFERENT


def write_outputs(report: CompareReport, *, json_to: str | None, markdown_to: str | None) -> None:
    """Write the files asked for, then print one rendering on stdout (JSON, Markdown or the terse text)."""
    data = report.to_json()
    if json_to is not None and json_to != STDOUT:
        atomic_write_text(Path(json_to), json.dumps(data, indent=2, sort_keys=True) + "\n")
    if markdown_to is not None and markdown_to != STDOUT:
        with open(markdown_to, "a", encoding="utf-8") as fh:
            fh.write(render_markdown(report))
    if json_to == STDOUT:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif markdown_to == STDOUT:
        sys.stdout.write(render_markdown(report))
    else:
        print(render_text(report))
