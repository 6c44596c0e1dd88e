"""Which nudge for which student, and on which channels (the policy table is in the package
docstring): intervention types, urgency channels, the user context a decision reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.boards import Standing
from models.career import DEFAULT_CHANNELS
from models.risk import RiskScore, risk_level
from models.time_units import HOUR_MS

INTERVENTION_TYPES: tuple[str, ...] = (
    "gentle_reminder",
    "streak_warning",
    "achievement_notification",
    "milestone_celebration",
    "personalized_content",
    "discount_offer",
    "peer_comparison",
    "human_outreach",
)
#: Notifications about the user's own career (docs/notifications.md): news the user is waiting
#: for, not nudges. Outside the daily cap and the gaps, in-app always, on every channel the user
#: allows, still behind opt-outs and quiet hours.
CAREER_TYPES: tuple[str, ...] = ("application_update", "job_match", "match_digest", "deadline_reminder")
TRANSACTIONAL = frozenset(CAREER_TYPES)
#: Every kind of notification, each a template and an opt-out a user may choose.
NOTIFICATION_TYPES: tuple[str, ...] = (*INTERVENTION_TYPES, *CAREER_TYPES)
CHANNELS: tuple[str, ...] = ("EMAIL", "PUSH", "IN_APP", "SMS")
#: Channels that interrupt (a sound, a buzz, a mail): held back by quiet hours. IN_APP is silent.
INTERRUPTING = frozenset({"PUSH", "SMS", "EMAIL"})
#: Types meant to bring a fading user back: pointless, even irritating, once they are back.
RE_ENGAGEMENT = frozenset(
    {"gentle_reminder", "discount_offer", "peer_comparison", "human_outreach", "personalized_content"}
)
#: Types that create a staff task instead of a message: no user channel, outside the daily cap.
STAFF_TYPES = frozenset({"human_outreach"})
#: The `by_channel` bucket of analytics for notifications without a user channel.
STAFF_CHANNEL = "STAFF"

URGENCY_LEVELS: tuple[str, ...] = ("critical", "high", "medium", "low")
URGENCY_CHANNELS: Mapping[str, tuple[str, ...]] = {
    "critical": ("PUSH", "EMAIL", "SMS", "IN_APP"),
    "high": ("PUSH", "IN_APP"),
    "medium": ("IN_APP",),
    "low": ("IN_APP",),
}

# --- policy table -------------------------------------------------------------------------------

#: Risk signal (a feature name) -> the intervention addressing it; level rules refine a few.
SIGNAL_TYPES: Mapping[str, str] = {
    "recency_log_h": "gentle_reminder",
    "recency_d": "gentle_reminder",
    "events_1d": "gentle_reminder",
    "hour_concentration": "gentle_reminder",
    "missed_days": "gentle_reminder",
    "freq_trend_7d": "peer_comparison",
    "events_7d": "peer_comparison",
    "events_28d": "peer_comparison",
    "active_days_7d": "peer_comparison",
    "active_days_28d": "peer_comparison",
    "score_trend": "personalized_content",
    "score_mean": "personalized_content",
    "session_mean_min": "personalized_content",
    "tenure_log_d": "personalized_content",
    "applications_28d": "personalized_content",
    "streak": "streak_warning",
    "xp_7d": "discount_offer",
    "notif_opens_28d": "human_outreach",
    "notif_clicks_28d": "human_outreach",
}
LEVEL_DEFAULTS: Mapping[str, tuple[str, ...]] = {
    "critical": ("human_outreach", "gentle_reminder", "personalized_content"),
    "high": ("gentle_reminder", "personalized_content"),
    "medium": ("gentle_reminder",),
    "low": (),
}
MAX_RECOMMENDATIONS: Mapping[str, int] = {"critical": 4, "high": 3, "medium": 2, "low": 0}
#: Levels at which a paid incentive is worth its cost; below them low XP earns content instead.
DISCOUNT_LEVELS = frozenset({"high", "critical"})

RETURN_GRACE_MS = 2 * HOUR_MS


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the policy knows about a user at decision time (assembled by the caller)."""

    user_id: str
    timezone: str = "UTC"
    #: The profile's `notification_prefs`: "channels", "quiet_hours" (["21:00", "07:00"]), "opt_out".
    prefs: Mapping[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    streak: int = 0
    level: int = 1
    last_active_ms: int | None = None
    signup_ms: int | None = None
    #: Personal content (the templates' {topic}, {discount_pct}, {peer_pct}): the practice
    #: category the user scores lowest in, the discount the operator offers (rules file), and the
    #: share of peers who practised this week. None: the template's neutral words.
    weakest_category: str | None = None
    discount_pct: int | None = None
    peer_pct: float | None = None
    #: Where the user stands on the weekly boards (models/boards.py): their school's, else
    #: their cohort's, else everyone's; None when unknown (the sentence then has no number).
    standing: Standing | None = None
    #: Matched jobs still open that the user has not applied for, with their deadline
    #: (models/career_notices.py ClosingJob): reminded two days before, at 9:00 local.
    closing_jobs: tuple[Any, ...] = ()

    def opted_out(self, type: str) -> bool:
        opt_out = self.prefs.get("opt_out")
        return isinstance(opt_out, list | tuple) and type in opt_out

    def returned(self, now_ms: int) -> bool:
        """Active within RETURN_GRACE_MS of now (or later: an event newer than our clock)."""
        return self.last_active_ms is not None and self.last_active_ms >= now_ms - RETURN_GRACE_MS


def check_type(type: str) -> None:
    if type not in NOTIFICATION_TYPES:
        raise ValueError(f"unknown notification type {type!r}")


# ---------------------------------------------------------------------------------------------
# Policy


def recommend(score: float, signals: Sequence[str], ctx: UserContext | None = None) -> list[str]:
    """Intervention types for a student at risk `score` (0-100), most suitable first.

    `signals` are the risk model's top signals (feature names, strongest first); unknown names are
    ignored. See the module docstring for the table.
    """
    level = risk_level(score)
    limit = MAX_RECOMMENDATIONS[level]
    if limit == 0:
        return []
    chosen: list[str] = []

    def add(type: str) -> None:
        if type not in chosen and not (ctx is not None and ctx.opted_out(type)):
            chosen.append(type)

    if level == "critical":
        add("human_outreach")
    for signal in signals:
        type = SIGNAL_TYPES.get(signal)
        if type is None:
            continue
        if type == "streak_warning" and (ctx is None or ctx.streak <= 0):
            continue  # nothing to save
        if type == "discount_offer" and level not in DISCOUNT_LEVELS:
            type = "personalized_content"
        if type == "human_outreach" and level != "critical":
            continue
        add(type)
    for type in LEVEL_DEFAULTS[level]:
        add(type)
    return chosen[:limit]


def recommend_for(risk: RiskScore, ctx: UserContext | None = None) -> list[str]:
    """`recommend` for a model score: its 0-100 score and its top signals, strongest first."""
    return recommend(risk.score, [s.name for s in risk.top_signals], ctx)


def allowed_channels(ctx: UserContext) -> list[str]:
    """The channels the user accepts, in their order; DEFAULT_CHANNELS when they stated none."""
    raw = ctx.prefs.get("channels")
    allowed: list[str] = []
    if isinstance(raw, list | tuple):
        for item in raw:
            name = item.upper() if isinstance(item, str) else None
            if name in CHANNELS and name not in allowed:
                allowed.append(name)
    return allowed or list(DEFAULT_CHANNELS)


def channels_for(urgency_level: str, ctx: UserContext) -> list[str]:
    """Channels for a nudge of `urgency_level` (a risk level name) that the user allows.

    Never empty and never outside CHANNELS: when the urgency's channels and the user's do not
    meet, the user's first allowed channel carries it.
    """
    candidates = URGENCY_CHANNELS.get(urgency_level)
    if candidates is None:
        raise ValueError(f"unknown urgency {urgency_level!r}; expected one of {URGENCY_LEVELS}")
    allowed = allowed_channels(ctx)
    chosen = [c for c in candidates if c in allowed]
    return chosen or allowed[:1]
