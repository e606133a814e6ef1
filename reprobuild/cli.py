"""The command line: parse, call one library function per command, map errors to exit codes.

0 success · 1 not reproducible / differences / check failed · 2 bad input · 3 environment failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from reprobuild import __version__, progress
from reprobuild.commands import HELP, load
from reprobuild.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, ReprobuildError


def common_options(*, with_json: bool = True) -> argparse.ArgumentParser:
    """Options every command takes, after its name (`reprobuild toolchain list --json`).

    `with_json=False` leaves `--json` to the command (`compare --json [FILE]` takes an optional file).
    """
    common = argparse.ArgumentParser(add_help=False)
    if with_json:
        common.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    common.add_argument("--lock", metavar="FILE", help="use this lock instead of ./toolchains.lock "
                        "(or set REPROBUILD_LOCK)")
    common.add_argument("--offline", action="store_true", help="never touch the network (REPROBUILD_OFFLINE=1)")
    common.add_argument("-v", "--verbose", action="store_true", help="log every command reprobuild runs")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return common


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the arguments, only the command they name is loaded (the others are listed
    in `--help` from commands.HELP but never parsed: argparse parses one command)."""
    parser = argparse.ArgumentParser(prog="reprobuild", description="Hermetic, byte-reproducible builds, with proof.")
    parser.add_argument("--version", action="version", version=f"reprobuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options()
    named = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in HELP:
        if named is None or named not in HELP or name == named:
            load(name).add_parser(sub, common)
        else:
            sub.add_parser(name, help=HELP[name], add_help=False)
    return parser


class _ArgumentError(Exception):
    pass


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same clean-up path as Ctrl-C.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    progress.quiet = bool(getattr(args, "quiet", False))
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="reprobuild: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int = args.handler(args)
        return code
    except ReprobuildError as exc:
        return _fail(args, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("reprobuild: interrupted; partial work was discarded", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `reprobuild ... | head`: the reader left; say nothing more (and don't let Python complain at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        return _fail(args, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_ENVIRONMENT)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"reprobuild: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "exit_code": code, "error": message}, indent=2))
    return code if code else EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
