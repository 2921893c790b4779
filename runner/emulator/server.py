"""Serve the emulator with uvicorn: in a background thread for tests, or in the foreground
for ``raybatch emulator`` / ``python -m runner.emulator``.

The socket is bound (and listening) before anything else happens, so ``--port 0`` can
print the real port and clients that connect at once wait in the backlog instead of
being refused.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from .account import Renderer
from .app import create_app
from .config import EmulatorConfig


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only turns Nagle off (TCP_NODELAY) on sockets that do,
    # and with Nagle on, every two-write response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Starlette) -> uvicorn.Server:
    # h11 pinned: dropping connections relies on its per-request cycle (protocol.py).
    settings = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(settings)


class EmulatorServer:
    """The emulator on a free loopback port, served from a background thread.

    Usage::

        with EmulatorServer(EmulatorConfig(job_seconds=(0.2, 0.5))) as emulator:
            httpx.post(f"{emulator.url}/luma/agent/ray/v3.2/text-to-video", ...)
            assert emulator.stats()["submits"] == 1
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        renderer: Renderer | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.config = config or EmulatorConfig()
        #: The ASGI app; ``app.state.emulator`` is the live state, for tests that need it.
        self.app = create_app(self.config, renderer=renderer)
        self.url = ""
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._client: httpx.Client | None = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind, start serving and return once the app's lifespan has started."""
        self._socket = _bind(self.config.host, self.config.port)
        self.url = _url(self._socket)
        server = self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [self._socket]},
            name="raybatch-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._socket is not None:
            self._socket.close()
        if self._client is not None:
            self._client.close()
        self._server = self._thread = self._socket = self._client = None

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        if self._client is None:
            # Plain HTTP on loopback: not loading the CA bundle saves ~0.1 s per client.
            self._client = httpx.Client(base_url=self.url, verify=False, timeout=30)
        response = self._client.request(method, f"/_emulator/{route}", **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """The witness's counters (``GET /_emulator/stats``)."""
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def reset(self) -> None:
        """Forget requests, files and counters (``POST /_emulator/reset``)."""
        self._call("POST", "reset")

    def set_faults(self, spec: str, *, extend: bool = False) -> None:
        """Replace (or extend) the fault spec at run time (``POST /_emulator/faults``)."""
        self._call("POST", "faults", json={"spec": spec, "extend": extend})


def _job_seconds(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    try:
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX seconds, got {text!r}") from None


# (EmulatorConfig field, parser, metavar, help); the flag is the field with dashes.
_OPTIONS: list[tuple[str, Callable[[str], Any], str, str]] = [
    ("host", str, "HOST", "interface to bind (default %(default)s)"),
    ("port", int, "N", "port; 0 (the default) picks a free one"),
    ("time_scale", float, "F", "wall seconds per emulated second (default %(default)s)"),
    ("max_running", int, "N", "the account's concurrency limit (default %(default)s)"),
    ("seed", int, "N", "random seed (default %(default)s)"),
    ("job_seconds", _job_seconds, "MIN:MAX", "emulated job durations (default 20:60)"),
    ("faults", str, "SPEC", "fault spec, see runner/emulator/faults.py"),
    ("result_ttl", float, "SECONDS", "emulated seconds results stay fetchable (default: forever)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's command-line options."""
    default = EmulatorConfig()
    for name, parse, metavar, text in _OPTIONS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag, type=parse, default=getattr(default, name), metavar=metavar, help=text
        )
    parser.add_argument("--synthetic", action="store_true", help="cheap deterministic output bytes")


def main(argv: list[str], *, prog: str = "python -m runner.emulator") -> int:
    """Parse the emulator's options from ``argv`` and serve (see ``run``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Serve the fal emulator on loopback.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is ``listening on URL``."""
    try:
        options = {name: getattr(args, name) for name, *_ in _OPTIONS}
        config = EmulatorConfig(synthetic=args.synthetic, **options)
        sock = _bind(config.host, config.port)
    except (ValueError, OSError) as exc:
        print(f"raybatch emulator: {exc}", file=sys.stderr)
        return 2
    server = _uvicorn_server(create_app(config))

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn swaps in its own handlers while serving and re-raises the signal after;
    # ours turns that (and a signal arriving before serving starts) into a clean exit.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"listening on {_url(sock)}", flush=True)
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 0
