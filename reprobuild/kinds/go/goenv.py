"""How reprobuild runs the Go command for module work (vendoring, mirrors): the locked Go, an explicit
environment (the host's GOFLAGS, go env file or GOTOOLCHAIN never leak in), one proxy, its own caches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from reprobuild import proc
from reprobuild.backends.leftovers import private_dir
from reprobuild.fsutil import remove_tree
from reprobuild.toolchains.cache import Installed

# Passed through from the caller's environment when set: how a user reaches their proxy and which
# modules are private. Everything else Go reads is set here (GOENV=off: no `go env -w` file either).
PASSTHROUGH = (
    "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOVCS", "GOAUTH", "NETRC",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSH_COMMAND", "SSH_AUTH_SOCK", "TMPDIR",
)


@dataclass(frozen=True)
class GoSettings:
    """How Go is run for vendoring: which toolchain, which proxy, where its caches live."""

    go: Installed
    cache_root: Path  # GOPATH, GOMODCACHE and GOCACHE live under cache_root/go
    goproxy: str | None = None  # None: Go's own default
    offline: bool = False  # no network: only the module cache, or a file:// proxy

    @property
    def modcache(self) -> Path:
        return self.cache_root / "go" / "modcache"

    @property
    def proxy_label(self) -> str:
        if self.offline and not (self.goproxy or "").startswith("file:"):
            return "off (module cache only)"
        return self.goproxy or "Go's default"


def go_environment(settings: GoSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment Go runs with: explicit, so the host's GOFLAGS or go env file never leak in."""
    base = os.environ if base is None else base
    gohome = settings.cache_root / "go"
    env = {
        "PATH": f"{settings.go.root / 'bin'}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}",
        "HOME": base.get("HOME", str(gohome / "home")),
        "GOROOT": str(settings.go.root),
        "GOTOOLCHAIN": "local",  # Go >= 1.21 would otherwise switch toolchains on a `toolchain` line
        "GOENV": "off",
        "GOWORK": "off",
        "GOFLAGS": "-mod=mod -modcacherw",  # -modcacherw: the cache stays deletable
        "GOPATH": str(gohome / "path"),
        "GOMODCACHE": str(settings.modcache),
        "GOCACHE": str(gohome / "build"),
        "LC_ALL": "C",
    }
    env.update({k: base[k] for k in PASSTHROUGH if base.get(k)})
    if settings.offline and not (settings.goproxy or "").startswith("file:"):
        env["GOPROXY"] = "off"
        env["GOSUMDB"] = "off"
    else:
        if settings.goproxy:
            env["GOPROXY"] = settings.goproxy
        # A local mirror cannot answer for the checksum database; go.sum still pins every module.
        if "GOSUMDB" not in env and (settings.goproxy or "").startswith(("file:", "off")):
            env["GOSUMDB"] = "off"
    return env


def run_go(settings: GoSettings, env: Mapping[str, str], cwd: Path, *args: str) -> proc.Completed:
    """`go ARGS` in `cwd` with the locked Go and `env` (from `go_environment`)."""
    return proc.run([settings.go.go, *args], env=env, cwd=cwd)


def go_version(settings: GoSettings, env: Mapping[str, str]) -> str:
    """`go env GOVERSION` without the `go` prefix."""
    done = proc.run([settings.go.go, "env", "GOVERSION"], env=env)
    return done.stdout.strip().removeprefix("go")



@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory for Go to work in, removed afterwards (the module cache inside stays writable).

    It is a subdirectory of a private directory carrying this process's owner record, so a build killed
    outright leaves nothing for good (the next build removes it), and the record is no file of the module."""
    top = private_dir(prefix)
    work = top / "work"
    work.mkdir()
    try:
        yield work
    finally:
        remove_tree(top)
