"""Interventions and notifications: which nudge, on which channel, when, worded how, and how often.

Modules: `policy` (types, channels by urgency, `recommend`), `quiet_hours`, `templates` (wording,
A/B variants), `bandit` (variant choice, funnel analytics), `notifications` (the per-user book
and the gate every nudge passes: `decide`, `due`, `deliver`). Everything is re-exported here.

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

from models.interventions.bandit import (
    STAGES,
    STATS_VERSION,
    InterventionStats,
    VariantStats,
    choose_variant,
    seeded_random,
    sends_and_rewards,
)
from models.interventions.notifications import (
    BOOK_VERSION,
    CAP_WINDOW_MS,
    DEFERRED,
    DUPLICATE,
    KEY_TTL_MS,
    MAX_DELIVERED,
    MAX_INBOX,
    MAX_KEYS,
    MAX_PENDING,
    MAX_PER_DAY,
    MIN_GAP_MS,
    NO_CHANNEL,
    OPTED_OUT,
    QUEUED,
    RETURNED,
    THROTTLE_WINDOW_MS,
    THROTTLED,
    TRACK_STAGES,
    Decision,
    Notification,
    NotificationBook,
    context_variables,
    decide,
    deliver,
    due,
    notification_id,
    risk_key,
    withdraw,
)
from models.interventions.policy import (
    CAREER_TYPES,
    CHANNELS,
    DISCOUNT_LEVELS,
    INTERRUPTING,
    INTERVENTION_TYPES,
    LEVEL_DEFAULTS,
    MAX_RECOMMENDATIONS,
    NOTIFICATION_TYPES,
    RE_ENGAGEMENT,
    RETURN_GRACE_MS,
    SIGNAL_TYPES,
    STAFF_CHANNEL,
    STAFF_TYPES,
    TRANSACTIONAL,
    URGENCY_CHANNELS,
    URGENCY_LEVELS,
    UserContext,
    allowed_channels,
    channels_for,
    check_type,
    recommend,
    recommend_for,
)
from models.interventions.quiet_hours import (
    parse_quiet_hours,
    quiet_until,
)
from models.interventions.templates import (
    DEFAULT_VARIABLES,
    TEMPLATES,
    Template,
    Variant,
    render,
    render_text,
    template_for,
)

__all__ = [
    "BOOK_VERSION",
    "CAP_WINDOW_MS",
    "CAREER_TYPES",
    "CHANNELS",
    "DEFAULT_VARIABLES",
    "DEFERRED",
    "DISCOUNT_LEVELS",
    "DUPLICATE",
    "INTERRUPTING",
    "INTERVENTION_TYPES",
    "KEY_TTL_MS",
    "LEVEL_DEFAULTS",
    "MAX_DELIVERED",
    "MAX_INBOX",
    "MAX_KEYS",
    "MAX_PENDING",
    "MAX_PER_DAY",
    "MAX_RECOMMENDATIONS",
    "MIN_GAP_MS",
    "NOTIFICATION_TYPES",
    "NO_CHANNEL",
    "OPTED_OUT",
    "QUEUED",
    "RETURNED",
    "RETURN_GRACE_MS",
    "RE_ENGAGEMENT",
    "SIGNAL_TYPES",
    "STAFF_CHANNEL",
    "STAFF_TYPES",
    "STAGES",
    "STATS_VERSION",
    "TEMPLATES",
    "THROTTLED",
    "THROTTLE_WINDOW_MS",
    "TRACK_STAGES",
    "TRANSACTIONAL",
    "URGENCY_CHANNELS",
    "URGENCY_LEVELS",
    "Decision",
    "InterventionStats",
    "Notification",
    "NotificationBook",
    "Template",
    "UserContext",
    "Variant",
    "VariantStats",
    "allowed_channels",
    "channels_for",
    "check_type",
    "choose_variant",
    "context_variables",
    "decide",
    "deliver",
    "due",
    "notification_id",
    "parse_quiet_hours",
    "quiet_until",
    "recommend",
    "recommend_for",
    "render",
    "render_text",
    "risk_key",
    "seeded_random",
    "sends_and_rewards",
    "template_for",
    "withdraw",
]
