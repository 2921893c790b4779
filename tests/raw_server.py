"""A bare HTTP/1.1 server on loopback for tests that need a peer misbehaving on purpose
(stalling, hanging up, never reading): one thread per connection, the handler is yours."""

from __future__ import annotations

import socket
import threading


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
