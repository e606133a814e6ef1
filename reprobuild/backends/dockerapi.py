"""The Docker Engine API, spoken directly over HTTP: the one module that talks to the engine.

`docker.py` (the backend) is its only user. It replaces the Docker SDK, whose import (requests,
urllib3) cost 0.09 s of every `reprobuild` start and 7 ms of Python per container; with `http.client`
a container's calls cost 2 ms. Only the calls reprobuild makes are here.

The engine is the one DOCKER_HOST names (`unix:///path`, or `tcp://host:port` with TLS when
DOCKER_TLS_VERIFY or DOCKER_CERT_PATH is set, as the docker CLI does); default the local socket.
Every request opens its own connection, so calls from many threads need no locking. Requests use
API version 1.41 (Docker 20.10), which every engine since then still serves.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import struct
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from reprobuild.formats.jsonstream import json_objects

API_VERSION = "1.41"
DEFAULT_HOST = "unix:///var/run/docker.sock"
STDOUT, STDERR = 1, 2
BLOCK = 1 << 20  # bytes per write of an uploaded body (image archives are hundreds of MB; http.client: 8 KiB)


class EngineError(Exception):
    """The engine refused a request (`status` is its HTTP status), or could not be reached (`status` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(EngineError):
    pass


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=BLOCK)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _tls_context() -> ssl.SSLContext | None:
    """TLS as the docker CLI sets it up from the environment, or None for plain TCP."""
    verify = os.environ.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
    cert_dir = os.environ.get("DOCKER_CERT_PATH", "")
    if not verify and not cert_dir:
        return None
    certs = Path(cert_dir or Path.home() / ".docker")
    context = ssl.create_default_context(cafile=str(certs / "ca.pem") if verify else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if (certs / "cert.pem").is_file():
        context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    return context


class Engine:
    """A Docker engine; `timeout` bounds each socket operation (None: wait as long as it takes)."""

    def __init__(self, address: str | None = None, timeout: float | None = 60.0) -> None:
        self.address = address or engine_address()
        self.timeout = timeout
        url = urllib.parse.urlsplit(self.address)
        where = url.path if url.scheme == "unix" else url.hostname
        if url.scheme not in ("unix", "tcp", "http", "https") or not where:
            raise EngineError("not an address reprobuild can reach (it speaks to unix:///PATH and "
                              "tcp://HOST:PORT engines)")
        self._url = url
        self._tls = _tls_context() if url.scheme in ("tcp", "https") else None

    # -- the wire --------------------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        url = self._url
        if url.scheme == "unix":
            return _UnixConnection(url.path, timeout)
        if self._tls is not None:
            return http.client.HTTPSConnection(url.hostname or "", url.port or 2376, timeout=timeout,
                                               context=self._tls, blocksize=BLOCK)
        return http.client.HTTPConnection(url.hostname or "", url.port or 2375, timeout=timeout, blocksize=BLOCK)

    def _send(self, method: str, path: str, query: dict[str, Any] | None, body: Any, headers: dict[str, str],
              timeout: float | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        target = f"/v{API_VERSION}{path}"
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        conn = self._connect(timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            why = str(exc) or type(exc).__name__
            raise EngineError(f"no answer: {why}") from None

    def _exchange(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
                  headers: dict[str, str], timeout: float | None) -> tuple[http.client.HTTPResponse, bytes]:
        """One whole request and answer; EngineError for a 4xx/5xx answer."""
        conn, resp = self._send(method, path, query, body, headers, timeout)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineError(f"the answer broke off: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise _error(resp.status, data)
        return resp, data

    def call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
             headers: dict[str, str] | None = None, *, no_timeout: bool = False, raw: bool = False) -> Any:
        """One request; the decoded JSON answer (None when empty; the text with `raw`). EngineError for a
        4xx/5xx answer. `no_timeout`: for answers that come when a process ends or a load is done."""
        resp, data = self._exchange(method, path, query, body, headers or {}, None if no_timeout else self.timeout)
        if not raw and not data:
            return None
        if not raw and "json" in (resp.getheader("Content-Type") or ""):
            return json.loads(data)
        return data.decode("utf-8", "replace")

    # -- engine ----------------------------------------------------------------------------------------

    def ping(self) -> str:
        """Whether the engine answers, cheaply (0.2 ms here, /version 5 ms); its version from the Server header."""
        resp, _ = self._exchange("GET", "/_ping", None, None, {}, self.timeout)
        server = resp.getheader("Server") or ""  # "Docker/20.10.24+dfsg1 (linux)"
        return server.split("/", 1)[1].split(" ", 1)[0] if server.startswith("Docker/") else "?"

    def version(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/version")
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/info")
        return result

    # -- images ----------------------------------------------------------------------------------------

    def image(self, name: str) -> dict[str, Any]:
        """The image's inspect record; NotFound when the engine has no such image."""
        result: dict[str, Any] = self.call("GET", f"/images/{urllib.parse.quote(name, safe=':@/')}/json")
        return result

    def images(self, reference: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/images/json",
                                                 {"filters": json.dumps({"reference": [reference]})})
        return result

    def load(self, archive: BinaryIO, size: int) -> list[str]:
        """Load a `docker save` archive; the IDs (sha256:...) of the images it held."""
        text = self.call("POST", "/images/load", {"quiet": "1"}, body=archive, no_timeout=True, raw=True,
                         headers={"Content-Type": "application/x-tar", "Content-Length": str(size)})
        ids = []
        for message in json_objects(text):
            if message.get("error"):
                raise EngineError(f"the Docker engine could not load the image: {message['error']}")
            line = str(message.get("stream", "")).strip()
            if line.startswith("Loaded image ID:"):
                ids.append(line.split(":", 1)[1].strip())
            elif line.startswith("Loaded image:"):
                ids.append(str(self.image(line.split(":", 1)[1].strip())["Id"]))
        return ids

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.call("POST", f"/images/{image}/tag", {"repo": repository, "tag": tag})

    def remove_image(self, image: str) -> None:
        self.call("DELETE", f"/images/{image}", {"force": "1"})

    # -- containers ------------------------------------------------------------------------------------

    def create(self, name: str, config: dict[str, Any]) -> str:
        """Create a container from an Engine API create body; its ID."""
        result = self.call("POST", "/containers/create", {"name": name}, body=config)
        return str(result["Id"])

    def attach(self, container: str) -> Iterator[tuple[int, bytes]]:
        """The container's stdout and stderr as (STDOUT|STDERR, chunk) frames, to the end of the process.

        Call it before `start`, so no output is missed; it returns once attached and yields as the frames
        arrive (the engine multiplexes both streams on one connection when there is no TTY).
        """
        conn, resp = self._send("POST", f"/containers/{container}/attach",
                                {"stream": "1", "stdout": "1", "stderr": "1", "logs": "0"}, None,
                                {"Connection": "Upgrade", "Upgrade": "tcp"}, None)
        if resp.status >= 400:
            data = resp.read()
            conn.close()
            raise _error(resp.status, data)
        return _frames(conn, resp)

    def start(self, container: str) -> None:
        self.call("POST", f"/containers/{container}/start")

    def wait(self, container: str) -> int:
        """Block until the container's process ends (no time limit: the caller's timer kills it); its exit code."""
        result = self.call("POST", f"/containers/{container}/wait", no_timeout=True)
        return int(result.get("StatusCode", -1))

    def kill(self, container: str) -> None:
        self.call("POST", f"/containers/{container}/kill")

    def inspect(self, container: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/containers/{container}/json")
        return result

    def remove(self, container: str) -> None:
        self.call("DELETE", f"/containers/{container}", {"force": "1"})

    def containers(self, label: str) -> list[str]:
        """Names of all containers (running or not) carrying `label` (`key` or `key=value`)."""
        found = self.call("GET", "/containers/json", {"all": "1", "filters": json.dumps({"label": [label]})})
        return [str(c["Names"][0]).lstrip("/") for c in found if c.get("Names")]


def _frames(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[tuple[int, bytes]]:
    """Frames of a hijacked attach stream: an 8-byte header (stream, 0, 0, 0, big-endian size), then the bytes."""
    fp = resp.fp  # the raw connection after the 101 answer's headers (http.client reads no body for a 101)
    try:
        while True:
            header = fp.read(8)
            if len(header) < 8:
                return
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            chunk = fp.read(size)
            if stream in (STDOUT, STDERR) and chunk:
                yield stream, chunk
            if len(chunk) < size:
                return
    except OSError:
        return  # the container was killed and the engine dropped the stream
    finally:
        resp.close()
        conn.close()


def _error(status: int, data: bytes) -> EngineError:
    try:
        message = str(json.loads(data).get("message", ""))
    except (ValueError, AttributeError):
        message = data.decode("utf-8", "replace").strip()
    text = f"{status}: {message or http.client.responses.get(status, 'error')}"
    return NotFound(text, status) if status == 404 else EngineError(text, status)
