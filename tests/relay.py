"""Copy bytes between two sockets until either side closes (the tests' stand-ins in front of a real engine)."""

from __future__ import annotations

import contextlib
import socket


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Forward what `src` sends to `dst`; when either ends, shut both down so the other direction ends too."""
    try:
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
