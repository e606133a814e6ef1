"""Helpers shared by command modules: the lock, the cache, and how results are printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reprobuild.config.lock import default_lock_path, load_lock
from reprobuild.config.model import Lock
from reprobuild.toolchains.cache import ToolchainCache


def lock_path(args: argparse.Namespace) -> Path:
    return Path(args.lock) if getattr(args, "lock", None) else default_lock_path()


def load(args: argparse.Namespace) -> Lock:
    return load_lock(lock_path(args))


def cache(args: argparse.Namespace) -> ToolchainCache:
    return ToolchainCache(offline=bool(getattr(args, "offline", False)))


def emit(args: argparse.Namespace, data: dict[str, Any], human: str) -> None:
    """`--json`: the data on stdout; otherwise the human text."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    elif human:
        print(human)


def toolchain_overrides(values: list[str] | None) -> dict[str, str]:
    """`--toolchain NAME=ENTRY` pairs."""
    from reprobuild.errors import BadInput

    result: dict[str, str] = {}
    for item in values or []:
        name, sep, entry = item.partition("=")
        if not sep or not name or not entry:
            raise BadInput(f"--toolchain {item!r}: expected NAME=ENTRY, e.g. --toolchain go=go-registry")
        result[name] = entry
    return result
