"""Every error raybatch raises, classified once.

The tree is the classification: code that decides what to do with a failure asks
``isinstance(exc, RetryableError)`` (or reads ``exc.kind``), never the message text.

    RaybatchError
    ├── ManifestError            bad manifest, media or command line: exit 2, nothing submitted
    ├── RetryableError           worth trying again after a backoff
    │   ├── TransportError       the request failed in transit (connect, read, timeout)
    │   │   └── SubmitUnconfirmed  a submit POST may have reached fal: the ambiguous case
    │   ├── RateLimited          HTTP 429; carries ``retry_after`` when fal sent one
    │   ├── ServiceUnavailable   HTTP 5xx from fal's ingress or the app
    │   ├── RemoteJobError       the request COMPLETED with a retryable ``error_type``
    │   └── DownloadError        an output download broke off, was cut short or is corrupt
    ├── PermanentError           this job fails; the rest of the batch goes on
    │   ├── InputRejected        HTTP 4xx validation (422 ``detail``)
    │   ├── ContentModerated     the input or prompt was refused by moderation
    │   ├── RemoteJobFailed      the request COMPLETED with a non-retryable ``error_type``
    │   ├── RequestLost          fal does not know the request id (404 NOT_FOUND)
    │   ├── RequestRefused       fal refused a call about a request (another 4xx)
    │   ├── ResultExpired        the result was gone before it was fetched
    │   ├── UnsafeOutput         an output URL or file name that may not be followed
    │   └── LocalStepFailed      a local step (cut, frame, stitch) could not do its work
    └── FatalError               stop the whole run: exit 3
        ├── AuthError            HTTP 401/403: the key is wrong
        ├── DiskError            ENOSPC, EIO and friends while writing outputs or state
        ├── OutageTooLong        fal stayed unreachable past the outage limit
        └── StateError           the state file cannot be used
            ├── StateLocked      another run holds the output directory
            └── IllegalTransition  a job moved from a state it cannot leave that way (a bug)

What happens on each is decided in one place, the fault-policy table
(``runner/pipeline/_policy.py``). ``outage`` marks a failure that says the service itself
may be down (no answer at all, or a 5xx): the run's outage gate counts those.

Messages never contain the API key: the client builds them from status codes, fal's
``detail`` and request ids only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

Kind = Literal["manifest", "retryable", "permanent", "fatal"]


class RaybatchError(Exception):
    """Base of every error raybatch raises on purpose."""

    kind: ClassVar[Kind] = "fatal"
    exit_code: ClassVar[int] = 3
    #: The service may be down (no answer, or a 5xx); see the module docstring.
    outage: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is and what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        parts = [f"{where}:" if where else "", f"{self.field}:" if self.field else ""]
        return " ".join([*filter(None, parts), self.message])


#: Problems a ManifestError lists in full; the rest are counted.
MAX_SHOWN_PROBLEMS = 20


def capped(problems: list[Problem], footer: Problem | None = None) -> list[Problem]:
    """The first :data:`MAX_SHOWN_PROBLEMS` problems, a count of the rest, then ``footer``
    (what to do about all of them) whatever the count."""
    if len(problems) > MAX_SHOWN_PROBLEMS:
        file = problems[0].file
        rest = len(problems) - MAX_SHOWN_PROBLEMS
        problems = [*problems[:MAX_SHOWN_PROBLEMS], Problem(file, None, "", f"... and {rest} more")]
    return problems + ([footer] if footer is not None else [])


class ManifestError(RaybatchError):
    """The manifest, a media file it names, or the command line is wrong (exit 2)."""

    kind = "manifest"
    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", line=None, field="", message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        super().__init__("\n".join(str(p).strip() for p in problems))


class RetryableError(RaybatchError):
    """A failure worth retrying after a backoff."""

    kind = "retryable"
    exit_code = 1


class TransportError(RetryableError):
    """The request failed in transit: connection refused or reset, or a timeout."""

    outage = True


class SubmitUnconfirmed(TransportError):
    """A submit POST failed after it may have reached fal: the request may exist and bill."""


class RateLimited(RetryableError):
    """fal answered 429; ``retry_after`` is the delay it asked for, in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServiceUnavailable(RetryableError):
    """fal's ingress or the app answered with a 5xx."""

    outage = True


class RemoteJobError(RetryableError):
    """The request completed with an ``error_type`` that a new attempt may not hit."""


class DownloadError(RetryableError):
    """An output download broke off, arrived short, or did not match its checksum
    (``outage`` when no answer came, or a 5xx)."""

    def __init__(self, message: str, *, outage: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.outage = outage


class PermanentError(RaybatchError):
    """This job cannot succeed as it stands; the rest of the batch goes on."""

    kind = "permanent"
    exit_code = 1


class InputRejected(PermanentError):
    """fal refused the input (HTTP 4xx validation, usually 422 with ``detail``)."""


class ContentModerated(PermanentError):
    """fal's moderation refused the prompt or the media."""


class RemoteJobFailed(PermanentError):
    """The request completed with an ``error_type`` that retrying will not fix."""


class RequestLost(PermanentError):
    """fal does not know this request id (404 NOT_FOUND)."""


class RequestRefused(PermanentError):
    """fal refused a status or cancel call about a request with a 4xx other than 404: the
    request may still exist (and bill), so it is never submitted again silently."""


class ResultExpired(PermanentError):
    """The request's result was no longer retrievable when we asked for it."""


class UnsafeOutput(PermanentError):
    """An output URL or file name that raybatch refuses to follow or write."""


class LocalStepFailed(PermanentError):
    """A local step (cutting a segment, extracting a frame, stitching) failed on its input."""


class FatalError(RaybatchError):
    """Nothing more can be done in this run (exit 3)."""

    kind = "fatal"
    exit_code = 3


class AuthError(FatalError):
    """fal refused the key (HTTP 401/403)."""


class DiskError(FatalError):
    """Writing an output or the state failed at the OS level (ENOSPC, EIO, ...)."""


class OutageTooLong(FatalError):
    """fal (or its CDN) stayed unreachable for longer than the run's outage limit."""


class StateError(FatalError):
    """The state file is unusable: corrupt, from a newer version, or unreadable."""


class StateLocked(StateError):
    """Another raybatch process holds this output directory."""


class IllegalTransition(StateError):
    """A transition from a state it does not start from: a bug, never a user's mistake."""
