"""Which campaign occurrences were already looked at for one user, so a short lookback can catch
campaigns that reached the worker late, without looking at any occurrence twice. No I/O.

Why a lookback: a campaign (or a manual send) reaches the workers through the broadcast topic a
moment after an admin saved it. A user looked at in that moment, at a stream time already past
the campaign's instant, would otherwise never get it. So each look covers ``LOOKBACK_MS`` before
the user's previous look, and skips the occurrences remembered here.

The memory is kept by time, not by count: an occurrence is remembered until it falls out of the
lookback, so however many campaigns fire in an hour none is looked at twice. A hard cap
(``MAX_SEEN``) bounds the state; what it drops raises ``floor_ms``, before which the lookback
never reaches, so a dropped occurrence is never looked at again either (at worst a late campaign
in that instant is missed, as before the lookback existed). A state written before this memory
existed starts with the floor at its last look: its earlier looks were not remembered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from models.campaigns.records import Occurrence
from models.digests import id_digest
from models.time_units import HOUR_MS

#: How far before a user's last look campaigns are looked at again.
LOOKBACK_MS = HOUR_MS
#: Occurrences remembered at most per user (a few campaigns firing a few times an hour need far
#: fewer; the cap only bounds a pathological schedule).
MAX_SEEN = 256


def _digest(campaign_id: str, key: str) -> str:
    return id_digest(f"{campaign_id}\x00{key}")


@dataclass
class CampaignLooks:
    #: The lookback never reaches at or before this instant.
    floor_ms: int
    #: Digest of (campaign, occurrence key) -> the occurrence's instant.
    seen: dict[str, int] = field(default_factory=dict)

    def since(self, checked_ms: int) -> int:
        """Where a look after one at ``checked_ms`` starts (exclusive)."""
        return max(checked_ms - LOOKBACK_MS, self.floor_ms)

    def looked_at(self, campaign_id: str, occurrence: Occurrence) -> bool:
        return _digest(campaign_id, occurrence.key) in self.seen

    def remember(self, campaign_id: str, occurrences: Iterable[Occurrence]) -> None:
        for o in occurrences:
            self.seen[_digest(campaign_id, o.key)] = o.at_ms

    def prune(self, now_ms: int) -> None:
        """Forget what the next look (after ``now_ms``) cannot reach, and past the cap the oldest,
        raising the floor over them."""
        reach = self.since(now_ms)
        self.seen = {d: at for d, at in self.seen.items() if at > reach}
        if len(self.seen) > MAX_SEEN:
            ordered = sorted(self.seen.items(), key=lambda item: item[1])
            dropped, kept = ordered[: len(ordered) - MAX_SEEN], ordered[len(ordered) - MAX_SEEN :]
            self.floor_ms = max(self.floor_ms, max(at for _, at in dropped))
            self.seen = dict(kept)

    def to_dict(self) -> dict[str, Any]:
        return {"f": self.floor_ms, "s": [[d, at] for d, at in self.seen.items()]}

    @classmethod
    def from_dict(cls, data: object) -> CampaignLooks | None:
        """None for anything that is not this shape (a state from before: no memory yet)."""
        if not isinstance(data, dict):
            return None
        try:
            seen = {str(d): int(at) for d, at in list(data.get("s") or ())[:MAX_SEEN]}
            return cls(int(data["f"]), seen)
        except (KeyError, TypeError, ValueError):
            return None
