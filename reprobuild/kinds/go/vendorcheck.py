"""`vendor --check` with no network: is the committed vendor/ consistent with go.mod and go.sum, and unmodified?

The full check (vendor.py) re-vendors the module through a proxy and compares; this one needs neither
a proxy nor the module cache, only the locked Go (to parse go.mod and to run Go's own vendor
consistency check). It checks:

- go.mod against vendor/modules.txt: every requirement is vendored at the version go.mod asks for, and
  Go's own consistency check (`go list -mod=vendor`, offline) passes;
- go.sum: every vendored module (and its go.mod) has its `h1:` line;
- vendor/: every package modules.txt lists is there, and every file is the one `reprobuild vendor`
  recorded in vendor/reprobuild.sha256 (sha256sum format: `cd vendor && sha256sum -c reprobuild.sha256`).

Why vendor/reprobuild.sha256: go.sum's `h1:` hashes cover whole module zips, which vendoring prunes, so
nothing in go.sum pins the vendored files. The digest lives inside vendor/, next to modules.txt,
because it describes exactly that tree: it is rewritten by every `reprobuild vendor`, dropped by a plain
`go mod vendor` (which then leaves the file check undone, said as such, never a stale digest), reviewed
in the same diff as the vendored files, and needs no change to toolchains.lock, which pins toolchains,
not modules. Go ignores it (it reads only modules.txt there).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from reprobuild import proc
from reprobuild.fsutil import atomic_write_bytes
from reprobuild.kinds.go.goenv import GoSettings
from reprobuild.kinds.go.gomod import read_go_mod, read_modules_txt
from reprobuild.kinds.go.report import Drift

DIGESTS = "reprobuild.sha256"  # in vendor/


def _vendor_files(vendor: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(vendor):
        dirnames.sort()
        for f in filenames:
            path = Path(dirpath) / f
            rel = path.relative_to(vendor).as_posix()
            if rel != DIGESTS:
                out[rel] = path
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_digests(vendor: Path) -> None:
    """Record the sha256 of every file under vendor/ (but itself) in vendor/reprobuild.sha256, sorted."""
    lines = [f"{_sha256(path)}  {rel}\n" for rel, path in sorted(_vendor_files(vendor).items())]
    atomic_write_bytes(vendor / DIGESTS, "".join(lines).encode())


def read_digests(vendor: Path) -> dict[str, tuple[str, int]] | None:
    """path -> (sha256, line number), or None when `reprobuild vendor` recorded no digests."""
    digest_file = vendor / DIGESTS
    if not digest_file.is_file():
        return None
    out: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(digest_file.read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if sep and len(digest) == 64:
            out[rel] = (digest, lineno)
    return out


def check_offline(module_dir: Path, settings: GoSettings, env: Mapping[str, str]) -> tuple[list[Drift], str]:
    """The drift found with no network, and a sentence saying which checks ran."""
    vendor = module_dir / "vendor"
    drift = _against_go_mod(module_dir, settings, env) + _against_go_sum(module_dir) + _packages(vendor)
    drift += _go_consistency(module_dir, settings, env)
    digests = read_digests(vendor)
    if digests is None:
        level = (f"offline (go.mod, go.sum and vendor/modules.txt against each other, every listed package "
                 f"present; vendored files NOT checked: no vendor/{DIGESTS}, run `reprobuild vendor` to record it)")
    else:
        drift += _files(vendor, digests)
        level = (f"offline (go.mod, go.sum and vendor/modules.txt against each other, every listed package "
                 f"present, every vendored file against vendor/{DIGESTS})")
    return drift, level


def _against_go_mod(module_dir: Path, settings: GoSettings, env: Mapping[str, str]) -> list[Drift]:
    gomod = read_go_mod(settings.go.go, module_dir / "go.mod", env)
    vendored = {m.path: m.version for m in read_modules_txt(module_dir / "vendor" / "modules.txt")}
    drift = []
    for req in gomod.requires:
        have = vendored.get(req.path)
        if have is None:
            drift.append(Drift("vendor/modules.txt", "inconsistent",
                               f"go.mod requires {req.path} {req.version}, which vendor/modules.txt does not list"))
        elif have and have != req.version:
            drift.append(Drift("vendor/modules.txt", "inconsistent",
                               f"go.mod requires {req.path} {req.version}, but vendor/ holds {req.path} {have}"))
    return drift


def _against_go_sum(module_dir: Path) -> list[Drift]:
    gosum = module_dir / "go.sum"
    lines = set(gosum.read_text().splitlines()) if gosum.is_file() else set()
    recorded = {tuple(line.split()[:2]) for line in lines if len(line.split()) == 3}
    drift = []
    for m in read_modules_txt(module_dir / "vendor" / "modules.txt"):
        if not m.source_version:
            continue  # a directory replacement: nothing to sum
        # The module's go.mod always; its zip when packages of it are vendored.
        wanted = (m.source_version, f"{m.source_version}/go.mod") if m.packages else (f"{m.source_version}/go.mod",)
        for version in wanted:
            if (m.source_path, version) not in recorded:
                drift.append(Drift("go.sum", "inconsistent",
                                   f"go.sum has no `{m.source_path} {version} h1:` line for a vendored module"))
    return drift


def _packages(vendor: Path) -> list[Drift]:
    drift = []
    for m in read_modules_txt(vendor / "modules.txt"):
        for package in m.packages:
            directory = vendor / package
            if not directory.is_dir() or not any(p.suffix == ".go" for p in directory.iterdir()):
                drift.append(Drift(f"vendor/{package}", "missing",
                                   f"vendor/modules.txt lists package {package}, but vendor/{package} has no .go file"))
    return drift


def _files(vendor: Path, digests: Mapping[str, tuple[str, int]]) -> list[Drift]:
    have = _vendor_files(vendor)
    drift = []
    for rel in sorted(set(have) | set(digests)):
        path = f"vendor/{rel}"
        if rel not in have:
            drift.append(Drift(path, "missing", f"recorded in vendor/{DIGESTS}:{digests[rel][1]}, not in the tree"))
        elif rel not in digests:
            drift.append(Drift(path, "unrecorded", f"not in vendor/{DIGESTS} (added after `reprobuild vendor`)"))
        elif _sha256(have[rel]) != digests[rel][0]:
            drift.append(Drift(path, "modified", f"sha256 {_sha256(have[rel])}, but vendor/{DIGESTS}:"
                                                 f"{digests[rel][1]} records {digests[rel][0]}"))
    return drift


def _go_consistency(module_dir: Path, settings: GoSettings, env: Mapping[str, str]) -> list[Drift]:
    """Go's own check that go.mod and vendor/modules.txt agree and every imported package is vendored."""
    offline = {**env, "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GOSUMDB": "off"}
    done = proc.run([str(settings.go.go), "list", "-mod=vendor", "-deps", "-f", "{{.ImportPath}}", "./..."],
                    env=offline, cwd=module_dir, check=False)
    if done.returncode == 0:
        return []
    return [Drift("vendor/modules.txt", "inconsistent",
                  "Go's vendor check (`go list -mod=vendor -deps ./...`, offline) fails:\n" +
                  "\n".join("    " + line for line in done.stderr.strip().splitlines()))]
