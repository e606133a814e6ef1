"""`reprobuild vendor [PIPELINE ...] [--check] [--goproxy URL] [--toolchain NAME=ENTRY] [--mirror DIR]`.

Vendors (or, with `--check`, checks) the Go module of every `builder: go` pipeline with the pipeline's
locked Go, through one GOPROXY: `--goproxy`, else the GOPROXY environment variable, else Go's default.
With a `builder: paddle` pipeline it also downloads (or checks) the wheelhouse of every locked Python
environment: exactly the locked wheels, each with a hash the lock allows.

`--check` first checks the committed vendor/ with no network (go.mod, go.sum and vendor/modules.txt
agree; every vendored file matches the digests `reprobuild vendor` records in vendor/reprobuild.sha256),
then, unless `--offline`/REPROBUILD_OFFLINE=1 (a file:// proxy is still used offline), re-vendors through
the module proxy (`--goproxy`, GOPROXY, an existing `--mirror DIR`, else Go's default) and compares.
The report says which checks ran.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reprobuild.commands import HELP
from reprobuild.commands._common import cache, emit, load, toolchain_overrides
from reprobuild.config.model import Lock
from reprobuild.config.pipeline import Pipeline, load_pipelines
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK, BadInput, CheckFailed
from reprobuild.kinds.go.goenv import GoSettings
from reprobuild.kinds.go.goproxy import file_url
from reprobuild.kinds.go.mirror import write_module_mirror
from reprobuild.kinds.go.report import VendorReport
from reprobuild.kinds.go.vendor import check_vendored, vendor_module
from reprobuild.toolchains.wheelhouse import vendor_wheelhouses


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("vendor", help=HELP["vendor"], parents=[common],
                       description="Run go mod tidy, go mod vendor and go mod verify for the Go module of each "
                       "go pipeline, report what pruning dropped, and update go.mod, go.sum and vendor/ "
                       "(or, with --check, only say what drifted: exit 1).")
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", type=Path,
                   help="pipeline files or names (default: pipelines/*.yaml); only `builder: go` pipelines "
                        "are vendored")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the drift when go.mod, "
                   "go.sum and vendor/modules.txt disagree or a vendored file differs from vendor/reprobuild.sha256 "
                   "(needs no network), or, unless --offline, when they differ from what go mod tidy and go mod "
                   "vendor produce through the module proxy")
    p.add_argument("--goproxy", metavar="URL", help="module proxy to download through (default: the GOPROXY "
                   "environment variable, else Go's default); e.g. file:///srv/gomods for a mirror on disk")
    p.add_argument("--toolchain", action="append", metavar="NAME=ENTRY",
                   help="use lock entry ENTRY wherever a pipeline asks for NAME (repeatable)")
    p.add_argument("--mirror", metavar="DIR", type=Path, help="also write every module the pipelines need, from "
                   "the module cache, into DIR as a file-based module proxy (GOPROXY=file://DIR) for offline runners; "
                   "with --check and no --goproxy/GOPROXY, an existing DIR is the proxy the full check uses")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root (pipeline sources are relative "
                   "to it; default: the current directory)")
    p.set_defaults(handler=run)


def resolve_goproxy(flag: str | None, environ: dict[str, str] | None = None) -> str | None:
    """`--goproxy`, else $GOPROXY, else None (Go's own default)."""
    env = dict(os.environ) if environ is None else environ
    return flag or env.get("GOPROXY") or None


def go_modules(pipelines: list[Pipeline], lock: Lock, overrides: dict[str, str]) -> list[tuple[Path, str]]:
    """(module directory, lock entry) to vendor, once per module, in pipeline order."""
    for name, entry in overrides.items():
        if entry not in lock.toolchains:
            raise BadInput(f"--toolchain {name}={entry}: {lock.path} has no entry `{entry}` "
                           f"(entries: {', '.join(sorted(lock.toolchains))})")
    seen: dict[Path, str] = {}
    for p in pipelines:
        if p.builder != "go":
            continue
        wanted = p.toolchain or "go"
        seen.setdefault(p.source, overrides.get(wanted, wanted))
    return list(seen.items())


def run(args: argparse.Namespace) -> int:
    lock = load(args)
    overrides = toolchain_overrides(args.toolchain)
    pipelines = load_pipelines(list(args.pipelines) or None, args.root.resolve())
    modules = go_modules(pipelines, lock, overrides)
    wheels = any(p.builder == "paddle" for p in pipelines)
    if not modules and not wheels:
        raise BadInput("none of the pipelines is a `builder: go` or `builder: paddle` pipeline: nothing to vendor")
    goproxy = resolve_goproxy(args.goproxy)
    mirror_is_proxy = args.check and goproxy is None and args.mirror is not None and args.mirror.is_dir()
    if mirror_is_proxy:
        goproxy = file_url(args.mirror.resolve())
    toolchains = cache(args)
    # The full re-vendor check needs the module proxy (--goproxy, GOPROXY, a --mirror DIR, else Go's default):
    # not with --offline, unless the proxy is on disk. When it cannot answer, the error says how to check offline.
    full = not toolchains.offline or (goproxy or "").startswith("file:")
    reports: list[VendorReport] = []
    settings: GoSettings | None = None
    for module_dir, entry in modules:
        go = toolchains.ensure(lock.toolchain(entry))
        settings = GoSettings(go, toolchains.root, goproxy, toolchains.offline)
        if args.check:
            reports.append(check_vendored(module_dir, go, goproxy, full, cache_root=toolchains.root,
                                          offline=toolchains.offline))
        else:
            reports.append(vendor_module(module_dir, go, goproxy, False, cache_root=toolchains.root,
                                         offline=toolchains.offline))
    # The wheelhouses of the locked Python environments the Paddle pipelines install from.
    wheel_problems = vendor_wheelhouses(lock, args.root.resolve(), toolchains.root, args.check) if wheels else {}
    bad_wheels = [line for lines in wheel_problems.values() for line in lines]
    data: dict[str, object] = {"ok": not args.check or (all(r.clean for r in reports) and not bad_wheels),
                               "check": args.check, "modules": [r.to_json() for r in reports],
                               "wheelhouses": wheel_problems}
    human = "\n\n".join([*(r.summary() for r in reports),
                          *(f"wheelhouse {name}: " + ("; ".join(lines) if lines else "exactly the locked wheels")
                            for name, lines in sorted(wheel_problems.items()))])
    if args.mirror and settings is not None and not mirror_is_proxy:
        mirror = write_module_mirror([m for m, _ in modules], args.mirror, settings)
        data["mirror"] = {"dir": str(mirror.dest), "url": mirror.url, "zips": list(mirror.zips),
                          "go_mods": mirror.go_mods, "bytes": mirror.bytes}
        human += (f"\n\nmodule mirror {mirror.url}: {len(mirror.zips)} module zip(s), {mirror.go_mods} go.mod file(s); "
                  f"use it with GOPROXY={mirror.url} GOSUMDB=off (or `reprobuild vendor --goproxy {mirror.url}`)")
    emit(args, data, human)
    drifted = [r for r in reports if not r.clean]
    if args.check and (drifted or bad_wheels):
        if drifted:
            names = "; ".join(f"{r.module_dir}: {', '.join(sorted({d.path for d in r.drift}))}" for r in drifted)
            message = (f"vendor --check: go.mod, go.sum or vendor/ drifted ({names}); checked: "
                       + "; ".join(sorted({r.level for r in drifted})))
            hint = "run `reprobuild vendor` and commit go.mod, go.sum and vendor/"
        else:
            message = "vendor --check: the wheelhouse differs from the lock:\n  " + "\n  ".join(bad_wheels)
            hint = "run `reprobuild vendor` to download exactly the locked wheels"
        if getattr(args, "json", False):
            print(f"reprobuild: error: {message}\n  hint: {hint}", file=sys.stderr)
            return EXIT_DIFFERENT
        raise CheckFailed(message, hint)
    return EXIT_OK
