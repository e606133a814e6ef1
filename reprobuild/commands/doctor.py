"""`reprobuild doctor`: check the machine (engine, images, cache, leaking variables); exit 1 on an error finding."""

from __future__ import annotations

import argparse

from reprobuild import doctor
from reprobuild.commands._common import cache, emit, lock_path
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK

MARKS = {"ok": "ok", "info": "--", "warning": "!!", "error": "XX"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", help="check the environment and policy", parents=[common])
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = doctor.diagnose(doctor.gather(lock_path(args), cache(args)))
    lines = []
    for f in report.findings:
        lines.append(f"[{MARKS[f.severity]}] {f.id}: {f.message}")
        if f.hint and f.severity != "ok":
            lines.append(f"     hint: {f.hint}")
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = sum(f.severity == "warning" for f in report.findings)
    lines.append(f"doctor: {errors} error(s), {warnings} warning(s)")
    emit(args, report.to_json(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_DIFFERENT
