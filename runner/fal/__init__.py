"""The fal HTTP client: queue (submit, status, stream, result, cancel) and storage upload.

Stateless apart from a cached CDN upload token. It never retries, not even the transport
(``retries=0``): the retry policy lives in the scheduler and is driven by the error class,
so every failure leaves here as exactly one :mod:`runner.errors` class, decided in one
place: :func:`transport_error` for requests that got no answer, :func:`classify` for
HTTP answers. ``op`` below is submit, status, result, cancel, token (CDN token) or upload.

=======================================================  ==================================
what happened                                            raised
=======================================================  ==================================
connect error / connect timeout / pool timeout           TransportError (never sent)
any other transport error or timeout                     submit: SubmitUnconfirmed;
                                                         others: TransportError
401 / 403                                                AuthError (upload: CDN token)
429                                                      RateLimited(retry_after)
408 / 409                                                TransportError
504 with ``X-Fal-Request-Timeout-Type: user``            RemoteJobFailed
502 / 504 to a submit (the proxy lost the answer)        SubmitUnconfirmed
404 ``{"status": "NOT_FOUND"}``                          result: ResultExpired; status:
                                                         RequestLost; cancel: "not_found"
moderation named in a 4xx's ``detail``/``error_type``    ContentModerated
400 / 422 with a ``detail`` list                         InputRejected ("field: msg; ...")
result error with ``error_type`` (body or header)        RETRYABLE_ERROR_TYPES:
                                                         RemoteJobError; moderation:
                                                         ContentModerated; bad_request,
                                                         client_cancelled, unknown 4xx:
                                                         RemoteJobFailed; unknown 5xx:
                                                         RemoteJobError
result error with ``X-Fal-Retryable: true|false``       RemoteJobError / RemoteJobFailed
other 5xx                                                ServiceUnavailable (says whether
                                                         it looked like fal's ingress)
other 4xx                                                submit/token/upload: InputRejected;
                                                         result: RemoteJobFailed;
                                                         status/cancel: RequestRefused
2xx with malformed JSON or missing fields                submit: SubmitUnconfirmed (unless
                                                         x-fal-request-id names it);
                                                         others: ServiceUnavailable
=======================================================  ==================================

``result()`` is only called once a status said COMPLETED, so a 404 NOT_FOUND there means
the result's retention ran out: it raises ``ResultExpired`` itself (no flag needed).

The key is sent only to the configured queue and REST origins, is excluded from every
repr, and is scrubbed from every message this module raises.
"""

from __future__ import annotations

from ._classify import RETRYABLE_ERROR_TYPES, classify_completed
from ._client import FalClient
from ._config import USER_AGENT, FalConfig
from ._storage import MULTIPART_THRESHOLD, PART_SIZE
from ._wire import RETRY_AFTER_CAP, Result, Status, Submission, parse_retry_after

__all__ = (
    "MULTIPART_THRESHOLD",
    "PART_SIZE",
    "RETRYABLE_ERROR_TYPES",
    "RETRY_AFTER_CAP",
    "USER_AGENT",
    "FalClient",
    "FalConfig",
    "Result",
    "Status",
    "Submission",
    "classify_completed",
    "parse_retry_after",
)
