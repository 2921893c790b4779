"""Every failure of a fal call becomes exactly one error class, decided here (see the
package docstring's table)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from ..errors import (
    AuthError,
    ContentModerated,
    InputRejected,
    RateLimited,
    RaybatchError,
    RemoteJobError,
    RemoteJobFailed,
    RequestLost,
    RequestRefused,
    ResultExpired,
    ServiceUnavailable,
    SubmitUnconfirmed,
    TransportError,
)
from ._wire import Op, Status, json_or_none, parse_retry_after

#: ``error_type`` values after which a new attempt may well succeed (fal's request errors).
RETRYABLE_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "client_disconnected",
    }
)
_PERMANENT_ERROR_TYPES = frozenset({"bad_request", "client_cancelled"})
_MODERATION = re.compile(r"moderat|content[ _-]?polic|nsfw", re.IGNORECASE)


def classify_completed(status: Status) -> RaybatchError | None:
    """The error a COMPLETED status reports, or ``None`` when the result fetch must decide.

    ``None`` covers success, an ``error`` without ``error_type`` (a 422 validation error
    shows only at result fetch) and an unknown ``error_type`` (the result's HTTP status
    then tells a retryable 5xx from a permanent 4xx).
    """
    if status.state != "COMPLETED" or not status.error_type:
        return None
    cls = error_type_class(status.error_type)
    if cls is None:
        return None
    return cls(
        f"fal request failed: {status.error or status.error_type} ({status.error_type})",
        error_type=status.error_type,
    )


# -- classification ------------------------------------------------------------------------


def transport_error(exc: httpx.RequestError, op: Op) -> RaybatchError:
    """A request that got no HTTP answer. Only connect-phase failures prove it was not sent."""
    reason = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
    never_sent = isinstance(
        exc,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol,
    )
    if op == "submit" and not never_sent:
        return SubmitUnconfirmed(f"submit may have reached fal but no answer came ({reason})")
    return TransportError(f"fal {op} request failed in transit ({reason})")


def classify(response: httpx.Response, op: Op) -> RaybatchError:
    """The error class of a non-2xx answer (see the module docstring's table)."""
    code = response.status_code
    body = json_or_none(response)
    fields = body if isinstance(body, dict) else {}
    detail = fields.get("detail")
    body_type = fields.get("error_type")
    error_type = body_type if isinstance(body_type, str) else None
    error_type = error_type or response.headers.get("x-fal-error-type")
    request_id = response.headers.get("x-fal-request-id")
    kw: dict[str, Any] = {"status_code": code, "request_id": request_id, "error_type": error_type}
    text = detail_text(detail) or (error_type or "")
    said = f": {text}" if text else ""

    if code in (401, 403):
        what = (
            "fal's CDN rejected the upload token" if op == "upload" else "fal rejected the API key"
        )
        return AuthError(f"{what} (HTTP {code})", **kw)
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(f"fal is rate limiting ({op}, HTTP 429)", retry_after=retry_after, **kw)
    if code in (408, 409):
        return TransportError(f"fal {op} answered HTTP {code}; worth another try{said}", **kw)
    if code == 504 and response.headers.get("x-fal-request-timeout-type") == "user":
        return RemoteJobFailed(
            "fal dropped the request: its X-Fal-Request-Timeout start deadline passed", **kw
        )
    if code == 404 and fields.get("status") == "NOT_FOUND":
        if op == "result":
            return ResultExpired("fal no longer holds this request's result (404 NOT_FOUND)", **kw)
        return RequestLost("fal does not know this request (404 NOT_FOUND)", **kw)
    if 400 <= code < 500 and mentions_moderation(detail, error_type):
        return ContentModerated(f"fal's moderation refused the input{said}", **kw)
    if code in (400, 422) and isinstance(detail, list):
        return InputRejected(f"fal rejected the input{said}", **kw)
    if op == "result" and error_type:
        cls = error_type_class(error_type) or (RemoteJobError if code >= 500 else RemoteJobFailed)
        return cls(f"fal request failed{said} ({error_type})", **kw)
    retryable = response.headers.get("x-fal-retryable", "").lower()
    if op == "result" and retryable in ("true", "false"):
        cls = RemoteJobError if retryable == "true" else RemoteJobFailed
        return cls(f"fal request failed (HTTP {code}){said}", **kw)
    if code >= 500:
        ingress = request_id is None and "nginx" in response.text.lower()
        source = "fal's ingress (nginx, no request id)" if ingress else "fal"
        if op == "submit" and code in (502, 504):
            # A gateway error means the proxy lost the queue's answer, not that the queue
            # refused: the request may exist (and bill) all the same.
            return SubmitUnconfirmed(f"{source} answered HTTP {code} to submit{said}", **kw)
        return ServiceUnavailable(f"{source} answered HTTP {code} to {op}{said}", **kw)
    if 400 <= code < 500:
        message = f"fal refused the {op} (HTTP {code}){said}"
        if op == "result":
            return RemoteJobFailed(message, **kw)
        if op in ("status", "cancel"):
            # Only 404 NOT_FOUND says fal does not know the request; any other refusal
            # leaves it possibly alive (and billing): never a reason to pay again.
            return RequestRefused(message, **kw)
        return InputRejected(message, **kw)
    return ServiceUnavailable(f"fal answered {op} with unexpected HTTP {code}", **kw)


def error_type_class(error_type: str) -> type[RaybatchError] | None:
    """The class for a known fal ``error_type``; ``None`` when unknown."""
    if _MODERATION.search(error_type):
        return ContentModerated
    if error_type in RETRYABLE_ERROR_TYPES:
        return RemoteJobError
    if error_type in _PERMANENT_ERROR_TYPES:
        return RemoteJobFailed
    return None


def mentions_moderation(detail: object, error_type: str | None) -> bool:
    """Whether fal's own words (error types and messages, not the echoed input) say moderation."""
    words = [error_type or ""]
    if isinstance(detail, str):
        words.append(detail)
    elif isinstance(detail, list):
        words += [f"{e.get('type')} {e.get('msg')}" for e in detail if isinstance(e, dict)]
    return any(_MODERATION.search(w) for w in words)


def detail_text(detail: object) -> str:
    """fal's ``detail`` made readable: ``prompt: field required; ...`` (loc minus "body")."""
    if isinstance(detail, str):
        return detail[:500]
    if not isinstance(detail, list):
        return ""
    parts = []
    for entry in detail:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        loc = entry.get("loc")
        where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
        msg = str(entry.get("msg") or entry.get("type") or "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)[:500]
