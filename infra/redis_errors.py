"""Which Redis failures a retry can fix, and which it cannot.

A writer that retries everything loops forever, in silence, on an error that no retry will fix
(a key of the wrong type); one that retries nothing drops writes whenever Redis blinks. The kinds:

- retried: ``connection`` and ``timeout`` (Redis away or slow, ``LOADING`` after a restart),
  ``readonly`` (a replica during a failover), ``busy`` (a long script or ``TRYAGAIN`` /
  ``CLUSTERDOWN`` / ``MASTERDOWN``), ``noscript`` (the script cache was flushed; redis-py loads
  it again on the next call) and ``oom`` (``maxmemory`` reached: the same write succeeds once
  memory is freed; skipping it would leave views stale with nothing to repair them);
- not retried: ``wrongtype`` (a key holding another type), ``response`` (any other error reply)
  and ``data`` (a value redis-py cannot encode).

The serving scripts call Redis with ``redis.pcall``, so one refused key does not abort the writes
of every other user in the batch; they return the refusals, which ``RefusedWrites`` carries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from redis import exceptions as rx

from infra.redis_conn import as_text

Kind = Literal[
    "connection", "timeout", "readonly", "busy", "noscript", "oom", "wrongtype", "response", "data"
]
RETRIED: frozenset[Kind] = frozenset({"connection", "timeout", "readonly", "busy", "noscript", "oom"})

# Error codes (the first word of an error reply) by kind.
_CODES: dict[str, Kind] = {
    "OOM": "oom",
    "READONLY": "readonly",
    "NOSCRIPT": "noscript",
    "LOADING": "connection",
    "BUSY": "busy",
    "TRYAGAIN": "busy",
    "CLUSTERDOWN": "busy",
    "MASTERDOWN": "busy",
    "WRONGTYPE": "wrongtype",
}
# The code is read only where Redis puts it: first, or (Redis 6 inside a script) after
# "...@user_script:<line>: " and an optional "-". Never anywhere in the text: keys, which hold
# client-chosen ids, appear in some messages, and a user named OOM must not make a refusal
# pass for one a retry will fix.
_CODE = re.compile(r"(?:[^@]*@user_script:\s*\d+:\s*)?-?([A-Z]+)\b")
# redis-py prefixes a pipeline's error with the command (keys included): the reply follows this.
_PIPELINE_PREFIX = " of pipeline caused error: "
#: Longest text kept per refusal, and refusals named in one exception message.
MAX_ERROR_CHARS = 300
MAX_ERRORS_SHOWN = 5


def kind_of_reply(message: str) -> Kind:
    """The kind of an error reply's text (as redis-py or ``redis.pcall`` give it)."""
    match = _CODE.match(message.strip())
    return _CODES.get(match.group(1), "response") if match else "response"


def kind_of(exc: BaseException) -> Kind:
    """The kind of an exception raised by redis-py (or the socket under it)."""
    if isinstance(exc, RefusedWrites):
        return exc.kind
    if isinstance(exc, rx.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, rx.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, rx.OutOfMemoryError):
        return "oom"
    if isinstance(exc, rx.ReadOnlyError):
        return "readonly"
    if isinstance(exc, rx.NoScriptError):
        return "noscript"
    if isinstance(exc, rx.TryAgainError | rx.ClusterDownError):
        return "busy"
    if isinstance(exc, rx.ResponseError):
        return kind_of_reply(str(exc).rpartition(_PIPELINE_PREFIX)[2])
    if isinstance(exc, rx.DataError):
        return "data"
    # Anything else from redis-py (a protocol error, an unreadable reply) is the connection's.
    return "connection"


def retried(exc: BaseException) -> bool:
    return kind_of(exc) in RETRIED


class RefusedWrites(rx.ResponseError):
    """Some writes of a script were refused; every other write of that call was made.

    ``refusals`` are (Redis's reason, "<command> <key>") pairs. ``kind`` is the most actionable
    one: a retried kind when any refusal is (OOM on one write means every write was refused,
    and all of them must be made again), else ``wrongtype`` or ``response``.
    """

    def __init__(self, refusals: Sequence[tuple[str, str]]) -> None:
        self.refusals = [(reason[:MAX_ERROR_CHARS], where[:MAX_ERROR_CHARS]) for reason, where in refusals]
        kinds = [kind_of_reply(reason) for reason, _ in self.refusals]
        retry = [k for k in kinds if k in RETRIED]
        self.kind: Kind = retry[0] if retry else "wrongtype" if "wrongtype" in kinds else "response"
        shown = "; ".join(f"{where}: {reason.strip()}" for reason, where in self.refusals[:MAX_ERRORS_SHOWN])
        more = len(self.refusals) - MAX_ERRORS_SHOWN
        tail = f"; +{more} more" if more > 0 else ""
        super().__init__(f"{len(self.refusals)} write(s) refused: {shown}{tail}")

    @classmethod
    def from_script(cls, errors: Sequence[Sequence[bytes | str]]) -> RefusedWrites:
        """From a serving script's ``errors`` list (infra/channels.py)."""
        return cls([(as_text(reason), as_text(where)) for reason, where in errors])


def check(errors: Sequence[Sequence[bytes | str]]) -> None:
    """Raise ``RefusedWrites`` for a script's list of refusals, if there are any."""
    if errors:
        raise RefusedWrites.from_script(errors)
