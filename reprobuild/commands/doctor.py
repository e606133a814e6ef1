"""`reprobuild doctor [--root DIR] [--toolchain NAME=ENTRY] [--fix]`: check the machine (engine, images, cache,
leaking variables, leftovers of killed builds) and the policy gate; exit 2 when the gate refuses (as `build` would),
1 on any other error finding. `--fix` first removes dead builds' leftovers and reprobuild's own stale images, and
says exactly what it removed."""

from __future__ import annotations

import argparse
from pathlib import Path

from reprobuild import doctor
from reprobuild.backends import leftovers
from reprobuild.commands import HELP
from reprobuild.commands._common import cache, emit, lock_path, toolchain_overrides
from reprobuild.errors import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_OK

MARKS = {"ok": "ok", "info": "--", "warning": "!!", "error": "XX"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", help=HELP["doctor"], parents=[common])
    p.add_argument("--root", type=Path, default=Path("."), help="repository root whose pipelines the policy gate "
                   "judges (default: the current directory)")
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY",
                   help="judge the pipelines with lock entry ENTRY wherever they ask for NAME (repeatable)")
    p.add_argument("--fix", action="store_true",
                   help="first remove what builds killed outright left behind (containers and private temp "
                   "directories whose owner process is dead on this host) and reprobuild's own builder images that "
                   "the lock and builders/ no longer expect and no container uses; nothing else is touched")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    removed = leftovers.fix(lock_path(args), cache(args)) if args.fix else None
    facts = doctor.gather(lock_path(args), cache(args), root=args.root.resolve(),
                          overrides=toolchain_overrides(args.toolchain))
    report = doctor.diagnose(facts)
    lines = [f"removed {item.describe()}" for item in removed or ()]
    if removed is not None:
        lines.append(f"doctor --fix: removed {len(removed)} item(s)")
    for f in report.findings:
        lines.append(f"[{MARKS[f.severity]}] {f.id}: {f.message}")
        if f.hint and f.severity != "ok":
            lines.append(f"     hint: {f.hint}")
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = sum(f.severity == "warning" for f in report.findings)
    lines.append(f"doctor: {errors} error(s), {warnings} warning(s)")
    data = report.to_json()
    if removed is not None:
        data["removed"] = [item.to_json() for item in removed]
    emit(args, data, "\n".join(lines))
    if facts.policy_error is not None or any(f.severity == "error" for f in facts.policy):
        # What `build` refuses before building (a pipeline or substitution it cannot read, or the gate's
        # refusal): bad input, with its ways out.
        return EXIT_BAD_INPUT
    return EXIT_OK if report.ok else EXIT_DIFFERENT
