"""Interventions and notifications: which nudge, on which channel, when, worded how, and how often.

Everything here is a pure function of its arguments: no I/O, no clock (every instant is an
argument `now_ms`, epoch milliseconds in EVENT time), no randomness that a replay could not repeat.
A replay of the same inputs therefore produces the same notification ids, variants and decisions.

Policy table (`recommend`). The risk level (`models.risk.risk_level`: critical >= 80, high >= 60,
medium >= 40, low below) says how hard to push; the risk model's top signals (feature names of
`models.risk_features.FEATURE_NAMES` whose contribution RAISES the risk, strongest first) say why
the student is fading, and each maps to the nudge that addresses that reason (`SIGNAL_TYPES`):

    signal                                                  intervention
    recency_d, recency_log_h, events_1d, hour_concentration gentle_reminder (a habit has lapsed)
    freq_trend_7d, events_7d/28d, active_days_7d/28d        peer_comparison (activity is falling)
    score_trend, score_mean, session_mean_min,              personalized_content (struggling, short
      tenure_log_d, applications_28d                          sessions, new, no career goal moving)
    streak                                                  streak_warning, only with a streak to save
    xp_7d                                                   discount_offer at high/critical, else
                                                              personalized_content
    notif_opens_28d, notif_clicks_28d                       human_outreach at critical (another
                                                              automated nudge will not be read),
                                                              nothing below

Low risk recommends nothing. Signal-driven types come first, in signal order; each level then adds
its defaults (`LEVEL_DEFAULTS`: medium a gentle_reminder, high also personalized_content) and caps
the list (`MAX_RECOMMENDATIONS`: 2 / 3 / 4). Critical always starts with human_outreach: at that
point a person reaching out is what works, and the at-risk list is what staff triage from. Types
the user opted out of (`prefs["opt_out"]`) are never recommended.

Channels (`channels_for`). Urgency picks the candidates: critical PUSH, EMAIL, SMS, IN_APP; high
PUSH, IN_APP; medium and low IN_APP only (silent). They are intersected with the channels the
user allows (`prefs["channels"]`, default IN_APP only, as for job alerts); when nothing is left the
user's first allowed channel is used, so a nudge is never lost to a mismatch and never sent on a
channel the user did not allow. human_outreach goes to a staff queue and has no user channel.

Throttling (`decide`). At most `MAX_PER_DAY` (3) notifications per user in any rolling 24 h and a
minimum gap per type (`MIN_GAP_MS`: streak_warning 20 h, gentle_reminder 48 h, peer_comparison and
personalized_content 72 h, human_outreach 7 days, discount_offer 14 days; an offer repeated weekly
teaches users to wait for it). Celebrations (achievement, milestone) have no gap, since each one is
a distinct event deduplicated by its key, but they count towards the daily cap. human_outreach is
exempt from the cap: it creates a staff task, it does not reach the user's device. A deferred
notification counts from the instant it will be delivered, so sends deferred to 07:00 fill the
next day's budget rather than slipping extra ones in. Re-engagement types are not sent to a user
active within the last `RETURN_GRACE_MS` (2 h), nor delivered late if they came back meanwhile:
nagging someone who just returned reads as spam. Idempotency keys are remembered `KEY_TTL_MS`
(35 days) so a redelivered trigger never sends twice; `risk_key` is the daily key of risk nudges.

Quiet hours (`quiet_until`): "defer, don't drop". A window `[start, end)` in the user's local time
(it may wrap midnight) holds back notifications with an INTERRUPTING channel (PUSH, SMS, EMAIL)
until it ends; IN_APP-only ones are silent and stored at once. The end is found on the local
calendar with zoneinfo, so DST is exact: an end that does not exist (spring-forward gap) means
the first instant after the gap, an ambiguous one (fall-back) its first occurrence. A notification
with several channels is deferred whole (its IN_APP copy too), so the user meets it once.

Wording (`TEMPLATES`, `render`): one template per type with A/B variants; `{placeholders}` missing
from the variables render as neutral defaults, never as an exception. Variant choice
(`choose_variant`) is Thompson sampling with Beta(1 + rewards, 1 + sends - rewards), where the
reward is a CLICK or a conversion, never an open: opens are measured by a tracking pixel that mail
clients prefetch (Apple Mail Privacy Protection opens everything) and push "opens" include
dismissals, so rewarding opens would favour the variants whose audience has such clients, not the
ones that bring students back. The sampler is seeded from the idempotency key via SHA-256 (not
`hash()`, which is salted per process), so a replay picks the same variant.

State (`NotificationBook`, one per user, a JSON object in a changelog table) is bounded: an inbox of
`MAX_INBOX` IN_APP notifications, at most `MAX_PENDING` deferred ones, `MAX_DELIVERED` recently
delivered non-inbox ones (so open/click tracking of PUSH/EMAIL finds them), a send log pruned to
the longest gap and keys pruned after their TTL.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from models.career import DEFAULT_CHANNELS
from models.events import format_ts
from models.risk import RiskScore, risk_level
from models.tz import local_instant_ms, zone

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

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

# --- throttling and state bounds ----------------------------------------------------------------

MAX_PER_DAY = 3
CAP_WINDOW_MS = DAY_MS
MIN_GAP_MS: Mapping[str, int] = {
    "streak_warning": 20 * HOUR_MS,
    "gentle_reminder": 48 * HOUR_MS,
    "peer_comparison": 72 * HOUR_MS,
    "personalized_content": 72 * HOUR_MS,
    "human_outreach": 7 * DAY_MS,
    "discount_offer": 14 * DAY_MS,
}
#: How long the send log remembers: the longest per-type gap (and at least the cap window).
THROTTLE_WINDOW_MS = max(CAP_WINDOW_MS, *MIN_GAP_MS.values())
RETURN_GRACE_MS = 2 * HOUR_MS
KEY_TTL_MS = 35 * DAY_MS
MAX_KEYS = 512
MAX_INBOX = 50
MAX_PENDING = 20
MAX_DELIVERED = 50
BOOK_VERSION = 1
STATS_VERSION = 1

#: Notification lifecycle stages counted by analytics, in funnel order.
STAGES: tuple[str, ...] = ("sent", "opened", "clicked", "converted")
#: Stages a tracking event can record; each implies the ones before it.
TRACK_STAGES: tuple[str, ...] = ("opened", "clicked", "converted")

# Decision reasons.
QUEUED = "queued"
DEFERRED = "deferred"
THROTTLED = "throttled"
DUPLICATE = "duplicate"
RETURNED = "returned"
OPTED_OUT = "opted_out"
NO_CHANNEL = "no_channel"


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

    def opted_out(self, type: str) -> bool:
        opt_out = self.prefs.get("opt_out")
        return isinstance(opt_out, list | tuple) and type in opt_out

    def returned(self, now_ms: int) -> bool:
        """Active within RETURN_GRACE_MS of now (or later: an event newer than our clock)."""
        return self.last_active_ms is not None and self.last_active_ms >= now_ms - RETURN_GRACE_MS


def _check_type(type: str) -> None:
    if type not in INTERVENTION_TYPES:
        raise ValueError(f"unknown intervention type {type!r}")


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


# ---------------------------------------------------------------------------------------------
# Quiet hours

_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def _parse_hhmm(value: object) -> time | None:
    if not isinstance(value, str):
        return None
    match = _HHMM.fullmatch(value.strip())
    return time(int(match.group(1)), int(match.group(2))) if match else None


def parse_quiet_hours(quiet_hours: object) -> tuple[time, time] | None:
    """(start, end) from ["HH:MM", "HH:MM"]; None when absent, malformed or empty (start == end)."""
    if not isinstance(quiet_hours, list | tuple) or len(quiet_hours) != 2:
        return None
    start, end = _parse_hhmm(quiet_hours[0]), _parse_hhmm(quiet_hours[1])
    if start is None or end is None or start == end:
        return None
    return start, end


def _zone_or_utc(tz: str) -> tzinfo:
    try:
        return zone(tz)
    except ValueError:
        return UTC  # profiles are validated upstream; an odd stored value must not stop delivery


def quiet_until(now_ms: int, tz: str, quiet_hours: Sequence[str] | None) -> int | None:
    """When the user's quiet window containing `now_ms` ends (epoch ms); None outside it.

    The window is `[start, end)` on the user's local clock; start > end wraps midnight. None as
    well for absent, malformed or empty quiet hours. An end already passed on the local clock's
    first reading (the repeated hour after a fall-back) means the window is over: None.
    """
    window = parse_quiet_hours(quiet_hours)
    if window is None:
        return None
    start, end = window
    tzi = _zone_or_utc(tz)
    local = datetime.fromtimestamp(now_ms // 1000, tz=UTC).astimezone(tzi)
    now_of_day = (local.hour * 3600 + local.minute * 60 + local.second) * 1000 + now_ms % 1000
    start_ms = (start.hour * 60 + start.minute) * 60_000
    end_ms = (end.hour * 60 + end.minute) * 60_000
    if start_ms < end_ms:
        if not start_ms <= now_of_day < end_ms:
            return None
        end_day = local.date()
    elif now_of_day >= start_ms:
        end_day = local.date() + timedelta(days=1)
    elif now_of_day < end_ms:
        end_day = local.date()
    else:
        return None
    until = local_instant_ms(end_day, end, tzi)
    return until if until > now_ms else None


# ---------------------------------------------------------------------------------------------
# Templates and rendering


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    subject: str
    body: str
    cta: str


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    type: str
    variants: tuple[Variant, ...]

    def variant(self, variant_id: str) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)


def _template(type: str, *variants: tuple[str, str, str]) -> Template:
    return Template(
        id=type,
        type=type,
        variants=tuple(Variant(chr(ord("a") + i), *texts) for i, texts in enumerate(variants)),
    )


# The texts use the variables that `decide` fills from the context (display_name, streak, level,
# days_quiet) or that the caller passes; each reads correctly with the defaults of DEFAULT_VARIABLES.
_TEMPLATE_LIST: tuple[Template, ...] = (
    _template(
        "gentle_reminder",
        (
            "We saved your place",
            "Hi {display_name}, it's been {days_quiet} days since your last session."
            " Ten minutes today keeps your progress moving.",
            "Resume learning",
        ),
        (
            "Your next lesson is waiting",
            "Hi {display_name}, pick up where you left off: a short session is enough to keep the habit.",
            "Continue",
        ),
    ),
    _template(
        "streak_warning",
        (
            "Your streak ends at midnight",
            "Hi {display_name}, {streak} days in a row so far: one activity today keeps your streak alive.",
            "Save my streak",
        ),
        (
            "Don't lose {streak} days of progress",
            "Complete any lesson or challenge before the day ends to keep your streak going.",
            "Keep it going",
        ),
    ),
    _template(
        "achievement_notification",
        (
            "Achievement unlocked: {badge}",
            "Nice work, {display_name}! Keep going to unlock the next one.",
            "See my badges",
        ),
        (
            "You earned {badge}",
            "Hi {display_name}, your effort is paying off. Share it or aim for the next badge.",
            "View achievement",
        ),
    ),
    _template(
        "milestone_celebration",
        (
            "You reached {milestone}!",
            "Congratulations, {display_name}! Set your next goal while the momentum is yours.",
            "Set my next goal",
        ),
        (
            "Milestone: {milestone}",
            "Hi {display_name}, few learners get this far. Celebrate, then keep climbing.",
            "Celebrate",
        ),
    ),
    _template(
        "personalized_content",
        (
            "Recommended for you: {topic}",
            "Hi {display_name}, based on your recent practice this is what will help you most right now.",
            "Start now",
        ),
        (
            "A quick win for today",
            "Hi {display_name}, try {topic}: about 10 minutes, tailored to where you are.",
            "Try it",
        ),
    ),
    _template(
        "discount_offer",
        (
            "Save {discount_pct} on Premium",
            "Hi {display_name}, unlock mock interviews and unlimited practice to get back on track.",
            "Claim offer",
        ),
        (
            "A gift to get you back on track",
            "Hi {display_name}, take {discount_pct} off Premium and continue your preparation.",
            "Use my discount",
        ),
    ),
    _template(
        "peer_comparison",
        (
            "Learners like you are moving ahead",
            "{peer_pct} of them practised this week. Join them with a 10-minute session.",
            "Practise now",
        ),
        (
            "Your peers are on a roll",
            "Hi {display_name}, learners at your level are practising this week. Don't fall behind.",
            "Catch up",
        ),
    ),
    # Staff-facing: the body is read by a coach in the outreach queue, not by the student.
    _template(
        "human_outreach",
        (
            "Reach out to student {user_id}",
            "Risk score {score} ({risk_level}); top signals: {signals}. Last active {days_quiet} days ago.",
            "Open student profile",
        ),
    ),
)
TEMPLATES: Mapping[str, Template] = {t.id: t for t in _TEMPLATE_LIST}
_TEMPLATE_BY_TYPE: Mapping[str, str] = {t.type: t.id for t in reversed(_TEMPLATE_LIST)}


def template_for(type: str) -> Template:
    """The default template of an intervention type (the first registered for it)."""
    _check_type(type)
    return TEMPLATES[_TEMPLATE_BY_TYPE[type]]


#: What a placeholder reads when the caller has no value for it: neutral words, never invented
#: numbers (a made-up discount or percentage would be a promise nobody made).
DEFAULT_VARIABLES: Mapping[str, str] = {
    "display_name": "there",
    "days_quiet": "a few",
    "streak": "several",
    "level": "your level",
    "badge": "a new badge",
    "milestone": "a new milestone",
    "topic": "a short lesson chosen for your goals",
    "discount_pct": "extra",
    "peer_pct": "Many",
    "score": "n/a",
    "risk_level": "unknown level",
    "signals": "none reported",
    "user_id": "unknown",
}


def _display(name: str, value: object) -> str:
    """A variable as text: whole floats without decimals, `*_pct` numbers with their % sign."""
    if isinstance(value, bool) or value is None:
        text = "" if value is None else str(value).lower()
    elif isinstance(value, int | float):
        number = float(value)
        text = str(int(number)) if number.is_integer() else f"{number:.1f}"
        if name.endswith("_pct"):
            text += "%"
    elif isinstance(value, list | tuple):
        text = ", ".join(_display(name, item) for item in value)
    else:
        text = str(value)
    return text


class _Defaulting(Mapping[str, str]):
    """Variables as display text; any missing name reads as its default (or nothing)."""

    def __init__(self, variables: Mapping[str, object]) -> None:
        self._values = {str(k): _display(str(k), v) for k, v in variables.items() if v is not None}

    def __getitem__(self, key: str) -> str:
        value = self._values.get(key)
        return value if value else DEFAULT_VARIABLES.get(key, "")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class _SafeFormatter(string.Formatter):
    """str.format that cannot fail on its fields: positional, dotted or indexed fields and bad
    format specs render as defaults instead of raising (templates may come from operators)."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        return kwargs[root], root

    def format_field(self, value: Any, format_spec: str) -> Any:
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value  # !r / !s on display text would only add quotes


_FORMATTER = _SafeFormatter()


def render_text(text: str, variables: Mapping[str, object]) -> str:
    try:
        return _FORMATTER.vformat(text, (), _Defaulting(variables))
    except (ValueError, IndexError, KeyError):
        return text  # unbalanced braces: show the text as written rather than nothing


def render(variant: Variant, variables: Mapping[str, object]) -> dict[str, str]:
    """{"subject", "body", "cta"} with the placeholders filled; never raises."""
    return {
        "subject": render_text(variant.subject, variables),
        "body": render_text(variant.body, variables),
        "cta": render_text(variant.cta, variables),
    }


# ---------------------------------------------------------------------------------------------
# A/B: Thompson sampling on clicks and conversions


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def _counts() -> dict[str, int]:
    return dict.fromkeys(STAGES, 0)


@dataclass
class VariantStats:
    """One template's funnel per variant: variant id -> {"sent", "opened", "clicked", "converted"}."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, variant: str, stage: str, n: int = 1) -> None:
        _check_stage(stage)
        self.counts.setdefault(variant, _counts())[stage] += n

    def as_mapping(self) -> Mapping[str, Mapping[str, int]]:
        return self.counts

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATS_VERSION, "counts": {v: dict(c) for v, c in self.counts.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantStats:
        if data.get("v") != STATS_VERSION:
            raise ValueError(f"unsupported variant stats version {data.get('v')!r}")
        return cls({str(v): _read_counts(c) for v, c in (data.get("counts") or {}).items()})


def _read_counts(raw: Mapping[str, Any]) -> dict[str, int]:
    counts = _counts()
    for stage in STAGES:
        counts[stage] = int(raw.get(stage, 0))
    return counts


def sends_and_rewards(counts: Mapping[str, int]) -> tuple[int, int]:
    """(sends, rewarded sends). A send is rewarded when clicked or converted, counted once:
    `track` makes conversions imply clicks, so max() guards only sources that do not."""
    sends = max(0, int(counts.get("sent", 0)))
    rewards = max(int(counts.get("clicked", 0)), int(counts.get("converted", 0)), 0)
    return sends, min(rewards, sends)


def seeded_random(*parts: str) -> random.Random:
    """A generator determined by `parts` in every process (SHA-256; `hash()` is salted)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def choose_variant(
    template: Template,
    stats: Mapping[str, Mapping[str, int]] | VariantStats | None,
    seed: str,
) -> Variant:
    """Thompson sampling: draw from Beta(1 + rewards, 1 + sends - rewards) per variant, pick the
    highest draw (ties to the earlier variant). Deterministic in (template, stats, seed)."""
    if not template.variants:
        raise ValueError(f"template {template.id!r} has no variants")
    if len(template.variants) == 1:
        return template.variants[0]
    counts = stats.counts if isinstance(stats, VariantStats) else (stats or {})
    rng = seeded_random(template.id, seed)
    best, best_draw = template.variants[0], -1.0
    for variant in template.variants:
        sends, rewards = sends_and_rewards(counts.get(variant.id, {}))
        draw = rng.betavariate(1 + rewards, 1 + sends - rewards)
        if draw > best_draw:
            best, best_draw = variant, draw
    return best


# ---------------------------------------------------------------------------------------------
# Analytics


def _rates(counts: Mapping[str, int]) -> dict[str, float | int]:
    sent = counts.get("sent", 0)
    view: dict[str, float | int] = {stage: counts.get(stage, 0) for stage in STAGES}
    for stage, rate in (("opened", "open_rate"), ("clicked", "click_rate"), ("converted", "conversion_rate")):
        view[rate] = round(counts.get(stage, 0) / sent, 4) if sent else 0
    return view


@dataclass
class InterventionStats:
    """Global funnel counts by type, by channel and by (template, variant).

    One `record` per notification and stage: a notification on several channels is attributed to
    the channel passed (the one a tracking event names, else its primary channel), so totals
    count notifications, not copies. The per-template counts feed `choose_variant`.
    """

    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    by_channel: dict[str, dict[str, int]] = field(default_factory=dict)
    by_template: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def record(self, stage: str, type: str, channel: str, template: str, variant: str) -> None:
        _check_stage(stage)
        self.by_type.setdefault(type, _counts())[stage] += 1
        self.by_channel.setdefault(channel, _counts())[stage] += 1
        self.by_template.setdefault(template, {}).setdefault(variant, _counts())[stage] += 1

    def record_notification(self, stage: str, n: Notification, channel: str | None = None) -> None:
        self.record(stage, n.type, channel or n.primary_channel, n.template, n.variant)

    def variant_stats(self, template: str) -> Mapping[str, Mapping[str, int]]:
        return {v: dict(c) for v, c in self.by_template.get(template, {}).items()}

    def view(self) -> dict[str, Any]:
        totals = _counts()
        for counts in self.by_type.values():
            for stage in STAGES:
                totals[stage] += counts.get(stage, 0)
        return {
            "by_type": {k: _rates(self.by_type[k]) for k in sorted(self.by_type)},
            "by_channel": {k: _rates(self.by_channel[k]) for k in sorted(self.by_channel)},
            "by_template": {
                t: {v: _rates(c) for v, c in sorted(self.by_template[t].items())}
                for t in sorted(self.by_template)
            },
            "totals": _rates(totals),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATS_VERSION,
            "by_type": {k: dict(c) for k, c in self.by_type.items()},
            "by_channel": {k: dict(c) for k, c in self.by_channel.items()},
            "by_template": {t: {v: dict(c) for v, c in vs.items()} for t, vs in self.by_template.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InterventionStats:
        if data.get("v") != STATS_VERSION:
            raise ValueError(f"unsupported intervention stats version {data.get('v')!r}")
        return cls(
            by_type={str(k): _read_counts(c) for k, c in (data.get("by_type") or {}).items()},
            by_channel={str(k): _read_counts(c) for k, c in (data.get("by_channel") or {}).items()},
            by_template={
                str(t): {str(v): _read_counts(c) for v, c in vs.items()}
                for t, vs in (data.get("by_template") or {}).items()
            },
        )


# ---------------------------------------------------------------------------------------------
# Notifications and the per-user book


def notification_id(user_id: str, key: str) -> str:
    """Deterministic id: a replay of the same trigger names the same notification. The user id
    is hashed in because keys need only be unique per user (a campaign key is shared)."""
    return "n-" + hashlib.sha1(f"{user_id}\x1f{key}".encode(), usedforsecurity=False).hexdigest()[:20]


def risk_key(user_id: str, type: str, day: int | str) -> str:
    """Idempotency key of a risk-driven nudge: one per user, type and (local) day."""
    return f"risk:{user_id}:{type}:{day}"


@dataclass
class Notification:
    """One intervention to one user (or, for human_outreach, to staff about one user)."""

    id: str
    user_id: str
    type: str
    channels: tuple[str, ...]
    template: str
    variant: str
    subject: str
    body: str
    cta: str
    created_ms: int
    deliver_at_ms: int  # > created_ms when quiet hours deferred it
    key: str  # idempotency key
    source: str  # "risk", "campaign:<id>", "streak", ...
    urgency: str = "medium"
    status: str = "pending"  # pending -> sent, or cancelled
    read: bool = False
    sent_ms: int | None = None
    opened_ms: int | None = None
    clicked_ms: int | None = None
    converted_ms: int | None = None

    @property
    def primary_channel(self) -> str:
        return self.channels[0] if self.channels else STAFF_CHANNEL

    def public(self) -> dict[str, Any]:
        """What the user's notification list shows (no template, variant or key)."""
        return {
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "body": self.body,
            "cta": self.cta,
            "channels": list(self.channels),
            "created_at": format_ts(self.sent_ms if self.sent_ms is not None else self.deliver_at_ms),
            "read": self.read,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "channels": list(self.channels),
            "template": self.template,
            "variant": self.variant,
            "subject": self.subject,
            "body": self.body,
            "cta": self.cta,
            "created_ms": self.created_ms,
            "deliver_at_ms": self.deliver_at_ms,
            "key": self.key,
            "source": self.source,
            "urgency": self.urgency,
            "status": self.status,
            "read": self.read,
            "sent_ms": self.sent_ms,
            "opened_ms": self.opened_ms,
            "clicked_ms": self.clicked_ms,
            "converted_ms": self.converted_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        def optional_ms(name: str) -> int | None:
            value = data.get(name)
            return None if value is None else int(value)

        return cls(
            id=str(data["id"]),
            user_id=str(data["user_id"]),
            type=str(data["type"]),
            channels=tuple(str(c) for c in data.get("channels") or ()),
            template=str(data["template"]),
            variant=str(data["variant"]),
            subject=str(data["subject"]),
            body=str(data["body"]),
            cta=str(data["cta"]),
            created_ms=int(data["created_ms"]),
            deliver_at_ms=int(data["deliver_at_ms"]),
            key=str(data["key"]),
            source=str(data["source"]),
            urgency=str(data.get("urgency") or "medium"),
            status=str(data.get("status") or "pending"),
            read=bool(data.get("read", False)),
            sent_ms=optional_ms("sent_ms"),
            opened_ms=optional_ms("opened_ms"),
            clicked_ms=optional_ms("clicked_ms"),
            converted_ms=optional_ms("converted_ms"),
        )


@dataclass
class NotificationBook:
    """One user's notification state; every list and map is bounded (see the module docstring)."""

    inbox: list[Notification] = field(default_factory=list)  # IN_APP, newest last
    pending: list[Notification] = field(default_factory=list)  # deferred by quiet hours
    delivered: list[Notification] = field(default_factory=list)  # recent non-inbox, for tracking
    sent_log: list[tuple[int, str]] = field(default_factory=list)  # (ts_ms, type) of sends
    keys: dict[str, int] = field(default_factory=dict)  # idempotency key -> ts_ms

    def find(self, notification_id: str) -> Notification | None:
        for group in (self.inbox, self.delivered, self.pending):
            for n in group:
                if n.id == notification_id:
                    return n
        return None

    def mark_read(self, notification_id: str) -> bool:
        """Mark read; False when the user has no such notification (idempotent otherwise)."""
        n = self.find(notification_id)
        if n is None:
            return False
        n.read = True
        return True

    def track(self, notification_id: str, stage: str, ts_ms: int) -> list[str]:
        """Record a tracking stage; returns the stages recorded NOW, in funnel order.

        A stage implies the ones before it (a click was opened, a conversion clicked), so a
        click on an unopened notification returns ["opened", "clicked"]; a stage recorded before
        returns nothing. Unknown notifications return [] (tracking events may outlive them).
        """
        if stage not in TRACK_STAGES:
            raise ValueError(f"unknown tracking stage {stage!r}; expected one of {TRACK_STAGES}")
        n = self.find(notification_id)
        if n is None:
            return []
        recorded: list[str] = []
        for s in TRACK_STAGES[: TRACK_STAGES.index(stage) + 1]:
            attr = f"{s}_ms"
            if getattr(n, attr) is None:
                setattr(n, attr, ts_ms)
                recorded.append(s)
        return recorded

    def unread(self) -> int:
        return sum(1 for n in self.inbox if not n.read)

    def public(self) -> list[dict[str, Any]]:
        """The inbox as the API shows it, newest first."""
        return [n.public() for n in reversed(self.inbox)]

    def prune(self, now_ms: int) -> None:
        """Forget sends older than THROTTLE_WINDOW_MS and keys older than KEY_TTL_MS."""
        self.sent_log = [(ts, t) for ts, t in self.sent_log if ts > now_ms - THROTTLE_WINDOW_MS]
        self.keys = {k: ts for k, ts in self.keys.items() if ts > now_ms - KEY_TTL_MS}
        if len(self.keys) > MAX_KEYS:
            newest = sorted(self.keys.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_KEYS]
            self.keys = dict(newest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": BOOK_VERSION,
            "inbox": [n.to_dict() for n in self.inbox],
            "pending": [n.to_dict() for n in self.pending],
            "delivered": [n.to_dict() for n in self.delivered],
            "sent_log": [[ts, t] for ts, t in self.sent_log],
            "keys": dict(self.keys),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotificationBook:
        if data.get("v") != BOOK_VERSION:
            raise ValueError(f"unsupported notification book version {data.get('v')!r}")

        def notifications(name: str) -> list[Notification]:
            return [Notification.from_dict(n) for n in data.get(name) or ()]

        return cls(
            inbox=notifications("inbox"),
            pending=notifications("pending"),
            delivered=notifications("delivered"),
            sent_log=[(int(ts), str(t)) for ts, t in data.get("sent_log") or ()],
            keys={str(k): int(ts) for k, ts in (data.get("keys") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's verdict: a notification to deliver now ("queued"), one held back ("deferred",
    already in `book.pending`), or a reason for sending nothing."""

    notification: Notification | None
    reason: str


def _throttled(book: NotificationBook, type: str, now_ms: int) -> bool:
    if type not in STAFF_TYPES:
        recent = sum(1 for ts, t in book.sent_log if t not in STAFF_TYPES and ts > now_ms - CAP_WINDOW_MS)
        if recent >= MAX_PER_DAY:
            return True
    gap = MIN_GAP_MS.get(type, 0)
    # Future entries (deferred sends) count too: ts > now - gap holds for them.
    return gap > 0 and any(t == type and ts > now_ms - gap for ts, t in book.sent_log)


def _chosen_channels(ctx: UserContext, type: str, urgency: str, channels: Sequence[str] | None) -> list[str]:
    if type in STAFF_TYPES:
        return []
    if channels is None:
        return channels_for(urgency, ctx)
    allowed = allowed_channels(ctx)
    chosen: list[str] = []
    for c in channels:
        name = c.upper()
        if name in allowed and name not in chosen:
            chosen.append(name)
    return chosen


def context_variables(ctx: UserContext, now_ms: int) -> dict[str, object]:
    """Template variables known from the context alone; the caller's variables override them."""
    values: dict[str, object] = {"user_id": ctx.user_id, "level": ctx.level}
    if ctx.display_name:
        values["display_name"] = ctx.display_name
    if ctx.streak > 0:
        values["streak"] = ctx.streak
    if ctx.last_active_ms is not None and now_ms - ctx.last_active_ms >= 2 * DAY_MS:
        values["days_quiet"] = round((now_ms - ctx.last_active_ms) / DAY_MS)  # 3.9 days reads "4"
    return values


def decide(
    book: NotificationBook,
    ctx: UserContext,
    type: str,
    key: str,
    now_ms: int,
    *,
    source: str,
    variables: Mapping[str, object],
    stats: VariantStats | Mapping[str, Mapping[str, int]] | None,
    urgency: str = "medium",
    channels: Sequence[str] | None = None,
) -> Decision:
    """The single gate every intervention passes, in this order: duplicate key, opt-out, user
    returned (re-engagement types), throttle, channels, then queue or defer for quiet hours.

    `channels`, when given, replaces the urgency's choice but is still limited to the channels
    the user allows (no fallback: the caller asked for specific ones). On "queued" and
    "deferred" the key and the send are recorded in `book`; a deferred notification is appended
    to `book.pending` for `due`. A queued one is the caller's to deliver (`deliver`).
    """
    _check_type(type)
    book.prune(now_ms)
    if key in book.keys:
        return Decision(None, DUPLICATE)
    if ctx.opted_out(type):
        return Decision(None, OPTED_OUT)
    if type in RE_ENGAGEMENT and ctx.returned(now_ms):
        return Decision(None, RETURNED)
    if _throttled(book, type, now_ms):
        return Decision(None, THROTTLED)
    chosen = _chosen_channels(ctx, type, urgency, channels)
    if not chosen and type not in STAFF_TYPES:
        return Decision(None, NO_CHANNEL)
    deliver_at = now_ms
    if INTERRUPTING.intersection(chosen):
        until = quiet_until(now_ms, ctx.timezone, ctx.prefs.get("quiet_hours"))
        if until is not None:
            if len(book.pending) >= MAX_PENDING:
                return Decision(None, THROTTLED)
            deliver_at = until
    template = template_for(type)
    variant = choose_variant(template, stats, seed=f"{ctx.user_id}\x1f{key}")
    text = render(variant, {**context_variables(ctx, now_ms), **variables})
    n = Notification(
        id=notification_id(ctx.user_id, key),
        user_id=ctx.user_id,
        type=type,
        channels=tuple(chosen),
        template=template.id,
        variant=variant.id,
        subject=text["subject"],
        body=text["body"],
        cta=text["cta"],
        created_ms=now_ms,
        deliver_at_ms=deliver_at,
        key=key,
        source=source,
        urgency=urgency,
    )
    book.keys[key] = now_ms
    book.sent_log.append((deliver_at, type))
    if deliver_at > now_ms:
        book.pending.append(n)
        return Decision(n, DEFERRED)
    return Decision(n, QUEUED)


def _forget_send(book: NotificationBook, n: Notification) -> None:
    with contextlib.suppress(ValueError):  # already pruned
        book.sent_log.remove((n.deliver_at_ms, n.type))


def withdraw(book: NotificationBook, n: Notification) -> None:
    """Take back a deferred notification before its time (its send no longer counts against
    the throttle; its key stays remembered, so the trigger does not fire it again)."""
    book.pending = [p for p in book.pending if p.id != n.id]
    n.status = "cancelled"
    _forget_send(book, n)


def due(book: NotificationBook, now_ms: int, ctx: UserContext) -> list[Decision]:
    """Pop the deferred notifications whose time has come, oldest first.

    Each is "queued" (the caller delivers it), or cancelled (status "cancelled", its send no
    longer counted against the throttle, its key still remembered): "returned" for a
    re-engagement type when the user was active after it was created, "opted_out" when they
    opted out of its type in the meantime.
    """
    ready = sorted(
        (n for n in book.pending if n.deliver_at_ms <= now_ms),
        key=lambda n: (n.deliver_at_ms, n.created_ms, n.id),
    )
    if not ready:
        return []
    ready_ids = {n.id for n in ready}
    book.pending = [n for n in book.pending if n.id not in ready_ids]
    decisions: list[Decision] = []
    for n in ready:
        reason = QUEUED
        if ctx.opted_out(n.type):
            reason = OPTED_OUT
        elif n.type in RE_ENGAGEMENT and ctx.last_active_ms is not None and ctx.last_active_ms > n.created_ms:
            reason = RETURNED
        if reason != QUEUED:
            n.status = "cancelled"
            _forget_send(book, n)
        decisions.append(Decision(n, reason))
    book.prune(now_ms)
    return decisions


def deliver(book: NotificationBook, n: Notification, now_ms: int) -> None:
    """Mark `n` sent; IN_APP ones enter the inbox (oldest dropped beyond MAX_INBOX), others the
    small delivered index that tracking events look up. Idempotent."""
    book.pending = [p for p in book.pending if p.id != n.id]
    if n.status != "sent":
        n.status = "sent"
        n.sent_ms = now_ms
    group, bound = (book.inbox, MAX_INBOX) if "IN_APP" in n.channels else (book.delivered, MAX_DELIVERED)
    if all(existing.id != n.id for existing in group):
        group.append(n)
        del group[:-bound]
