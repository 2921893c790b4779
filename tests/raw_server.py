"""A bare HTTP/1.1 server on loopback for tests that need a peer misbehaving on purpose
(stalling, hanging up, never reading): one thread per connection, the handler is yours."""

from __future__ import annotations

import socket
import threading


def read_head(conn: socket.socket) -> tuple[bytes, bytes] | None:
    """A request's head (request line and headers) and the bytes read past it; None if
    the peer hung up first."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        got = conn.recv(65536)
        if not got:
            return None
        raw += got
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


def headers_of(head: bytes) -> dict[str, str]:
    """A request head's headers, names lower-cased."""
    lines = head.decode().split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}


class RawServer:
    """Accepts on 127.0.0.1 and runs :meth:`serve` per connection in its own thread.

    Handlers that stall should wait on ``released``; :meth:`close` sets it, closes every
    socket and joins the handler threads.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.released = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Answer one connection (subclasses say how)."""
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self.serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Let every stalled handler go, stop accepting, and wait for the handlers."""
        self.released.set()
        self.sock.close()
        for conn in self._conns:
            conn.close()
        for thread in self._threads:
            thread.join(5)
