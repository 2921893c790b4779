"""fal's wire formats: what a submit, a status and a result look like, and how
answers, events, endpoint ids and origins are parsed."""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from urllib.parse import quote

import httpx

from ..errors import (
    InputRejected,
    ServiceUnavailable,
)

Op = Literal["submit", "status", "result", "cancel", "token", "upload"]
State = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

RETRY_AFTER_CAP = 300.0

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LEGACY_ID = re.compile(r"(\d+)-([A-Za-z0-9][A-Za-z0-9._-]*)")
_NAMESPACES = frozenset({"workflows", "comfy"})


@dataclass(frozen=True)
class Submission:
    """What fal answered to a submit: the request id and where to ask about it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None


@dataclass(frozen=True)
class Status:
    """One status report. COMPLETED may still carry ``error``/``error_type`` (see
    :func:`classify_completed`); there is no FAILED state at fal."""

    state: State
    queue_position: int | None
    logs: list[dict[str, Any]] | None
    error: str | None
    error_type: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """A finished request's output, as the model returned it."""

    data: dict[str, Any]
    request_id: str | None
    billable_units: float | None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or HTTP-date), capped at 300 s."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


# -- parsing -------------------------------------------------------------------------------


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


def json_object(response: httpx.Response, op: Op) -> dict[str, Any]:
    body = json_or_none(response)
    if not isinstance(body, dict):
        raise ServiceUnavailable(
            f"fal's {op} answer was not a JSON object ({len(response.content)} bytes)",
            status_code=response.status_code,
        )
    return body


def string_field(body: Mapping[str, Any], name: str, op: Op) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ServiceUnavailable(f"fal's {op} answer has no {name!r}")
    return value


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_status(body: Mapping[str, Any]) -> Status:
    state = body.get("status")
    if state not in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
        raise ServiceUnavailable(f"fal sent an unknown request status {str(state)[:40]!r}")
    logs = body.get("logs")
    metrics = body.get("metrics")
    error, error_type = body.get("error"), body.get("error_type")
    return Status(
        state=cast(State, state),
        queue_position=int_or_none(body.get("queue_position")),
        logs=[e for e in logs if isinstance(e, dict)] if isinstance(logs, list) else None,
        error=str(error) if error else None,
        error_type=str(error_type) if error_type else None,
        metrics=metrics if isinstance(metrics, dict) else {},
    )


def parse_event(data: str) -> Status | None:
    """An SSE event's status; ``None`` for an empty or status-less event (keep-alive)."""
    if not data.strip():
        return None
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ServiceUnavailable("fal's status stream sent malformed JSON") from exc
    if not isinstance(body, dict) or "status" not in body:
        return None
    return parse_status(body)


class SSEParser:
    """The ``data:`` part of server-sent events, fed text as it arrives in any split.

    Comments (``:``), ``event:``/``id:``/``retry:`` fields are skipped; lines end in LF or
    CRLF (a lone CR, legal but unseen in practice, is not treated as a line end).
    """

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        """Add text; return the data of every event it completed."""
        *lines, self._pending = (self._pending + text).split("\n")
        events = []
        for raw in lines:
            line = raw.removesuffix("\r")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
        return events


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """(owner/app prefix, full id) of an endpoint id, by fal_client's ``AppId`` rule."""
    parts = endpoint.split("/")
    if not all(_SEGMENT.fullmatch(p) for p in parts):
        raise InputRejected(f"not a fal endpoint id: {endpoint[:100]!r}")
    if len(parts) == 1:
        legacy = _LEGACY_ID.fullmatch(endpoint)
        if legacy is None:
            raise InputRejected(f"not a fal endpoint id (no owner/app): {endpoint[:100]!r}")
        parts = [legacy.group(1), legacy.group(2)]
    keep = 3 if parts[0] in _NAMESPACES else 2
    if len(parts) < keep:
        raise InputRejected(f"not a fal endpoint id (namespace needs owner/app): {endpoint!r}")
    return "/".join(parts[:keep]), "/".join(parts)


def origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def origin_text(url: str) -> str:
    try:
        scheme, host, port = origin(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def part_etag(response: httpx.Response) -> str:
    etag = response.headers.get("etag")
    if not etag:
        body = json_or_none(response)
        etag = body.get("etag") if isinstance(body, dict) else None
    if not isinstance(etag, str) or not etag:
        raise ServiceUnavailable("fal's CDN answered a multipart part without an ETag")
    return etag


def header_safe(name: str) -> str:
    # httpx sends headers as ASCII; percent-encode anything else rather than fail the upload.
    return name if name.isascii() and name.isprintable() else quote(name)
