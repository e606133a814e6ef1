"""`reprobuild lock [--check]`: resolve toolchains.yaml into toolchains.lock."""

from __future__ import annotations

import argparse
from pathlib import Path

from reprobuild.commands import HELP
from reprobuild.commands._common import emit, lock_path
from reprobuild.config import resolve
from reprobuild.config.lock import load_lock
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK
from reprobuild.toolchains.cache import offline_requested


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lock", help=HELP["lock"], parents=[common])
    p.add_argument("--check", action="store_true", help="exit 1 when the lock is stale; write nothing")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="the repository root holding toolchains.yaml and builders/ (default: the lock's directory "
                        "if it holds toolchains.yaml, else the current directory)")
    p.add_argument("--upgrade", action="append", default=[], metavar="ENTRY",
                   help="resolve this kept entry again (a toolchain, or images/NAME to pin what the Debian mirror "
                        "serves now); repeatable")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = lock_path(args)
    current = load_lock(path) if path.exists() else None
    root = resolve.repository_root(path, args.root)
    plan, _ = resolve.lock(root / "toolchains.yaml", path, current, args.check, offline_requested(args.offline),
                           builders_dir=root / "builders", upgrade=tuple(args.upgrade))
    data = {"lock": str(path), "stale": plan.stale, "kept": list(plan.keep), "resolved": list(plan.resolve),
            "dropped": list(plan.drop)}
    if args.check:
        lines = [f"{path}: stale — " + "; ".join(
            [f"changed or new: {', '.join(plan.resolve)}"] * bool(plan.resolve)
            + [f"no longer wanted: {', '.join(plan.drop)}"] * bool(plan.drop))
            + "\n  run `reprobuild lock` to update it"] if plan.stale else [f"{path}: up to date"]
        emit(args, data, "\n".join(lines))
        return EXIT_DIFFERENT if plan.stale else EXIT_OK
    dropped = f": {', '.join(plan.drop)}" if plan.drop else ""
    emit(args, data, f"{path}: written ({len(plan.keep)} kept, {len(plan.resolve)} resolved, "
                     f"{len(plan.drop)} dropped{dropped})")
    return EXIT_OK
