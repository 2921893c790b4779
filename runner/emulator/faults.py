"""Fault injection: a small spec language, scripted, seeded-random or timed, and canned answers.

Grammar (whitespace is ignored, clauses are separated by ``;``)::

    spec   := clause (";" clause)*
    clause := "seed=" INT                          seed of the random faults (default: the
                                                   emulator's seed)
            | ops "#" N ["-" M] "=" fault          scripted: the Nth (to Mth) call of each op
            | ["rate:"] ops [window] "=" fault ["@" RATE]
                                                   random: each call of the ops, with probability
                                                   RATE (default 1, i.e. every call), and only
                                                   inside the time window when one is given
    ops    := "all" | op ("," op)*                 ``all``: every fal call (all ops but connect)
    op     := submit | status | stream | result | cancel | upload | token | cdn | pricing
            | connect                              connections to the primary queue origin
    window := "@+" S "s..+" [E "s"]                wall seconds from the rule's installation:
                                                   from S up to E (no E: for good)

Calls are counted per op from 1, and windows are timed, from the moment the rule is installed
(so a rule added at run time through ``POST /_emulator/faults`` means "the Nth call from
now" or "from now on"; ``POST /_emulator/reset`` restarts both). Scripted rules are checked
before random ones; the first match wins. Example of an outage, every fal call answering
503 for 100 s: ``all@+0s..+100s=503``.

======================  ========  ===================================================
fault                   ops       effect
======================  ========  ===================================================
``NNN`` (400-599)       any       that status, JSON ``{"detail": ...}``, with x-fal-request-id
``502-nginx`` (503,504) any       ingress error: nginx HTML page, no x-fal-request-id
``429-retry-after:S``   any       429 with ``Retry-After: S``
``504-timeout``         any       504 request_timeout with ``X-Fal-Request-Timeout-Type: user``
``auth``                any       401, as if the key were revoked
``reset-before``        any       hang up before doing anything
``drop-after``          any       do the work (a submit IS recorded), then hang up
``slow:S``              any       wait S wall seconds, then answer normally
``regress``             status    an IN_PROGRESS request goes back IN_QUEUE (once per request)
``error:TYPE``          submit    the job completes with that documented ``error_type``
``validation``          submit    the job completes with a 422 validation error
``moderation``          submit    the job completes with a 422 content_policy_violation
``silent[:N]``          stream    the stream sends N events (default 0), then stays open
                                  sending neither events nor ``: ping`` comments
``close-early[:N]``     stream    the stream sends N events (default 1), then ends cleanly,
                                  never sending COMPLETED
``expire``              result    the result is gone (404 NOT_FOUND), as if past its TTL
``hostile``             result    a malicious result: every file's ``file_name`` tries to
                                  escape (``../../``, absolute, NUL, 5000 bytes), extra file
                                  fields have hostile keys (``../../evil``, ``/abs``, NUL,
                                  ``a/b/c``), plus a ``file:///etc/passwd`` and an ``ftp://``
                                  file (see :func:`hostile_result`)
``truncate``            cdn       Content-Length N, half the bytes, then hang up
``corrupt``             cdn       bytes flipped, same length
``refuse``              connect   the primary queue origin refuses TCP connections (its
                                  listening socket is closed; the backup host, if served,
                                  and the storage origin still answer). Needs a server that
                                  owns its sockets (``EmulatorServer`` or the CLI)
======================  ========  ===================================================

Example: ``seed=7; submit#3=503; submit#5=drop-after; status=429@0.05; cdn#2=truncate;
stream=silent@0.5; connect@+0s..+30s=refuse``. A fault that cannot apply to the call that
drew it (``regress`` on a request that is not running) does nothing and is not counted.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response

from .protocol import (
    REQUEST_ERRORS,
    REQUEST_ID_HEADER,
    TIMEOUT_TYPE_HEADER,
    DropConnection,
    request_error_parts,
    unauthorized,
)

#: Every op that stands for a fal call; ``all`` in a spec means these.
CALL_OPS = ("submit", "status", "stream", "result", "cancel", "upload", "token", "cdn", "pricing")
OPS = (*CALL_OPS, "connect")

# Faults that only make sense for one operation; every other kind applies to all calls.
_ONLY_FOR = {
    "regress": "status",
    "error": "submit",
    "validation": "submit",
    "moderation": "submit",
    "silent": "stream",
    "close-early": "stream",
    "expire": "result",
    "hostile": "result",
    "truncate": "cdn",
    "corrupt": "cdn",
    "refuse": "connect",
}
_PLAIN = {"auth", "reset-before", "drop-after", "504-timeout", *_ONLY_FOR} - {"error"}
#: Faults with an optional ``:N`` count of events, and its default.
_EVENT_COUNTS = {"silent": 0, "close-early": 1}
_SCRIPTED = re.compile(r"^([\w,]+)#(\d+)(?:-(\d+))?$")
_WINDOW = re.compile(r"^([\w,]+)@\+(\d+(?:\.\d+)?)s\.\.(?:\+(\d+(?:\.\d+)?)s)?$")
_NGINX = re.compile(r"^(50[234])-nginx$")

_NGINX_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Fault:
    """One fault as written in a spec; ``text`` is also its key in the stats."""

    text: str
    kind: str
    code: int = 0
    arg: str = ""

    @property
    def seconds(self) -> float:
        """The ``S`` of ``slow:S`` or ``429-retry-after:S``."""
        return float(self.arg)

    @property
    def events(self) -> int:
        """The ``N`` of ``silent:N`` or ``close-early:N``: events sent before the fault."""
        return int(self.arg) if self.arg else _EVENT_COUNTS.get(self.kind, 0)


@dataclass(frozen=True)
class Rule:
    """When a fault fires: on calls ``first..last`` of ``op``, or at random with ``rate``,
    and (random rules only) only between ``start`` and ``end`` seconds after installation."""

    op: str
    fault: Fault
    first: int = 0
    last: int = 0
    rate: float = 1.0
    start: float = 0.0
    end: float = math.inf

    @property
    def scripted(self) -> bool:
        """Whether the rule names call numbers rather than a rate."""
        return self.first > 0

    def in_window(self, since_installed: float) -> bool:
        """Whether a moment this many seconds after installation lies in the rule's window."""
        return self.start <= since_installed < self.end


def parse_fault(text: str) -> Fault:
    """Parse one fault token, e.g. ``503-nginx`` or ``error:runner_disconnected``."""
    name, _, arg = text.partition(":")
    if name.isdigit() and 400 <= int(name) <= 599 and not arg:
        return Fault(text, "status", int(name))
    if (nginx := _NGINX.match(name)) and not arg:
        return Fault(text, "nginx", int(nginx.group(1)))
    if name in ("429-retry-after", "slow"):
        if float(arg) < 0:  # float() also rejects a missing or malformed S
            raise ValueError(f"fault {text!r}: seconds must be >= 0")
        return Fault(text, name, 429 if name != "slow" else 0, arg)
    if name == "error":
        if arg not in REQUEST_ERRORS:
            raise ValueError(f"fault {text!r}: error_type must be one of {sorted(REQUEST_ERRORS)}")
        return Fault(text, name, arg=arg)
    if name in _EVENT_COUNTS and (not arg or arg.isdigit()):
        return Fault(text, name, arg=arg)
    if name in _PLAIN and not arg:
        return Fault(text, name)
    raise ValueError(f"unknown fault {text!r}")


def _ops(text: str, clause: str) -> tuple[str, ...]:
    """The ops a clause names: ``all`` or a comma-separated list."""
    ops = CALL_OPS if text == "all" else tuple(text.split(","))
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        raise ValueError(f"fault clause {clause!r}: op must be all or one of {', '.join(OPS)}")
    return ops


def parse_spec(spec: str) -> tuple[int | None, list[Rule]]:
    """Parse a whole spec into its seed (None if not given) and its rules, in order."""
    seed: int | None = None
    rules: list[Rule] = []
    for clause in (c.replace(" ", "") for c in spec.split(";")):
        if not clause:
            continue
        target, sep, fault_text = clause.partition("=")
        if not sep or not fault_text:
            raise ValueError(f"fault clause {clause!r}: expected OP=FAULT")
        if target == "seed":
            seed = int(fault_text)
            continue
        first = last = 0
        rate, start, end = 1.0, 0.0, math.inf
        if scripted := _SCRIPTED.match(target):
            ops_text, first = scripted.group(1), int(scripted.group(2))
            last = int(scripted.group(3) or first)
            if not 1 <= first <= last:
                raise ValueError(f"fault clause {clause!r}: calls count from 1")
        else:
            ops_text = target.removeprefix("rate:")
            if window := _WINDOW.match(ops_text):
                ops_text, start = window.group(1), float(window.group(2))
                end = float(window.group(3)) if window.group(3) else math.inf
                if end <= start:
                    raise ValueError(
                        f"fault clause {clause!r}: the window must end after it starts"
                    )
            elif "@" in ops_text:
                raise ValueError(f"fault clause {clause!r}: a window is written @+Ss..+Es")
            fault_text, _, rate_text = fault_text.partition("@")
            rate = float(rate_text or 1)
            if not 0 <= rate <= 1:
                raise ValueError(f"fault clause {clause!r}: rate must be within 0..1")
        fault = parse_fault(fault_text)
        only = _ONLY_FOR.get(fault.kind)
        for op in _ops(ops_text, clause):
            if (only is not None and only != op) or (op == "connect" and only != op):
                where = only or "every op but connect"
                raise ValueError(f"fault clause {clause!r}: {fault.kind} applies to {where}")
            if op == "connect" and (first or rate != 1):
                raise ValueError(f"fault clause {clause!r}: connect takes a window, not counts")
            rules.append(Rule(op, fault, first, last, rate, start, end))
    return seed, rules


class FaultPlan:
    """The faults in force, the per-op call counters and the counts of faults fired.

    ``clock`` (monotonic seconds) times the windows; tests may pass their own.
    """

    def __init__(
        self, spec: str = "", *, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._default_seed = seed
        self._clock = clock
        self._calls: Counter[str] = Counter()
        self._fired: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.spec = ""
        #: (rule, calls of its op before it was installed, when it was installed)
        self._rules: list[tuple[Rule, int, float]] = []
        self._rng = random.Random(seed)
        self.configure(spec)

    def configure(self, spec: str, *, extend: bool = False) -> None:
        """Replace the rules with ``spec``'s, or add them after the current ones."""
        seed, rules = parse_spec(spec)
        now = self._clock()
        installed = [(rule, self._calls[rule.op], now) for rule in rules]
        self._rules = [*self._rules, *installed] if extend else installed
        self.spec = "; ".join(s for s in (self.spec if extend else "", spec.strip()) if s)
        if seed is not None or not extend:
            self._rng = random.Random(self._default_seed if seed is None else seed)

    def reset(self) -> None:
        """Forget call and fire counts; scripted rules count, and windows run, from now again."""
        self._calls.clear()
        self._fired.clear()
        now = self._clock()
        self._rules = [(rule, 0, now) for rule, _, _ in self._rules]

    def draw(self, op: str) -> Fault | None:
        """Count one call of ``op`` and return the fault it should suffer, if any."""
        self._calls[op] += 1
        now = self._clock()
        for want_scripted in (True, False):
            for rule, base, installed in self._rules:
                if rule.op != op or rule.scripted != want_scripted:
                    continue
                if want_scripted:
                    if rule.first <= self._calls[op] - base <= rule.last:
                        return rule.fault
                elif rule.in_window(now - installed) and self._hit(rule.rate):
                    return rule.fault
        return None

    def refusing(self) -> bool:
        """Whether a ``connect=refuse`` rule is in force right now."""
        now = self._clock()
        return any(
            rule.op == "connect" and rule.in_window(now - installed)
            for rule, _, installed in self._rules
        )

    def _hit(self, rate: float) -> bool:
        return rate >= 1 or self._rng.random() < rate

    def record(self, op: str, fault: Fault) -> None:
        """Count a fault that actually took effect."""
        self._fired[op][fault.text] += 1

    def counts(self) -> dict[str, dict[str, int]]:
        """Faults fired, by op and fault."""
        return {op: dict(kinds) for op, kinds in self._fired.items()}

    def describe(self) -> dict[str, Any]:
        """The spec in force, the calls seen per op and the faults fired."""
        return {"spec": self.spec, "calls": dict(self._calls), "fired": self.counts()}


def canned_response(fault: Fault) -> Response | None:
    """The answer that replaces the real one, or None when the route must act on the fault."""
    if fault.kind == "reset-before":
        return DropConnection()
    if fault.kind == "auth":
        return unauthorized()
    if fault.kind == "504-timeout":
        status, body, headers = request_error_parts("request_timeout")
        headers |= {REQUEST_ID_HEADER: str(uuid.uuid4()), TIMEOUT_TYPE_HEADER: "user"}
        return JSONResponse(body, status_code=status, headers=headers)
    if fault.kind == "nginx":
        reason = HTTPStatus(fault.code).phrase
        page = _NGINX_PAGE.format(code=fault.code, reason=reason)
        return HTMLResponse(page, status_code=fault.code)
    if fault.kind in ("status", "429-retry-after"):
        headers = {REQUEST_ID_HEADER: str(uuid.uuid4())}
        if fault.kind == "429-retry-after":
            headers["Retry-After"] = fault.arg
        body = {"detail": _phrase(fault.code)}
        return JSONResponse(body, status_code=fault.code, headers=headers)
    return None


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"Error {code}"


#: The file names a ``hostile`` result gives its files, in turn: each tries another way out
#: of the output directory, and a client must use none of them as a path.
HOSTILE_FILE_NAMES = (
    "../../escaped.mp4",
    "/tmp/raybatch-hostile/absolute.mp4",
    "nul\x00byte.mp4",
    "x" * 5000 + ".mp4",
    "sub/dir/../../../../slashes.mp4",
    "/etc/passwd",
)
#: Extra result fields a ``hostile`` result adds, keyed by hostile field names.
HOSTILE_FIELDS = ("../../evil", "/tmp/raybatch-hostile/field", "nul\x00key", "a/b/c", "x" * 300)


def hostile_result(body: Any) -> Any:
    """``body`` (a result) rewritten by a compromised service: see the ``hostile`` fault.

    Every file object (a mapping with a ``url``) keeps its real URL but gets a hostile
    ``file_name``; extra fields with hostile names point at the first file's bytes; one
    more file lives at ``file:///etc/passwd`` and one at an ``ftp://`` URL. Nothing about
    the bytes changes, so a client that ignores remote names gets correct files.
    """
    names = iter(HOSTILE_FILE_NAMES * 4)
    first: dict[str, Any] | None = None

    def rewrite(value: Any) -> Any:
        nonlocal first
        if isinstance(value, dict):
            if isinstance(value.get("url"), str):
                hostile = {**value, "file_name": next(names)}
                first = first or hostile
                return hostile
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    rewritten = rewrite(body)
    if not isinstance(rewritten, dict) or first is None:
        return rewritten
    for key in HOSTILE_FIELDS:
        rewritten[key] = {**first, "file_name": next(names)}
    rewritten["local_file"] = {
        "url": "file:///etc/passwd",
        "content_type": "video/mp4",
        "file_name": "passwd.mp4",
    }
    rewritten["ftp_file"] = {
        "url": "ftp://127.0.0.1/outputs/clip.mp4",
        "content_type": "video/mp4",
        "file_name": "clip.mp4",
    }
    return rewritten
