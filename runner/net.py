"""Network plumbing every HTTP client of a run shares: the TLS context, and cutting a
blocking httpx request short from another thread.

A blocking ``recv`` or ``send`` in a worker thread cannot be cancelled, but shutting its
socket down ends it at once with an error. httpcore's ``trace`` extension reports each
socket a request opens; :class:`SocketGuard` keeps them, and ``stop`` shuts them all,
including any opened after the stop.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import Any

import httpx


def tls_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's default TLS context. Building one loads the CA bundle (30-100 ms): a session
    builds it once and hands it to every client it makes."""
    return httpx.create_ssl_context(trust_env=trust_env)


class SocketGuard:
    """The sockets of blocking requests, shut down on :meth:`stop` (from any thread).

    Pass :meth:`trace` as each request's ``extensions={"trace": ...}``. ``lock`` guards
    ``stopped`` and may guard the owner's own state that must change with it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped = False
        self._sockets: list[socket.socket] = []

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: note each socket opened, so :meth:`stop` can shut it."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        sock = info["return_value"].get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with self.lock:
                self._sockets.append(sock)
                if self.stopped:
                    _shut(sock)

    def stop(self) -> None:
        """Shut every socket down, now and as they open."""
        with self.lock:
            self.stopped = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
