"""Where a container engine is, without asking it or importing the Docker SDK (a host with no engine pays
nothing): DOCKER_HOST in all its forms, else the current Docker context (DOCKER_CONTEXT, else the CLI config's
`currentContext`, found through DOCKER_CONFIG), else the local Docker socket, else a rootful or rootless Podman
socket. `backends/engine.py` talks to what this finds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """The engine refused a request (`status` is its HTTP status), or could not be reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(EngineError):
    pass


@dataclass(frozen=True)
class Endpoint:
    """Where an engine is: its address and what named it (for messages: "DOCKER_HOST", "Docker context `x`")."""

    address: str
    origin: str
    context: str = ""  # the Docker context it came from, if any


def local_sockets(environ: dict[str, str]) -> list[str]:
    """Where a local engine listens when nothing names one: Docker's socket, then rootful and rootless Podman's."""
    found = [DEFAULT_SOCKET, "/run/podman/podman.sock"]
    if environ.get("XDG_RUNTIME_DIR"):
        found.append(f"{environ['XDG_RUNTIME_DIR']}/podman/podman.sock")
    return found


def cli_config_dir(environ: dict[str, str]) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def current_context(environ: dict[str, str]) -> str:
    """The Docker context the CLI would use: DOCKER_CONTEXT, else the config's `currentContext`, else `default`."""
    if environ.get("DOCKER_CONTEXT"):
        return environ["DOCKER_CONTEXT"]
    try:
        config = json.loads((cli_config_dir(environ) / "config.json").read_text())
    except (OSError, ValueError):
        return "default"
    name = config.get("currentContext") if isinstance(config, dict) else None
    return str(name) if name else "default"


def configured(environ: dict[str, str] | None = None) -> Endpoint | None:
    """Where an engine is configured, without asking it; None when nothing names or offers one."""
    env = dict(os.environ if environ is None else environ)
    if env.get("DOCKER_HOST"):
        return Endpoint(env["DOCKER_HOST"], "DOCKER_HOST")
    context = current_context(env)
    if context != "default":
        return Endpoint(context_host(context, env), f"Docker context `{context}`", context)
    for path in local_sockets(env):
        if os.path.exists(path):
            return Endpoint(f"unix://{path}", "the local socket")
    return None


def context_host(name: str, environ: dict[str, str]) -> str:
    """The engine address a named Docker context holds (`docker context create NAME --docker host=...`)."""
    meta_dir = cli_config_dir(environ) / "contexts" / "meta"
    import hashlib

    meta = meta_dir / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        data = json.loads(meta.read_text())
        return str(data["Endpoints"]["docker"]["Host"])
    except (OSError, ValueError, KeyError, TypeError):
        named_by = "DOCKER_CONTEXT" if environ.get("DOCKER_CONTEXT") else f"{cli_config_dir(environ)}/config.json"
        raise EngineError(f"the Docker context `{name}` (named by {named_by}) does not exist: no {meta}") from None
