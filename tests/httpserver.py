"""A real HTTP server on 127.0.0.1 standing in for download hosts, with scripted misbehaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    """What one path serves. `fail_first` requests get HTTP 500; `stall` seconds of silence mid-body
    (on every request, or on the first `stall_times` ones)."""

    file: Path | None = None
    body: bytes | None = None
    redirect: str | None = None
    fail_first: int = 0
    status: int = 200
    truncate_to: int | None = None
    stall: float = 0.0
    stall_times: int | None = None
    content_type: str = "application/octet-stream"
    hits: int = 0


@dataclass
class LocalServer:
    host: str
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, **kw: object) -> Route:
        route = Route(**kw)  # type: ignore[arg-type]
        self.routes[path] = route
        return route

    def downloads(self, path: str) -> int:
        """Successful GETs of `path`."""
        return sum(1 for entry in self.log if entry == f"GET {path} 200")


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route = server.routes.get(path)
            if route is None:
                self._status(404)
                return
            route.hits += 1
            if route.hits <= route.fail_first:
                self._status(500)
                return
            if route.redirect:
                server.log.append(f"GET {path} 302")
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = route.body if route.body is not None else route.file.read_bytes()  # type: ignore[union-attr]
            server.log.append(f"GET {path} {route.status}")
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if route.truncate_to is not None:
                data = data[: route.truncate_to]
            try:
                stalls = route.stall_times is None or route.hits - route.fail_first <= route.stall_times
                if route.stall and stalls:
                    half = len(data) // 2
                    self.wfile.write(data[:half])
                    self.wfile.flush()
                    time.sleep(route.stall)
                    self.wfile.write(data[half:])
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _status(self, code: int) -> None:
            server.log.append(f"GET {self.path} {code}")
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def start(stop_hooks: list[Callable[[], None]]) -> LocalServer:
    srv = LocalServer("127.0.0.1", 0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    stop_hooks.append(stop)
    return srv
