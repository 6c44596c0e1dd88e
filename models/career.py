"""Per-user career state: the profile used for matching, the user's matches and applications.

Kept apart from ``UserState`` (gamification) because it changes for other reasons and on other
inputs (profiles, postings, application statuses); both are keyed by user and live on the same
partition, so one worker owns everything about a user. ``matches`` doubles as the record of
alerts already sent: a job is alerted once per user, whatever redelivers or re-scores it.

Size. The state is one changelog record, rewritten on every change, and must stay far below the
record limit whatever producers send (``models.state_budget.STATE_BUDGET_BYTES``, 128 KiB). What
comes from a profile is kept only as far as it is used, each part within a byte budget (the
preferences to their known fields, skills and interests to whole entries that fit, the name and
places cut); matches and applications are capped in count AND in encoded bytes, evicting the
least useful first (the lowest matches; closed, then oldest, applications). The budgets add up to
~113 KB in the worst case (tests/models/test_state_budgets.py drives the state there); an honest
user's state is a few kilobytes and never meets them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import orjson

from models.applications import TERMINAL, Application
from models.events import UserProfile
from models.matching import (
    MATCH_COMPANY_BYTES,
    MATCH_MISSING_SKILLS_BYTES,
    MATCH_TITLE_BYTES,
    Candidate,
    Match,
)
from models.state_budget import clip_optional, clip_text, fit_texts

V = TypeVar("V")

CAREER_STATE_VERSION = 2
#: Version 1 stored matches and applications as objects keyed by id (every id twice); it is read.
_V1 = 1
#: Matches kept per user (best first); a user with more has seen the top ones already.
MAX_MATCHES = 200
#: ...and the bytes they may take: a match is at most ~1.5 KB (models.matching's MATCH_* budgets
#: plus a 128-byte job id), so 200 worst-case ones would be 300 KB. Honest matches are ~350 bytes
#: (with the industry and salary range the insights read): ~140 of them fit; fewer, only when
#: their postings are stuffed.
MATCHES_BUDGET_BYTES = 48 * 1024
#: Applications kept per user; beyond it (or the byte budget) closed ones go first, oldest first.
MAX_APPLICATIONS = 200
#: An application is at most ~11 KB (models.applications), an honest one a few hundred bytes.
APPLICATIONS_BUDGET_BYTES = 56 * 1024
#: The profile's skills and interests, as whole entries (a cut skill would be another skill).
SKILLS_BYTES = 4096
INTERESTS_BYTES = 2048
#: Location and education (free text up to 512 characters): compared whole, so a longer one
#: matches nothing real anyway.
PLACE_BYTES = 256
#: The display name: it is repeated in the text of every notification the user is kept.
NAME_BYTES = 128
#: Default channels when a profile states no notification preferences.
DEFAULT_CHANNELS = ("IN_APP",)
#: The digest settings a user may choose (CONTRACT §7, notification-settings).
DIGESTS = ("off", "daily", "weekly")


def checked_prefs(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The known fields of a profile's ``notification_prefs``, checked and normalised; anything
    else is dropped. Readers (``alert_channels``, ``models.interventions``) read only these, and
    a profile may carry 64 KiB of anything here, which state must not keep.

    ``channels``: among EMAIL/PUSH/IN_APP/SMS, upper-cased, first occurrence kept (none left: the
    field is left out, so the default applies); ``quiet_hours``: two "HH:MM" that make a window;
    ``job_alerts``: a boolean; ``opt_out``: known intervention types; ``digest``: one of DIGESTS.
    """
    # Imported here: models.interventions.policy imports this module (DEFAULT_CHANNELS).
    from models.interventions.policy import CHANNELS, NOTIFICATION_TYPES
    from models.interventions.quiet_hours import parse_quiet_hours

    prefs: dict[str, Any] = {}
    channels = _known(raw.get("channels"), CHANNELS, str.upper)
    if channels:
        prefs["channels"] = channels
    window = parse_quiet_hours(raw.get("quiet_hours"))
    if window is not None:
        prefs["quiet_hours"] = [moment.strftime("%H:%M") for moment in window]
    if isinstance(raw.get("job_alerts"), bool):
        prefs["job_alerts"] = raw["job_alerts"]
    if "opt_out" in raw:
        prefs["opt_out"] = _known(raw.get("opt_out"), NOTIFICATION_TYPES, str.lower)
    digest = raw.get("digest")
    if isinstance(digest, str) and digest.strip().lower() in DIGESTS:
        prefs["digest"] = digest.strip().lower()
    return prefs


def _known(value: object, vocabulary: tuple[str, ...], case: Any) -> list[str]:
    """The entries of a list that name a member of ``vocabulary`` (in ``case``), once each."""
    if not isinstance(value, list | tuple):
        return []
    kept: list[str] = []
    for item in value:
        if isinstance(item, str):
            name = case(item.strip())
            if name in vocabulary and name not in kept:
                kept.append(name)
    return kept


def _bounded_candidate(candidate: Candidate) -> Candidate:
    return replace(
        candidate,
        skills=fit_texts(candidate.skills, SKILLS_BYTES),
        location=clip_optional(candidate.location, PLACE_BYTES),
        education=clip_optional(candidate.education, PLACE_BYTES),
    )


def _bounded_match_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored match cut like ``Match.to_dict`` cuts a new one (for entries of version 1)."""
    return {
        **entry,
        "title": clip_text(str(entry.get("title") or ""), MATCH_TITLE_BYTES),
        "company": clip_optional(entry.get("company"), MATCH_COMPANY_BYTES),
        "missing_skills": list(fit_texts(entry.get("missing_skills") or (), MATCH_MISSING_SKILLS_BYTES)),
    }


def _encoded_size(value: Any) -> int:
    """Bytes ``value`` adds to a JSON list: its encoding and the comma before it."""
    return len(orjson.dumps(value)) + 1


class _Sizes(Generic[V]):
    """The encoded size of each entry of a map and their total, kept in step with the map, so
    that keeping a byte budget costs one encoding per change rather than one per kept entry."""

    def __init__(self, encode: Callable[[V], Any]) -> None:
        self.encode = encode
        self.of: dict[str, int] = {}
        self.total = 0

    def sync(self, items: Mapping[str, V]) -> None:
        """Measure ``items`` again if they are not the ones measured (a state just read, or a
        map changed behind our back); a C-level key comparison otherwise."""
        if self.of.keys() != items.keys():
            self.of = {
                key: self.of.get(key) or _encoded_size(self.encode(item)) for key, item in items.items()
            }
            self.total = sum(self.of.values())

    def put(self, key: str, item: V) -> None:
        size = _encoded_size(self.encode(item))
        self.total += size - self.of.get(key, 0)
        self.of[key] = size

    def drop(self, key: str) -> None:
        self.total -= self.of.pop(key)


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
    #: Where the delivery services reach the user (checked by models/contact.py on the way in).
    email: str | None = None
    phone: str | None = None
    #: When the profile now held was written (its ``updated_at``, else when it was applied).
    profile_at_ms: int | None = None
    #: The profile's leaderboard fields (models/boards.py), shown back by the profile routes.
    school: str | None = None
    cohort: str | None = None
    leaderboard_visible: bool = True
    #: job_id -> the match as shown to the user (``Match.to_dict``) plus ``alerted_at_ms``.
    matches: dict[str, dict[str, Any]] = field(default_factory=dict)
    applications: dict[str, Application] = field(default_factory=dict)
    # Encoded sizes of the matches and applications (derived: not stored, not compared).
    _match_sizes: _Sizes[dict[str, Any]] = field(
        default_factory=lambda: _Sizes(lambda entry: entry), repr=False, compare=False
    )
    _application_sizes: _Sizes[Application] = field(
        default_factory=lambda: _Sizes(Application.to_dict), repr=False, compare=False
    )

    def adopt_profile(self, profile: UserProfile, now_ms: int = 0) -> Candidate:
        """The profile replaces the one held (``user-profiles`` is latest-wins, whole records)."""
        self.candidate = _bounded_candidate(Candidate.from_profile(profile))
        self.notification_prefs = checked_prefs(profile.notification_prefs)
        self.timezone = profile.timezone
        self.display_name = clip_optional(profile.display_name, NAME_BYTES)
        self.interests = fit_texts(profile.interests, INTERESTS_BYTES)
        self.email = profile.email
        self.phone = profile.phone
        self.profile_at_ms = profile.updated_at_ms if profile.updated_at_ms is not None else now_ms
        self.school, self.cohort = profile.school, profile.cohort
        self.leaderboard_visible = profile.leaderboard_visible
        return self.candidate

    def profile_view(self) -> dict[str, Any]:
        """The profile as ``GET /v1/users/{id}/profile`` shows it and the delivery services read
        it (CONTRACT §7): the fields of ``user-profiles`` as held, plus ``email``, ``phone`` and
        ``updated_at`` (epoch ms)."""
        candidate = self.candidate or Candidate(user_id=self.user_id)
        return {
            "user_id": self.user_id,
            "display_name": self.display_name,
            "timezone": self.timezone,
            "location": candidate.location,
            "skills": list(candidate.skills),
            "experience_years": candidate.experience_years,
            "education": candidate.education,
            "interests": list(self.interests),
            "salary_expectation": candidate.salary_expectation,
            "currency": candidate.currency,
            "email": self.email,
            "phone": self.phone,
            "notification_prefs": self.notification_prefs,
            "updated_at": self.profile_at_ms,
            "school": self.school,
            "cohort": self.cohort,
            "leaderboard_visible": self.leaderboard_visible,
        }

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
        self._match_sizes.sync(self.matches)
        self.matches[match.job_id] = entry
        self._match_sizes.put(match.job_id, entry)
        self._fit_matches()
        return previous is None

    def record_application(self, application: Application) -> None:
        """Keep ``application`` (new or updated), within MAX_APPLICATIONS and the byte budget:
        beyond them closed applications are forgotten first, then open ones, the least recently
        updated first (never the one just recorded). A forgotten application that hears again
        starts afresh."""
        app_id = application.application_id
        self._application_sizes.sync(self.applications)
        self.applications[app_id] = application
        self._application_sizes.put(app_id, application)
        self._fit_applications(keep=app_id)

    def _fit_matches(self) -> None:
        """Forget the lowest matches (ties: the greatest job id) beyond MAX_MATCHES or the budget."""
        matches, sizes = self.matches, self._match_sizes
        sizes.sync(matches)
        while len(matches) > MAX_MATCHES or sizes.total > MATCHES_BUDGET_BYTES:
            _, worst = max((-entry["match_score"], job_id) for job_id, entry in matches.items())
            del matches[worst]
            sizes.drop(worst)

    def _fit_applications(self, keep: str | None = None) -> None:
        apps, sizes = self.applications, self._application_sizes
        sizes.sync(apps)
        if len(apps) <= MAX_APPLICATIONS and sizes.total <= APPLICATIONS_BUDGET_BYTES:
            return
        # Closed ones first (their story is over), then the least recently updated.
        victims = sorted(
            (app for app_id, app in apps.items() if app_id != keep),
            key=lambda a: (a.status not in TERMINAL, a.updated_at_ms, a.application_id),
        )
        for app in victims:
            if len(apps) <= MAX_APPLICATIONS and sizes.total <= APPLICATIONS_BUDGET_BYTES:
                break
            del apps[app.application_id]
            sizes.drop(app.application_id)

    def to_dict(self) -> dict[str, Any]:
        # Matches and applications as lists: each carries its own id, which a map would repeat.
        return {
            "v": CAREER_STATE_VERSION,
            "user_id": self.user_id,
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "prefs": self.notification_prefs,
            "tz": self.timezone,
            "name": self.display_name,
            "interests": list(self.interests),
            "email": self.email,
            "phone": self.phone,
            "pat": self.profile_at_ms,
            # Only when set: states without them (and older ones) decode to the defaults.
            **({"school": self.school} if self.school else {}),
            **({"cohort": self.cohort} if self.cohort else {}),
            **({} if self.leaderboard_visible else {"hidden": True}),
            "matches": list(self.matches.values()),
            "applications": [a.to_dict() for a in self.applications.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CareerState:
        version = data.get("v")
        if version not in (CAREER_STATE_VERSION, _V1):
            raise ValueError(f"unsupported career state version {version!r}")
        matches = data.get("matches") or []
        applications = data.get("applications") or []
        if version == _V1:
            matches = [_bounded_match_entry(entry) for entry in dict(matches).values()]
            applications = list(dict(applications).values())
        candidate = data.get("candidate")
        state = cls(
            user_id=data["user_id"],
            candidate=_bounded_candidate(Candidate.from_dict(candidate)) if candidate else None,
            # Checked again on the way in: a version 1 state kept whatever the profile said.
            notification_prefs=checked_prefs(data.get("prefs") or {}),
            timezone=data.get("tz") or "UTC",
            display_name=clip_optional(data.get("name"), NAME_BYTES),
            interests=fit_texts(data.get("interests") or (), INTERESTS_BYTES),
            email=data.get("email"),
            phone=data.get("phone"),
            profile_at_ms=data.get("pat"),
            school=data.get("school"),
            cohort=data.get("cohort"),
            leaderboard_visible=not data.get("hidden", False),
            matches={entry["job_id"]: entry for entry in matches},
            applications={a.application_id: a for a in map(Application.from_dict, applications)},
        )
        if version == _V1:  # stored before the budgets; later versions were kept within them
            state._fit_matches()
            state._fit_applications()
        return state
