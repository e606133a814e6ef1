"""The one module that talks to a container engine: the Engine API as Docker and Podman serve it, through the
Docker SDK (imported here only, and only once a build or `doctor` uses an engine).

Where the engine is, as the docker CLI decides it: DOCKER_HOST (`unix://`, `tcp://` with TLS from
DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, `https://`, `ssh://`), else the current Docker context (DOCKER_CONTEXT,
else the CLI config's `currentContext`, the config found through DOCKER_CONFIG), else the local Docker socket,
else a rootful or rootless Podman socket. `configured()` says where without importing the SDK, so a host with
no engine pays nothing for it.

The API version is negotiated as the docker CLI does: the highest both sides speak (the engine's `/version`
against the SDK's), unless DOCKER_API_VERSION pins one. An engine that answers but refuses is an
`EngineError` with its HTTP status and its own words; one that does not answer has status 0.

Calls from many threads share one client (the SDK's connection pool); nothing here holds a lock across a call.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from reprobuild.backends.endpoint import (
    DEFAULT_SOCKET,
    Endpoint,
    EngineError,
    NotFound,
    cli_config_dir,
    configured,
    current_context,
    local_sockets,
)

# Where an engine is (and the error it may give) is found in endpoint.py; named here as well, so a caller has
# one module for the engine.
__all__ = ["BLOCK", "DEFAULT_SOCKET", "STDERR", "STDOUT", "Endpoint", "Engine", "EngineError", "EngineFacts",
           "NotFound", "cli_config_dir", "configured", "current_context", "local_sockets", "negotiate",
           "translated"]

STDOUT, STDERR = 1, 2
BLOCK = 1 << 20  # bytes per write of an uploaded image archive (hundreds of MB; the HTTP default is 8 KiB)


@dataclass(frozen=True)
class EngineFacts:
    """What the engine said about itself, and the API version this client speaks to it."""

    product: str  # "Docker" or "Podman"
    version: str
    api_version: str  # negotiated (or DOCKER_API_VERSION)
    server_api: str  # the highest the engine serves
    server_min_api: str
    address: str
    platform: str = "linux/amd64"  # the engine's OS/architecture, as Go and OCI name them
    # A rootless engine (Podman run by a user, or rootless Docker): its containers' uids map to the user's own and
    # their subordinate ids. Asked only by a caller that is not root (a root caller's engine is a rootful one).
    rootless: bool = False

    def describe(self) -> str:
        rootless = ", rootless" if self.rootless else ""
        return f"{self.product} engine {self.version} at {self.address} (Engine API {self.api_version}{rootless})"


def _reason(exc: BaseException) -> str:
    """The most telling words of a failed connection: the innermost OS error, else the exception's text."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    found: BaseException | None = None
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and (e.strerror or str(e)):
            found = e
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    if isinstance(found, OSError) and found.strerror:
        return found.strerror
    text = str(found or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """SDK and transport exceptions as EngineError (status: the engine's HTTP status; 0: no answer)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"404: {exc.explanation or exc}", 404) from None
    except docker.errors.APIError as exc:
        status = exc.status_code or 0
        raise EngineError(f"{status}: {exc.explanation or exc}" if status else _reason(exc), status) from None
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"no answer: {_reason(exc)}") from None
    except Exception as exc:  # the SSH transport raises bare Exception and paramiko's own errors
        if type(exc).__module__.split(".")[0] in ("paramiko", "docker", "urllib3", "requests") \
                or type(exc) is Exception:
            raise EngineError(f"no answer: {_reason(exc)}") from None
        raise


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def negotiate(server_max: str, server_min: str, client_max: str, pinned: str = "") -> str:
    """The API version to speak: DOCKER_API_VERSION when set (as the docker CLI does), else the highest both sides
    speak. EngineError when there is none (the engine's minimum is above this client's maximum)."""
    if pinned:
        return pinned
    chosen = min(server_max, client_max, key=_version_key)
    if _version_key(chosen) < _version_key(server_min or "0"):
        raise EngineError(f"the engine serves Engine API {server_min} to {server_max}; this client (the Docker SDK) "
                          f"speaks at most {client_max}", 400)
    return chosen


class Engine:
    """One engine, connected on first use; `timeout` bounds each call (None: wait as long as it takes)."""

    def __init__(self, endpoint: Endpoint | None = None, timeout: float | None = 60.0) -> None:
        found = endpoint or configured()
        self.endpoint = found or Endpoint(f"unix://{DEFAULT_SOCKET}", "the default socket")
        self.address = self.endpoint.address
        self.timeout = timeout
        self._api: Any = None
        self._facts: EngineFacts | None = None
        self._guard = threading.Lock()  # held only while the client is made and the version negotiated

    # -- connecting ------------------------------------------------------------------------------------

    def _client(self, version: str) -> Any:
        _import_sdk(ssh=self.address.startswith("ssh://"))
        import docker
        from docker.context import ContextAPI
        from docker.utils import kwargs_from_env

        env = dict(os.environ)
        params: dict[str, Any]
        if self.endpoint.context:
            context = ContextAPI.get_context(self.endpoint.context)
            params = {"base_url": self.address}
            if context is not None and context.TLSConfig is not None:
                params["tls"] = context.TLSConfig
        else:
            params = kwargs_from_env(environment=env) if self.endpoint.origin == "DOCKER_HOST" else {}
            params["base_url"] = self.address
        return docker.APIClient(version=version, timeout=self.timeout, max_pool_size=32, **params)

    def connect(self) -> EngineFacts:
        """Ask the engine who it is, negotiate the API version, and check the engine accepts it (once)."""
        with self._guard:
            if self._facts is not None:
                return self._facts
            _import_sdk(ssh=self.address.startswith("ssh://"))
            from docker.constants import DEFAULT_DOCKER_API_VERSION

            with translated():
                probe = self._client(DEFAULT_DOCKER_API_VERSION)
                try:
                    answer = probe.version(api_version=False)
                finally:
                    probe.close()
            if not isinstance(answer, dict) or not answer.get("ApiVersion"):
                raise EngineError("its /version answer names no ApiVersion: not a Docker-compatible engine")
            server_max, server_min = str(answer["ApiVersion"]), str(answer.get("MinAPIVersion") or "")
            components = [str(c.get("Name", "")) for c in answer.get("Components") or [] if isinstance(c, dict)]
            product = "Podman" if any("podman" in c.lower() for c in components) else "Docker"
            who = f"{product} {answer.get('Version', '?')}"
            chosen = ""
            try:
                chosen = negotiate(server_max, server_min, DEFAULT_DOCKER_API_VERSION,
                                   os.environ.get("DOCKER_API_VERSION", ""))
                with translated():
                    api = self._client(chosen)
                    api.ping()  # a versioned call: an engine refusing this version says so now, not mid-build
            except EngineError as exc:
                raise type(exc)(f"{who} (Engine API {server_min or '?'} to {server_max}, asked {self._asked(chosen)}"
                                f"): {exc}", exc.status) from None
            self._api = api
            arch = str(answer.get("Arch", "amd64"))
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
            rootless = False
            if os.geteuid() != 0:
                with translated():
                    rootless = _rootless(api.info())
            self._facts = EngineFacts(product, str(answer.get("Version", "?")), chosen, server_max, server_min,
                                      self.address, f"{answer.get('Os', 'linux')}/{arch}", rootless)
            return self._facts

    @staticmethod
    def _asked(chosen: str) -> str:
        pinned = os.environ.get("DOCKER_API_VERSION", "")
        return f"{pinned} by DOCKER_API_VERSION" if pinned else (chosen or "none in common")

    @property
    def api(self) -> Any:
        if self._api is None:
            self.connect()
        return self._api

    @property
    def facts(self) -> EngineFacts:
        return self._facts or self.connect()

    def info(self) -> dict[str, Any]:
        with translated():
            result: dict[str, Any] = self.api.info()
        return result

    # -- images ----------------------------------------------------------------------------------------

    def image(self, name: str) -> dict[str, Any]:
        """The image's inspect record; NotFound when the engine has no such image."""
        with translated():
            result: dict[str, Any] = self.api.inspect_image(name)
        return result

    def images(self, reference: str) -> list[dict[str, Any]]:
        with translated():
            result: list[dict[str, Any]] = self.api.images(filters={"reference": reference})
        return result

    def load(self, archive: BinaryIO) -> list[str]:
        """Load a `docker save` archive (sent in 1 MiB writes); the IDs (sha256:...) of the images it held."""
        from reprobuild.formats.jsonstream import json_objects

        def blocks() -> Iterator[bytes]:
            while block := archive.read(BLOCK):
                yield block

        with translated():
            answer = self.api.load_image(blocks(), quiet=True)
            text = "".join(json.dumps(m) if isinstance(m, dict) else str(m) for m in answer)
        ids = []
        for message in json_objects(text):
            if message.get("error"):
                raise EngineError(f"the engine could not load the image: {message['error']}", 500)
            line = str(message.get("stream", "")).strip()
            if line.startswith("Loaded image ID:"):
                ids.append(line.split(":", 1)[1].strip())
            elif line.startswith("Loaded image:"):
                for ref in line.split(":", 1)[1].strip().split(","):  # Podman lists several, comma-separated
                    ids.append(str(self.image(ref.strip())["Id"]))
        return ids

    def tag(self, image: str, repository: str, tag: str) -> None:
        with translated():
            self.api.tag(image, repository, tag)

    def remove_image(self, image: str, force: bool = True) -> None:
        """Remove an image (by ID or NAME:TAG, which only untags when other names remain); without `force`, the
        engine refuses (409) while any container uses it."""
        with translated():
            self.api.remove_image(image, force=force)

    def image_records(self, label: str) -> list[dict[str, Any]]:
        """The engine's list entries (Id, RepoTags, Labels, ...) of every image carrying `label`."""
        with translated():
            result: list[dict[str, Any]] = self.api.images(filters={"label": label})
        return result

    # -- containers ------------------------------------------------------------------------------------

    def create(self, name: str, config: dict[str, Any]) -> str:
        """Create a container from an Engine API create body (see docker.container_config); its ID."""
        body = dict(config)
        host_config = body.pop("HostConfig")
        with translated():
            result = self.api.create_container(
                body.pop("Image"), command=body.pop("Cmd"), name=name, host_config=host_config,
                hostname=body.pop("Hostname"), domainname=body.pop("Domainname"), user=body.pop("User"),
                environment=body.pop("Env"), working_dir=body.pop("WorkingDir"), labels=body.pop("Labels"),
                network_disabled=body.pop("NetworkDisabled"), detach=True, stdin_open=False, tty=False)
        return str(result["Id"])

    def attach(self, container: str) -> Iterator[tuple[int, bytes]]:
        """The container's stdout and stderr as (STDOUT|STDERR, chunk) frames, to the end of the process.

        Call it before `start`, so no output is missed; it returns once attached and yields as the frames
        arrive (the engine multiplexes both streams on one connection when there is no TTY).
        """
        with translated():
            sock = self.api.attach_socket(container, params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 0})
        return _frames(sock)

    def start(self, container: str) -> None:
        with translated():
            self.api.start(container)

    def wait(self, container: str) -> int:
        """Block until the container's process ends (no time limit: the caller's timer kills it); its exit code."""
        with translated():
            result = self.api.wait(container, timeout=None)
        return int(result.get("StatusCode", -1))

    def kill(self, container: str) -> None:
        with translated():
            self.api.kill(container)

    def inspect(self, container: str) -> dict[str, Any]:
        with translated():
            result: dict[str, Any] = self.api.inspect_container(container)
        return result

    def remove(self, container: str) -> None:
        with translated():
            self.api.remove_container(container, force=True)

    def containers(self, label: str) -> list[str]:
        """Names of all containers (running or not) carrying `label` (`key` or `key=value`)."""
        return [str(c["Names"][0]).lstrip("/") for c in self.container_records(label) if c.get("Names")]

    def container_records(self, label: str | None) -> list[dict[str, Any]]:
        """The engine's list entries (Names, Labels, State, ImageID, ...) of all containers, running or not,
        carrying `label` (None: every container)."""
        with translated():
            found: list[dict[str, Any]] = self.api.containers(all=True, filters={"label": label} if label else None)
        return found

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def _rootless(info: dict[str, Any]) -> bool:
    """Whether the engine's /info says it runs rootless: Podman's `Rootless`, rootless Docker's security option."""
    options = [str(o) for o in info.get("SecurityOptions") or []]
    return bool(info.get("Rootless")) or any("name=rootless" in o.split(",") for o in options)


def _import_sdk(ssh: bool) -> None:
    """Import the Docker SDK; without paramiko unless the engine is reached over SSH. The SDK imports its SSH
    transport (paramiko, 0.09 s here) on every import when it is installed: as long as a build's start."""
    if "docker" in sys.modules or ssh:
        import docker
        return
    blocked = "paramiko" not in sys.modules
    if blocked:
        sys.modules["paramiko"] = None  # type: ignore[assignment]  # an ImportError for the SDK, which skips it
    try:
        import docker  # noqa: F401
    finally:
        if blocked and sys.modules.get("paramiko", 0) is None:
            del sys.modules["paramiko"]


def _frames(sock: Any) -> Iterator[tuple[int, bytes]]:
    """Frames of a hijacked attach stream, read frame by frame as they arrive; ends when the process does."""
    from docker.utils.socket import frames_iter

    try:
        for stream, chunk in frames_iter(sock, tty=False):
            if stream in (STDOUT, STDERR) and chunk:
                yield stream, chunk
    except OSError:
        return  # the container was killed and the engine dropped the stream
    finally:
        response = getattr(sock, "_response", None)
        for end in (response, sock):
            if end is not None:
                with contextlib.suppress(OSError, ValueError):
                    end.close()
