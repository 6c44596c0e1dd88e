"""The Redis key layout of the serving view. Writers (streams/) and readers (api/) both use
these functions, so the layout is defined once."""

from __future__ import annotations

PREFIX = "elimu"


def user_state(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


def user_risk(user_id: str) -> str:
    return f"{PREFIX}:risk:{user_id}"


def leaderboard(period: str, bucket: str) -> str:
    """``period`` is daily/weekly/all_time; ``bucket`` the UTC day, ISO week or ``all``."""
    return f"{PREFIX}:lb:{period}:{bucket}"


def channel_seq(channel: str) -> str:
    return f"{PREFIX}:ch:{{{channel}}}:seq"


def channel_log(channel: str) -> str:
    return f"{PREFIX}:ch:{{{channel}}}:log"


def channel_dedup(channel: str, key: str) -> str:
    return f"{PREFIX}:ch:{{{channel}}}:dedup:{key}"


def channel_pubsub(channel: str) -> str:
    return f"{PREFIX}:pub:{channel}"


PUBSUB_PATTERN = f"{PREFIX}:pub:*"

#: Set by a worker after it has projected its tables into Redis; its absence means Redis
#: was wiped (or never filled) and the serving view must be rebuilt from the tables.
SERVING_EPOCH = f"{PREFIX}:serving:epoch"

#: Hash of worker heartbeats (worker id -> unix seconds), read by /readyz.
WORKER_HEARTBEATS = f"{PREFIX}:workers"

#: Hash of worker metric snapshots (worker id -> Prometheus text), so one scrape of the API's
#: /metrics shows every live worker too.
WORKER_METRICS = f"{PREFIX}:worker-metrics"

#: Consumer-lag sampler (infra/lag.py): a capped list of offset snapshots (newest first), the
#: latest report built from them, and the lock that lets one API process sample at a time.
LAG_SAMPLES = f"{PREFIX}:lag:samples"
LAG_REPORT = f"{PREFIX}:lag:report"
LAG_SAMPLER_LOCK = f"{PREFIX}:lag:lock"


#: A user's job matches (JSON object job_id -> match) and applications (JSON list), whole views.
def user_matches(user_id: str) -> str:
    return f"{PREFIX}:matches:{user_id}"


def user_applications(user_id: str) -> str:
    return f"{PREFIX}:apps:{user_id}"


#: Hash application_id -> facts JSON (models.applications.ApplicationFacts), for analytics.
APPLICATION_FACTS = f"{PREFIX}:apps:facts"

#: Hash of market pulses by scope: field "<location>|<industry>" (casefolded, empty = any).
MARKET_PULSE = f"{PREFIX}:market:pulse"


def market_scope(location: str | None, industry: str | None) -> str:
    return f"{(location or '').casefold()}|{(industry or '').casefold()}"


def command_result(command_id: str) -> str:
    """The worker's answer to an API command (infra/commands.py), kept a day for retries."""
    return f"{PREFIX}:cmd:{command_id}"


def user_rewards(user_id: str) -> str:
    return f"{PREFIX}:rewards:{user_id}"


def user_referrals(user_id: str) -> str:
    return f"{PREFIX}:referrals:{user_id}"


def user_growth(user_id: str) -> str:
    """Challenge progress and goals of a user (JSON)."""
    return f"{PREFIX}:growth:{user_id}"


def referral_code(code: str) -> str:
    return f"{PREFIX}:refcode:{code}"


#: Hash referrer id -> referral book JSON, for growth analytics and the review queue.
REFERRAL_BOOKS = f"{PREFIX}:referrals:books"


def referral_ip_claims(ip: str, day: str) -> str:
    return f"{PREFIX}:refip:{ip}:{day}"


#: Sorted set: every scored user's current drop-off risk (0-100), for the at-risk list and stats.
RISK_SCORES = f"{PREFIX}:risk-board"  # not under "risk:", where user ids live
#: The risk trainer's prequential evaluation (JSON), for operators.
RISK_EVALUATION = f"{PREFIX}:risk-evaluation"


def user_notifications(user_id: str) -> str:
    """The user's in-app inbox (JSON: unread count and notifications, newest first)."""
    return f"{PREFIX}:notifications:{user_id}"


#: The interventions' funnel analytics (JSON, `InterventionStats.view`).
INTERVENTION_ANALYTICS = f"{PREFIX}:interventions:analytics"
#: Hash: campaign id -> its definition (JSON), mirrored from `elimu-broadcast`.
CAMPAIGNS = f"{PREFIX}:campaigns"
#: Hash: campaign id -> its execution log (JSON, `CampaignRun.to_dict`).
CAMPAIGN_RUNS = f"{PREFIX}:campaign-runs"
