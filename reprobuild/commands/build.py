"""`reprobuild build [PIPELINE ...] --out DIR [--backend sandbox|docker|local] [--offline] [--toolchain NAME=ENTRY]
[--shard I/N] [--action-cache DIR] [--no-cache] [--jobs N]`, and `--dry-run` to print the shard plan."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from reprobuild.build.actioncache import default_action_cache_dir
from reprobuild.build.orchestrate import BuildOptions, build, plan_costs, shard_plan
from reprobuild.build.shard import parse_shard
from reprobuild.commands import HELP
from reprobuild.commands._common import emit, lock_path, toolchain_overrides
from reprobuild.errors import EXIT_OK, BadInput
from reprobuild.fsutil import atomic_write_text
from reprobuild.toolchains.cache import offline_requested


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("build", help=HELP["build"], parents=[common])
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", type=Path,
                   help="pipeline files (default: pipelines/*.yaml)")
    p.add_argument("--out", metavar="DIR", type=Path, help="the output directory (required unless --dry-run)")
    p.add_argument("--backend", choices=["sandbox", "docker", "local"],
                   help="default: sandbox where bubblewrap can make one, else docker when an engine answers, "
                        "else local (not hermetic)")
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY",
                   help="use lock entry ENTRY wherever a pipeline asks for NAME (repeatable)")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root (pipeline sources are relative "
                   "to it; default: the current directory)")
    p.add_argument("--shard", metavar="I/N", help="build only shard I of N (units: one Go target, or one whole "
                   "command/paddle pipeline); `reprobuild merge` combines the shards")
    p.add_argument("--action-cache", metavar="DIR", type=Path,
                   help="where unit results are cached (default: $REPROBUILD_CACHE/actions)")
    p.add_argument("--no-cache", action="store_true",
                   help="build every unit even when the action cache has it (the fresh results are recorded)")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="units (and a Go target's platforms) built at once (default: the core count; "
                   "the output bytes do not depend on it)")
    p.add_argument("--costs", metavar="FILE", type=Path,
                   help="unit durations (JSON) to balance shards by (default: the action cache's costs.json)")
    p.add_argument("--dry-run", action="store_true", help="print which units each shard builds; build nothing")
    p.add_argument("--shards", type=int, metavar="N", help="with --dry-run: the number of shards to plan")
    p.add_argument("--rebuilds", type=int, default=1, metavar="R",
                   help="with --dry-run --github-output: also append `rebuilds=[1,...,R]`")
    p.add_argument("--github-output", metavar="FILE", type=Path,
                   help="with --dry-run: append `shards=[1,...,N]` to FILE ($GITHUB_OUTPUT, for a job matrix)")
    p.add_argument("--export-costs", metavar="FILE", type=Path,
                   help="with --dry-run: write the costs the plan used, for every shard to use the same (--costs)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard) if args.shard else None
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}: must be at least 1")
    if args.out is None and not args.dry_run:
        raise BadInput("build needs --out DIR", "reprobuild build [PIPELINE ...] --out DIR")
    opts = BuildOptions(out=args.out or Path("out"), lock_path=lock_path(args), repo_root=args.root.resolve(),
                        pipelines=tuple(args.pipelines), backend=args.backend,
                        overrides=tuple(toolchain_overrides(args.toolchain).items()),
                        offline=offline_requested(args.offline), shard=shard,
                        action_cache=(args.action_cache or default_action_cache_dir()).resolve(),
                        read_cache=not args.no_cache, costs=args.costs, jobs=args.jobs)
    if args.dry_run:
        return _dry_run(args, opts, args.shards or (shard[1] if shard else 1))
    result = build(opts)
    emit(args, {"ok": True, "out": str(result.out), "backend": result.manifest["backend"],
                "hermetic": result.manifest["hermetic"], "artifacts": [asdict(a) for a in result.artifacts]},
         "\n".join(f"{a.sha256}  {a.path}" for a in result.artifacts))
    return EXIT_OK


def _dry_run(args: argparse.Namespace, opts: BuildOptions, n: int) -> int:
    if n < 1 or args.rebuilds < 1:
        raise BadInput(f"--shards {n} --rebuilds {args.rebuilds}: both must be at least 1")
    shards = shard_plan(opts, n)
    if args.export_costs:
        atomic_write_text(args.export_costs, json.dumps(plan_costs(opts), indent=2, sort_keys=True) + "\n")
    if args.github_output:
        with open(args.github_output, "a", encoding="utf-8") as fh:
            fh.write(f"shards={json.dumps(list(range(1, n + 1)))}\n")
            fh.write(f"rebuilds={json.dumps(list(range(1, args.rebuilds + 1)))}\n")
    emit(args, {"ok": True, "shards": [{"shard": f"{k}/{n}", "units": [u.id for u in units]}
                                       for k, units in enumerate(shards, 1)]},
         "\n".join(f"shard {k}/{n}: {', '.join(u.id for u in units) or '(nothing)'}"
                   for k, units in enumerate(shards, 1)))
    return EXIT_OK
