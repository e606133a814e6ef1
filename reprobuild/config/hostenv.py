"""Host environment variables that would change a plain build here (reprobuild builds never see them:
their environment is an allowlist), as `doctor` names them."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Leak:
    pattern: str  # fnmatch pattern on the variable name
    why: str
    secret: bool = False  # never print the value
    severity: str = "warning"  # secrets and machine settings are `info`: filtered, and harmless to builds


LEAKS: tuple[Leak, ...] = (
    Leak("GOFLAGS", "adds flags to every go command (e.g. -mod=mod, -trimpath off)"),
    Leak("CGO_*", "changes cgo's compiler and linker flags, or turns cgo on/off"),
    Leak("GOTOOLCHAIN", "lets go switch to (and download) another toolchain"),
    Leak("GOPROXY", "changes where modules come from"),
    Leak("GOSUMDB", "changes how module checksums are verified"),
    Leak("GONOSUMDB", "skips checksum verification for some modules"),
    Leak("GONOSUMCHECK", "skips checksum verification"),
    Leak("GOPRIVATE", "skips the proxy and checksum database for some modules"),
    Leak("GOINSECURE", "allows plain-HTTP module fetches"),
    Leak("GOEXPERIMENT", "changes the compiler's behaviour"),
    Leak("GODEBUG", "changes runtime and toolchain defaults"),
    Leak("GOAMD64", "changes the generated instructions"),
    Leak("GOARM*", "changes the generated instructions"),
    Leak("GOOS", "changes the target platform"),
    Leak("GOARCH", "changes the target platform"),
    Leak("GOROOT", "points go at another toolchain"),
    Leak("GOPATH", "changes where modules and binaries go"),
    Leak("GOENV", "reads go settings from another file"),
    Leak("GOWORK", "builds against a workspace instead of the module"),
    Leak("CC", "changes the C compiler"),
    Leak("CXX", "changes the C++ compiler"),
    Leak("CFLAGS", "changes C compiler flags"),
    Leak("CXXFLAGS", "changes C++ compiler flags"),
    Leak("CPPFLAGS", "changes preprocessor flags"),
    Leak("LDFLAGS", "changes linker flags"),
    Leak("LD_PRELOAD", "injects a library into every process"),
    Leak("LD_LIBRARY_PATH", "changes which shared libraries are used"),
    Leak("LIBRARY_PATH", "changes which libraries the linker finds"),
    Leak("PKG_CONFIG_PATH", "changes which libraries cgo finds"),
    Leak("PYTHONPATH", "changes which Python modules are imported"),
    Leak("PYTHONHASHSEED", "changes Python's hash randomization"),
    Leak("PIP_*", "changes where and how pip installs", severity="info"),
    Leak("GITHUB_TOKEN", "a credential", secret=True),
    Leak("GH_TOKEN", "a credential", secret=True),
    Leak("AWS_*", "cloud credentials or settings", secret=True),
    Leak("GOOGLE_APPLICATION_CREDENTIALS", "a credential", secret=True),
    Leak("AZURE_*", "cloud credentials or settings", secret=True),
    Leak("NPM_TOKEN", "a credential", secret=True),
    Leak("*_TOKEN", "looks like a credential", secret=True),
    Leak("*_SECRET*", "looks like a credential", secret=True),
    Leak("*_PASSWORD", "looks like a credential", secret=True),
    Leak("SSH_AUTH_SOCK", "gives access to SSH keys", secret=True),
)


def leaking_variables(environ: Mapping[str, str]) -> list[tuple[str, Leak]]:
    """Host variables matching LEAKS (first matching pattern wins), sorted by name."""
    found = []
    for name in sorted(environ):
        for leak in LEAKS:
            if fnmatch.fnmatchcase(name, leak.pattern):
                found.append((name, leak))
                break
    return found
