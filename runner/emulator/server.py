"""Serve the emulator with uvicorn: in a background thread for tests, or in the foreground
for ``raybatch emulator`` / ``python -m runner.emulator``.

It serves two origins, or three: the queue (with fal's REST API) on ``--host/--port``,
storage and the CDN on a second socket (``--storage-host/--storage-port``), and, with
``--backup-host``, fal's backup queue host on the queue's port at that address. All share
one account. Every socket is bound (and listening) before anything else happens, so
``--port 0`` can print the real port, and clients that connect at once wait in the backlog
instead of being refused. The first stdout line is ``listening on QUEUE_URL`` (parsers
read just that); then ``storage on URL`` and, with a backup host, ``backup on URL``.

With ``--state-dir DIR`` the origins are recorded in ``DIR/origins.json`` and bound again
on the next start when their ports are free; a port that is not free is replaced by a
free one, with a warning on stderr naming both (requests recorded with the old origin must
then be reached through the new one). ``--exit-with-stdin`` makes the emulator shut down
(cleanly, saving its state) when its standard input reaches end of file: the parent that
started it holds the pipe's other end, and its death, even by SIGKILL, closes it.

The ``connect=refuse`` fault closes the queue origin's listening socket for as long as the
rule is in force (connections are then refused by the kernel, as to a host that is down)
and binds it again afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from ._origins import Origins
from ._persist import read_origins, write_origins
from .account import Renderer
from .app import Emulator, create_app
from .config import EmulatorConfig

#: How often the refusal watcher looks at the fault plan (wall seconds).
_REFUSAL_POLL = 0.05


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


def _port_of(url: str | None) -> int:
    return int(httpx.URL(url).port or 0) if url else 0


class Sockets:
    """The bound sockets of one emulator and the origins they make."""

    def __init__(self, config: EmulatorConfig, warn: Callable[[str], None]) -> None:
        recorded = read_origins(Path(config.state_dir)) if config.state_dir else {}
        self.queue = self._bind_again(config.host, config.port, recorded.get("queue"), warn)
        try:
            storage_host = config.storage_host or config.host
            self.storage = self._bind_again(
                storage_host, config.storage_port, recorded.get("storage"), warn
            )
            self.backup: socket.socket | None = None
            if config.backup_host:
                port = self.queue.getsockname()[1]
                self.backup = _bind(config.backup_host, port)
        except OSError:
            self.close()
            raise
        backup = _url(self.backup) if self.backup else None
        self.origins = Origins(_url(self.queue), _url(self.storage), backup)
        if config.state_dir:
            names = {"queue": self.origins.queue, "storage": self.origins.storage}
            write_origins(Path(config.state_dir), names | ({"backup": backup} if backup else {}))

    @staticmethod
    def _bind_again(
        host: str, port: int, recorded: str | None, warn: Callable[[str], None]
    ) -> socket.socket:
        """Bind ``port``, or else the port recorded last time, or else a free one."""
        wanted = port or _port_of(recorded)
        if not wanted:
            return _bind(host, 0)
        try:
            return _bind(host, wanted)
        except OSError as exc:
            if port or exc.errno != errno.EADDRINUSE:
                raise
            sock = _bind(host, 0)
            warn(
                f"raybatch emulator: port {wanted} recorded for {recorded} is in use; serving"
                f" on {_url(sock)} instead (requests recorded with the old origin must be"
                " reached through the new one)"
            )
            return sock

    def listening(self) -> list[socket.socket]:
        """Every socket, the queue's first."""
        return [s for s in (self.queue, self.storage, self.backup) if s is not None]

    def close(self) -> None:
        """Close every socket (idempotent)."""
        for sock in (getattr(self, n, None) for n in ("queue", "storage", "backup")):
            if sock is not None:
                sock.close()


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


async def _watch_refusals(server: uvicorn.Server, emulator: Emulator, address: Any) -> None:
    """Close the queue origin's listener while ``connect=refuse`` is in force; reopen it.

    The protocol factory is built the way uvicorn's ``startup`` builds it, from the
    server's public attributes (uvicorn 0.55: ``config.http_protocol_class``,
    ``server_state``, ``lifespan.state``).
    """
    loop = asyncio.get_running_loop()
    protocol: Any = server.config.http_protocol_class
    closed = False
    while not server.should_exit:
        refusing = server.started and emulator.faults.refusing()
        if refusing and not closed:
            server.servers[0].close()
            closed = True
        elif not refusing and closed:
            factory = functools.partial(
                protocol,
                config=server.config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
            )
            sock = _bind(address[0], address[1])
            server.servers[0] = await loop.create_server(factory, sock=sock, backlog=2048)
            closed = False
        await asyncio.sleep(_REFUSAL_POLL)


async def _serve(server: uvicorn.Server, sockets: Sockets, emulator: Emulator) -> None:
    """Serve every socket until ``server.should_exit``, watching for refusal faults."""
    address = sockets.queue.getsockname()[:2]
    watcher = asyncio.ensure_future(_watch_refusals(server, emulator, address))
    try:
        await server.serve(sockets=sockets.listening())
    finally:
        watcher.cancel()


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EmulatorServer:
    """The emulator on free loopback ports, served from a background thread.

    Usage::

        with EmulatorServer(EmulatorConfig(job_seconds=(0.2, 0.5))) as emulator:
            httpx.post(f"{emulator.url}/luma/agent/ray/v3.2/text-to-video", ...)
            assert emulator.stats()["submits"] == 1

    ``url`` is the queue origin, ``storage_url`` the storage/CDN origin, ``backup_url``
    the backup host (None unless ``backup_host`` is set).
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
        self.url = self.storage_url = ""
        self.backup_url: str | None = None
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sockets: Sockets | None = None
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

    @property
    def emulator(self) -> Emulator:
        """The live state behind the app."""
        emulator: Emulator = self.app.state.emulator
        return emulator

    def start(self) -> None:
        """Bind, start serving and return once the app's lifespan has started."""
        sockets = self._sockets = Sockets(self.config, _warn)
        self.url, self.storage_url = sockets.origins.queue, sockets.origins.storage
        self.backup_url = sockets.origins.backup
        self.emulator.set_origins(sockets.origins)
        server = self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(_serve(server, sockets, self.emulator),),
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
        if self._sockets is not None:
            self._sockets.close()
        if self._client is not None:
            self._client.close()
        self._server = self._thread = self._sockets = self._client = None

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        if self._client is None:
            # The storage origin: it answers even while a fault refuses the queue's.
            # Plain HTTP on loopback: not loading the CA bundle saves ~0.1 s per client.
            self._client = httpx.Client(base_url=self.storage_url, verify=False, timeout=30)
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


def _globs(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


# (EmulatorConfig field, parser, metavar, help); the flag is the field with dashes.
_OPTIONS: list[tuple[str, Callable[[str], Any], str, str]] = [
    ("host", str, "HOST", "interface of the queue origin (default %(default)s)"),
    ("port", int, "N", "queue port; 0 (the default) picks a free one"),
    ("storage_host", str, "HOST", "interface of the storage/CDN origin (default: --host)"),
    ("storage_port", int, "N", "storage/CDN port; 0 (the default) picks a free one"),
    ("backup_host", str, "HOST", "also serve fal's backup queue host here, on the queue's port"),
    ("time_scale", float, "F", "wall seconds per emulated second (default %(default)s)"),
    ("max_running", int, "N", "the account's concurrency limit (default %(default)s)"),
    ("seed", int, "N", "random seed (default %(default)s)"),
    ("job_seconds", _job_seconds, "MIN:MAX", "emulated job durations (default 20:60)"),
    ("faults", str, "SPEC", "fault spec, see runner/emulator/faults.py"),
    ("result_ttl", float, "SECONDS", "emulated seconds results stay fetchable (default: forever)"),
    ("max_streams", int, "N", "status streams open per key at most; more get 429 (0: no cap)"),
    (
        "cancel_running",
        _choice("finish", "abort"),
        "MODE",
        "cancelling a running request: finish (bills, normal result; default) or abort",
    ),
    (
        "unknown_app",
        _choice("404", "accept"),
        "MODE",
        "submit to an app it does not serve: 404 (default) or accept and echo",
    ),
    ("apps", _globs, "GLOBS", "owner/app globs served with the echo renderer (test/*,bench/*)"),
    (
        "v2v_long",
        _choice("first", "reject"),
        "MODE",
        "video-to-video source longer than duration: first (default) or reject",
    ),
    (
        "v2v_short",
        _choice("pad", "loop", "source", "reject"),
        "MODE",
        "video-to-video source shorter than duration: pad (default), loop, source or reject",
    ),
    ("state_dir", str, "DIR", "keep requests, results and files here across restarts"),
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
    parser.add_argument(
        "--realistic-sizes",
        action="store_true",
        help="pad rendered videos to about the size of Ray 3.2's outputs",
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="shut down when standard input reaches end of file (the parent went away)",
    )


def main(argv: list[str], *, prog: str = "python -m runner.emulator") -> int:
    """Parse the emulator's options from ``argv`` and serve (see ``run``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Serve the fal emulator on loopback.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _exit_at_eof(server: uvicorn.Server) -> None:
    """Block until standard input ends, then ask the server to stop."""
    stream = sys.stdin.buffer
    while stream.read(65536):
        pass
    server.should_exit = True


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (or stdin's EOF); the first stdout line is
    ``listening on URL``."""
    try:
        options = {name: getattr(args, name) for name, *_ in _OPTIONS}
        config = EmulatorConfig(
            synthetic=args.synthetic, realistic_sizes=args.realistic_sizes, **options
        )
        sockets = Sockets(config, _warn)
    except (ValueError, OSError) as exc:
        print(f"raybatch emulator: {exc}", file=sys.stderr)
        return 2
    app = create_app(config)
    emulator: Emulator = app.state.emulator
    emulator.set_origins(sockets.origins)
    server = _uvicorn_server(app)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn swaps in its own handlers while serving and re-raises the signal after;
    # ours turns that (and a signal arriving before serving starts) into a clean exit.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"listening on {sockets.origins.queue}", flush=True)
        print(f"storage on {sockets.origins.storage}", flush=True)
        if sockets.origins.backup:
            print(f"backup on {sockets.origins.backup}", flush=True)
        if args.exit_with_stdin:
            threading.Thread(target=_exit_at_eof, args=(server,), daemon=True).start()
        asyncio.run(_serve(server, sockets, emulator))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sockets.close()
    return 0
