"""Per-user career state: the profile used for matching, the user's matches and applications.

Kept apart from ``UserState`` (gamification) because it changes for other reasons and on other
inputs (profiles, postings, application statuses); both are keyed by user and live on the same
partition, so one worker owns everything about a user. ``matches`` doubles as the record of
alerts already sent: a job is alerted once per user, whatever redelivers or re-scores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.applications import Application
from models.events import UserProfile
from models.matching import Candidate, Match

CAREER_STATE_VERSION = 1
#: Matches kept per user (best first); a user with more has seen the top ones already.
MAX_MATCHES = 200
#: Default channels when a profile states no notification preferences.
DEFAULT_CHANNELS = ("IN_APP",)


@dataclass
class CareerState:
    user_id: str
    candidate: Candidate | None = None
    notification_prefs: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    #: The profile's display name, for the wording of notifications.
    display_name: str | None = None
    #: The profile's interests (campaign targeting filters on them).
    interests: tuple[str, ...] = ()
    #: job_id -> the match as shown to the user (``Match.to_dict``) plus ``alerted_at_ms``.
    matches: dict[str, dict[str, Any]] = field(default_factory=dict)
    applications: dict[str, Application] = field(default_factory=dict)

    def adopt_profile(self, profile: UserProfile) -> Candidate:
        self.candidate = Candidate.from_profile(profile)
        self.notification_prefs = dict(profile.notification_prefs)
        self.timezone = profile.timezone
        self.display_name = profile.display_name
        self.interests = profile.interests
        return self.candidate

    def alert_channels(self) -> list[str]:
        """Channels the user accepts job alerts on; empty when they opted out of job alerts."""
        prefs = self.notification_prefs
        if prefs.get("job_alerts") is False:
            return []
        channels = prefs.get("channels")
        if not isinstance(channels, list) or not channels:
            return list(DEFAULT_CHANNELS)
        return [c for c in channels if isinstance(c, str)]

    def record_match(self, match: Match, now_ms: int) -> bool:
        """Remember ``match``; True when the job was not matched before (so it is alerted)."""
        previous = self.matches.get(match.job_id)
        entry = match.to_dict()
        entry["alerted_at_ms"] = previous["alerted_at_ms"] if previous else now_ms
        self.matches[match.job_id] = entry
        if len(self.matches) > MAX_MATCHES:
            keep = sorted(self.matches.items(), key=lambda kv: (-kv[1]["match_score"], kv[0]))[:MAX_MATCHES]
            self.matches = dict(keep)
        return previous is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CAREER_STATE_VERSION,
            "user_id": self.user_id,
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "prefs": self.notification_prefs,
            "tz": self.timezone,
            "name": self.display_name,
            "interests": list(self.interests),
            "matches": self.matches,
            "applications": {k: a.to_dict() for k, a in self.applications.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CareerState:
        if data.get("v") != CAREER_STATE_VERSION:
            raise ValueError(f"unsupported career state version {data.get('v')!r}")
        candidate = data.get("candidate")
        return cls(
            user_id=data["user_id"],
            candidate=Candidate.from_dict(candidate) if candidate else None,
            notification_prefs=dict(data.get("prefs") or {}),
            timezone=data.get("tz") or "UTC",
            display_name=data.get("name"),
            interests=tuple(data.get("interests") or ()),
            matches=dict(data.get("matches") or {}),
            applications={k: Application.from_dict(v) for k, v in (data.get("applications") or {}).items()},
        )
