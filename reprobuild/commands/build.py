"""`reprobuild build [PIPELINE ...] --out DIR [--backend docker|local] [--offline] [--toolchain NAME=ENTRY]`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from reprobuild.build import BuildOptions, build
from reprobuild.commands._common import emit, lock_path, toolchain_overrides
from reprobuild.errors import EXIT_OK
from reprobuild.toolchains import offline_requested


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("build", help="build every target of the pipelines into DIR", parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", type=Path,
                   help="pipeline files (default: pipelines/*.yaml)")
    p.add_argument("--out", required=True, metavar="DIR", type=Path)
    p.add_argument("--backend", choices=["docker", "local"],
                   help="default: docker when an engine answers, else local (not hermetic)")
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY",
                   help="use lock entry ENTRY wherever a pipeline asks for NAME (repeatable)")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root (pipeline sources are relative "
                   "to it; default: the current directory)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    opts = BuildOptions(out=args.out, lock_path=lock_path(args), repo_root=args.root.resolve(),
                        pipelines=tuple(args.pipelines), backend=args.backend,
                        overrides=tuple(toolchain_overrides(args.toolchain).items()),
                        offline=offline_requested(args.offline))
    result = build(opts)
    emit(args, {"ok": True, "out": str(result.out), "backend": result.manifest["backend"],
                "hermetic": result.manifest["hermetic"], "artifacts": [asdict(a) for a in result.artifacts]},
         "\n".join(f"{a.sha256}  {a.path}" for a in result.artifacts))
    return EXIT_OK
