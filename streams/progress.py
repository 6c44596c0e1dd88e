"""Whether a worker is making progress, and if not, why: what turns a silent stall into a red
``/readyz``, a metric and a log line.

A batch that stays in flight is the one symptom every stall shares (a send Kafka keeps refusing,
a Redis write that never lands, a bug that loops): the agent holds records it cannot finish, so
it has lag by definition. The retry loops note the last thing that failed, so the report says
why and not only that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stall:
    agent: str
    seconds: float
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"agent": self.agent, "seconds": round(self.seconds, 1), "reason": self.reason}


class Progress:
    #: A batch in flight longer than this is a stall. Far above a healthy batch (tens of ms) and
    #: above the retries' longest backoff (5 s), so one slow broker round trip is not reported.
    STALL_AFTER_S = 30.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._now = clock
        self._in_flight: dict[int, tuple[str, float]] = {}
        self._next = 0
        self.last_problem = ""

    def begin(self, agent: str) -> int:
        token = self._next
        self._next += 1
        self._in_flight[token] = (agent, self._now())
        return token

    def end(self, token: int) -> None:
        self._in_flight.pop(token, None)
        if not self._in_flight:
            self.last_problem = ""

    def note(self, problem: str) -> None:
        """What a retry loop is waiting out (kept short: it goes into Redis and logs)."""
        self.last_problem = problem[:300]

    def stall(self) -> Stall | None:
        """The oldest batch in flight for longer than ``STALL_AFTER_S``, if any."""
        if not self._in_flight:
            return None
        agent, started = min(self._in_flight.values(), key=lambda item: item[1])
        seconds = self._now() - started
        if seconds < self.STALL_AFTER_S:
            return None
        return Stall(agent, seconds, self.last_problem or "a batch has not finished")
