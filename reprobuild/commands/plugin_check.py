"""`reprobuild plugin-check HOST PLUGIN... [--json]`: will `plugin.Open` in HOST accept each PLUGIN?

Reads the files only (no `go`, nothing loaded). Plugins are taken in the order one host process opens
them. Exit 0 all load, 1 a plugin would be refused (the first difference named with both values),
2 bad input (a missing or non-Go file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reprobuild.commands import HELP
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("plugin-check", help=HELP["plugin-check"], parents=[common],
                       description="Predict, without loading anything, whether Go's plugin.Open in HOST accepts "
                                   "each PLUGIN (opened in the order given, in one process): same Go release, "
                                   "same hash for every package both contain, a unique plugin path. "
                                   "Exit 0 all load, 1 a plugin would be refused, 2 bad input.")
    p.add_argument("host", metavar="HOST", type=Path, help="the Go executable that calls plugin.Open")
    p.add_argument("plugins", nargs="+", metavar="PLUGIN", type=Path, help="Go plugins (-buildmode=plugin)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from reprobuild.evidence.plugincheck import check

    result = check(args.host, list(args.plugins))
    # Printed here rather than through commands._common, whose imports (the lock, YAML) cost more than the check.
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(result.render_text())
    return EXIT_OK if result.ok else EXIT_DIFFERENT
