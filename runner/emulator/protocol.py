"""Wire-level facts of fal's queue protocol shared by the emulator's modules.

Endpoint ids and the URLs built from them, the request error table, the canned bodies
every route answers with, and the one trick an ASGI app needs to hang up on a client.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

REQUEST_ID_HEADER = "x-fal-request-id"
#: Set with a 504 when the client's own X-Fal-Request-Timeout deadline fired.
TIMEOUT_TYPE_HEADER = "X-Fal-Request-Timeout-Type"

#: fal's documented request ``error_type`` values: HTTP status and a message.
REQUEST_ERRORS: dict[str, tuple[int, str]] = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "Runner startup timed out"),
    "runner_scheduling_failure": (503, "Could not schedule a runner for the request"),
    "runner_connection_timeout": (503, "Connection to the runner timed out"),
    "runner_disconnected": (503, "Runner disconnected"),
    "runner_connection_refused": (503, "Runner refused the connection"),
    "runner_connection_error": (503, "Could not connect to the runner"),
    "runner_incomplete_response": (502, "Runner sent an incomplete response"),
    "runner_server_error": (500, "Runner server error"),
    "client_disconnected": (499, "Client disconnected"),
    "client_cancelled": (499, "Request was cancelled by the client"),
    "bad_request": (400, "Bad request"),
    "internal_error": (500, "Internal server error"),
}

#: First segments that make an endpoint id three segments deep before its path.
NAMESPACES = ("workflows", "comfy")
_LEGACY_ID = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")


def app_prefix(endpoint_id: str) -> str:
    """The ``owner/app`` part of an endpoint id, as fal's clients parse it (§2).

    ``luma/agent/ray/v3.2/video-to-video`` gives ``luma/agent``; a namespaced id keeps
    its namespace; the legacy ``123-alias`` form becomes ``123/alias``.
    """
    parts = endpoint_id.strip("/").split("/")
    if len(parts) == 1:
        legacy = _LEGACY_ID.match(parts[0])
        if legacy is None:
            raise ValueError(f"invalid endpoint id {endpoint_id!r}: expected owner/app[/path]")
        return "/".join(legacy.groups())
    depth = 3 if parts[0] in NAMESPACES else 2
    if len(parts) < depth or not all(parts[:depth]):
        raise ValueError(f"invalid endpoint id {endpoint_id!r}")
    return "/".join(parts[:depth])


def is_app_prefix(segments: list[str]) -> bool:
    """Whether URL segments before ``/requests/`` name an app only (no endpoint sub-path)."""
    depth = 3 if segments and segments[0] in NAMESPACES else 2
    return len(segments) == depth and all(segments)


def iso_timestamp(epoch: float) -> str:
    """fal's log timestamp format: ISO 8601 in UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def not_found() -> JSONResponse:
    """fal's answer for a request id it does not know (or no longer knows)."""
    return JSONResponse({"status": "NOT_FOUND"}, status_code=404)


def unauthorized() -> JSONResponse:
    """fal's answer for a missing, malformed or revoked key; it never echoes the key."""
    return JSONResponse({"detail": "Unauthorized"}, status_code=401)


def request_error_parts(error_type: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, flat body and headers of a request (infrastructure) error, per §3's table."""
    status, message = REQUEST_ERRORS[error_type]
    return status, {"detail": message, "error_type": error_type}, {"X-Fal-Error-Type": error_type}


# Where the app keeps the connection's transport, found on the server's own `send`.
_TRANSPORT = "raybatch.emulator.transport"


def remember_transport(scope: Scope, send: Send) -> None:
    """Note the connection's transport in the scope, before middleware wraps ``send``.

    uvicorn's ``send`` is a bound method of its per-request cycle, which holds the
    transport. Starlette's middleware replaces ``send`` with closures, so this must run
    at the outermost layer.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        scope[_TRANSPORT] = transport


async def drop_connection(scope: Scope, receive: Receive) -> None:
    """Close the client's connection without (the rest of) a response.

    ASGI has no message for this: an app that raises before responding gets a 500 from
    uvicorn instead. Closing the transport and then waiting for the server to report the
    disconnect makes uvicorn end the cycle quietly, and the client sees a transport
    error (``httpx.RemoteProtocolError``), exactly like a network failure.
    """
    transport = scope.get(_TRANSPORT)
    if not isinstance(transport, asyncio.BaseTransport):
        raise RuntimeError("this server does not expose its transport: cannot drop")
    transport.close()
    while (await receive())["type"] != "http.disconnect":
        pass


class DropConnection(Response):
    """A "response" that hangs up instead of answering."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hang up on the client."""
        await drop_connection(scope, receive)
