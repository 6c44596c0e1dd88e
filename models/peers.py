"""Real numbers for "learners like you" (the ``peer_comparison`` nudge's ``{peer_pct}``), without
I/O: the share of recently seen learners who practised in the last week.

Computed from the users a worker holds (its partitions: a hash-spread sample of everyone), as of
stream time. Below ``MIN_PEERS`` learners the share is not a fact worth quoting: None, and the
message reads its neutral default instead of a number built on three people.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.time_units import DAY_MS

#: Who counts as a peer: seen within this span; "practised this week": within a week.
PEER_WINDOW_MS = 28 * DAY_MS
ACTIVE_WINDOW_MS = 7 * DAY_MS
MIN_PEERS = 20


def active_share(last_active_ms: Iterable[int | None], now_ms: int) -> float | None:
    """Percent (0-100, one decimal) of peers active within a week, or None if too few peers."""
    peers = active = 0
    for last in last_active_ms:
        if last is None or last > now_ms or now_ms - last > PEER_WINDOW_MS:
            continue
        peers += 1
        active += now_ms - last <= ACTIVE_WINDOW_MS
    if peers < MIN_PEERS:
        return None
    return round(100.0 * active / peers, 1)
