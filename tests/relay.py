"""Copy bytes between two sockets until either side closes (the tests' and benchmarks' stand-ins in front of a
real engine)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


def pump(src: socket.socket, dst: socket.socket, on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Forward what `src` sends to `dst` (each chunk shown to `on_chunk` first); when either ends, shut both down so
    the other direction ends too."""
    try:
        while chunk := src.recv(1 << 16):
            if on_chunk is not None:
                on_chunk(chunk)
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def forward(client: socket.socket, upstream: str, on_chunk: Callable[[bytes], None] | None = None) -> None:
    """Connect to the unix socket `upstream` and relay both ways on threads of their own; `on_chunk` sees what
    the client sends."""
    real = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    real.connect(upstream)
    threading.Thread(target=pump, args=(client, real, on_chunk), daemon=True).start()
    threading.Thread(target=pump, args=(real, client), daemon=True).start()
