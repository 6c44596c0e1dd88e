"""A channel's pace: at most ``rate`` sends a second from this process, bursts smoothed out.

Providers throttle (and block senders who ignore it): each send takes the next free slot on a
schedule ``1/rate`` apart and waits for it. Several delivery processes each keep their own pace,
so the channel's total is the processes' count times the rate (docs/notifications.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable


class Pace:
    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.clock = clock
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next slot; how long to wait for it (0 when it is now)."""
        now = self.clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        return slot - now

    async def take(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        wait = self.reserve()
        if wait > 0:
            await sleep(wait)
