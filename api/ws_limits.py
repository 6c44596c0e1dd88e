"""Websocket budgets of one API process: connections (total, per user, unauthenticated) and ops.

Both are in-process on purpose. A connection lives in exactly one process, so its op bucket needs
no Redis round trip per frame; and counting connections in the process that holds them means a
crash can never leave a count behind that no one releases. The price: the per-user limit holds
per API process (N processes let a user hold N times as many sockets), which still bounds what one
user can make any single process carry.

Everything here runs on the event loop between awaits, so it needs no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class OverBudget(Exception):
    """A connection this process will not take; ``code`` says which limit (and which answer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: ``OverBudget.code`` values.
SERVER_BUSY = "server_busy"
TOO_MANY_CONNECTIONS = "too_many_connections"


class ConnectionBudget:
    def __init__(self, *, max_connections: int, max_per_user: int, max_unauthenticated: int) -> None:
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self.max_unauthenticated = max_unauthenticated
        #: Every socket held: authenticated or still waiting for its first-message auth.
        self.total = 0
        self.unauthenticated = 0
        self.per_user: dict[str, int] = {}

    def admit(self, sub: str | None) -> Slot:
        """A slot for a new socket: ``sub`` when its token was checked already, else None (it
        counts as unauthenticated until ``Slot.authenticate``). Raises ``OverBudget``."""
        if self.total >= self.max_connections:
            raise OverBudget(SERVER_BUSY, f"this server holds its limit of {self.max_connections} websockets")
        if sub is None:
            if self.unauthenticated >= self.max_unauthenticated:
                raise OverBudget(SERVER_BUSY, "too many connections waiting to authenticate; use ?token=")
            self.unauthenticated += 1
        else:
            self._take_user(sub)
        self.total += 1
        return Slot(self, sub)

    def _take_user(self, sub: str) -> None:
        held = self.per_user.get(sub, 0)
        if held >= self.max_per_user:
            raise OverBudget(
                TOO_MANY_CONNECTIONS, f"at most {self.max_per_user} websockets per user on this server"
            )
        self.per_user[sub] = held + 1

    def _give_user(self, sub: str) -> None:
        held = self.per_user.get(sub, 0) - 1
        if held > 0:
            self.per_user[sub] = held
        else:
            self.per_user.pop(sub, None)  # keep the map as small as the set of connected users


class Slot:
    """One socket's share of the budget; ``release`` gives it back (idempotent)."""

    def __init__(self, budget: ConnectionBudget, sub: str | None) -> None:
        self._budget = budget
        self.sub = sub
        self._released = False

    def authenticate(self, sub: str) -> None:
        """Turn an unauthenticated slot into ``sub``'s. On ``OverBudget`` the slot is released."""
        assert self.sub is None and not self._released
        budget = self._budget
        budget.unauthenticated -= 1
        try:
            budget._take_user(sub)
        except OverBudget:
            budget.total -= 1
            self._released = True
            raise
        self.sub = sub

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        budget = self._budget
        budget.total -= 1
        if self.sub is None:
            budget.unauthenticated -= 1
        else:
            budget._give_user(self.sub)


class Verdict(Enum):
    ALLOWED = "allowed"
    #: Over the rate: answer ``rate_limited`` and skip the op.
    LIMITED = "limited"
    #: Over the rate for too long: close the connection.
    ABUSIVE = "abusive"


#: Refused ops are forgotten over this many seconds (``OpRateLimit``'s abuse window).
ABUSE_WINDOW_S = 10.0


class OpRateLimit:
    """Token bucket on one connection's client ops, plus a count of refusals that leaks away.

    Every refused op adds one to ``strikes``, which leak at ``abuse_limit / ABUSE_WINDOW_S`` per
    second: a client that bursts past the limit now and then gets a few ``rate_limited`` answers,
    one that keeps sending too fast (more than ``abuse_limit`` refusals within about ten seconds)
    is closed. The strikes also bound how many error frames an abuser makes the server write.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        abuse_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self.abuse_limit = abuse_limit
        self._clock = clock
        self._tokens = float(self.burst)
        self._strikes = 0.0
        self._last = clock()

    def take(self) -> Verdict:
        if self.rate_per_s <= 0:
            return Verdict.ALLOWED
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._strikes = max(0.0, self._strikes - elapsed * self.abuse_limit / ABUSE_WINDOW_S)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOWED
        self._strikes += 1.0
        return Verdict.ABUSIVE if self._strikes > self.abuse_limit else Verdict.LIMITED
