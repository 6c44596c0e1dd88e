"""The Redis key layout of the serving view. Writers (streams/) and readers (api/) both use
these functions, so the layout is defined once.

Two namespaces that cannot meet, whatever a client names itself:
- user keys ``elimu:u:{<user_id>}:<kind>``: the kind is a fixed word without ``:``, so the key
  reads back as exactly one (user, kind) pair (the kind is after the last ``:``, the id is what
  lies between ``elimu:u:{`` and ``}:<kind>``). The braces are a Redis Cluster hash tag: one
  user's keys share a slot (for an id without ``}``; a ``}`` only moves the tag's end, still the
  same for all of that user's kinds).
- shared keys: everything else under ``elimu:``, built by ``_shared``, which refuses a name in
  the user namespace. Their variable parts follow a fixed word (``lb:``, ``ch:``, ``cmd:``...).
Channel keys are shared keys ``elimu:ch:{<channel>}:<kind>``, except a user's channel
``user:<id>``, whose keys ``elimu:ch:user:{<id>}:<kind>`` carry the user's own hash tag; a dedup
key is a fixed-size digest, so no channel name or dedup key can make one channel's key another's.

On a Redis Cluster, what one script call touches shares a hash tag: a user's keys and their
channel's, one other channel's, one leaderboard, the lag sampler's three keys. The statistics
ranking (``STATS_RANKING``) is one key in a slot of its own: the batch write reaches it in its own
per-slot call (streams/serving.py ``_write_by_slot``), never in a script with a user's keys.
"""

from __future__ import annotations

import hashlib

from models import boards
from models.channels import channel_user

PREFIX = "elimu"
#: Every per-user key, and nothing else, starts with this.
USER_PREFIX = f"{PREFIX}:u:"
#: The layout's version, part of the serving epoch's name: bumping it makes every worker
#: re-project its state under the new names on upgrade (the old keys become garbage; see
#: docs/operations.md for how to delete them). 4: the statistics view and ranking, which the
#: re-projection fills for every user at once.
LAYOUT_VERSION = 4


class KeyspaceError(ValueError):
    """A shared key that would fall in the user namespace (a programming error)."""


def _shared(name: str) -> str:
    key = f"{PREFIX}:{name}"
    if key.startswith(USER_PREFIX):
        raise KeyspaceError(f"shared key {key!r} is in the user namespace {USER_PREFIX!r}")
    return key


#: The kinds of per-user key: words without ':' (see the module docstring).
USER_KINDS = frozenset(
    {
        "state",
        "risk",
        "matches",
        "apps",
        "rewards",
        "referrals",
        "growth",
        "notifications",
        "profile",
        "profilewrite",
        "push",
        "verify-email",
        "verify-sms",
        "stats",
        "board",
        "recs",
    }
)


def _user(user_id: str, kind: str) -> str:
    return f"{USER_PREFIX}{{{user_id}}}:{kind}"


def user_state(user_id: str) -> str:
    return _user(user_id, "state")


def user_risk(user_id: str) -> str:
    return _user(user_id, "risk")


def user_stats(user_id: str) -> str:
    """What ``GET /v1/users/{id}/stats`` is built from (JSON, ``models.stats.stats_document``),
    written by the worker with the user's view."""
    return _user(user_id, "stats")


#: Sorted set: every ranked student's all-time average score (member = user id, so a student is
#: there once), for the statistics' percentile (models/stats.py ``WeeklyStats.ranking_value``).
STATS_RANKING = _shared("stats-ranking")


def leaderboard(period: str, bucket: str) -> str:
    """``period`` is daily/weekly/all_time; ``bucket`` the UTC day, ISO week or ``all``."""
    return _shared(f"lb:{period}:{bucket}")


def group_leaderboard(kind: str, digest: str, period: str, bucket: str) -> str:
    """A school's or cohort's board (``kind`` from models.boards.GROUP_KINDS): the group is named
    by ``models.boards.group_digest`` (fixed-size hex), never by its user-chosen name, and its
    kind is not a period, so it meets neither another group's board nor a global one."""
    if kind not in boards.GROUP_KINDS or not boards.is_group_digest(digest):
        raise KeyspaceError(f"not a group board: {kind!r} {digest!r}")
    return _shared(f"lb:{kind}:{digest}:{period}:{bucket}")


def user_board(user_id: str) -> str:
    """What the boards show of a user and their own standing (JSON, streams/serving.py
    ``board_card``): the name, school and cohort an entry shows, whether they are listed, and
    their period scores (for their own rank when hidden)."""
    return _user(user_id, "board")


def _channel(channel: str, kind: str) -> str:
    user_id = channel_user(channel)
    if user_id is not None:
        # The user's own hash tag: a batch writes a user's view and the push on their channel in
        # one slot, so one script call on a Redis Cluster (infra/redis_conn.py).
        return _shared(f"ch:user:{{{user_id}}}:{kind}")
    return _shared(f"ch:{{{channel}}}:{kind}")


def channel_seq(channel: str) -> str:
    return _channel(channel, "seq")


def channel_log(channel: str) -> str:
    return _channel(channel, "log")


def channel_bytes(channel: str) -> str:
    """``"<bytes>:<count>"`` held in ``channel_log`` (infra/channels.py keeps the two in step)."""
    return _channel(channel, "bytes")


def channel_dedup(channel: str) -> str:
    """The channel's recent dedup keys (a sorted set of fixed-size digests, capped in count:
    infra/channels.py), so a channel's dedup memory is bounded however much it publishes."""
    return _channel(channel, "dedup")


def channel_pubsub(channel: str) -> str:
    """A pub/sub channel name (pub/sub names are not keys and cannot meet them)."""
    return f"{PREFIX}:pub:{channel}"


PUBSUB_PATTERN = f"{PREFIX}:pub:*"

#: Set by a worker after it has projected its tables into Redis; its absence means Redis
#: was wiped (or never filled), or the layout changed, and the serving view must be rebuilt
#: from the tables.
SERVING_EPOCH = _shared(f"serving:epoch:v{LAYOUT_VERSION}")

#: Hash of worker heartbeats (worker id -> unix seconds), read by /readyz.
WORKER_HEARTBEATS = _shared("workers")

#: Hash of stalled workers (worker id -> JSON {agent, seconds, reason}), read by /readyz: a
#: worker with a batch in flight too long (streams/progress.py). Absent when all progress.
WORKER_STALLS = f"{PREFIX}:worker-stalls"

#: Hash of heartbeats of the services that are not workers (``elimu deliver``): their metric
#: snapshots join the API's /metrics while they beat; /readyz does not count them as workers.
SERVICE_HEARTBEATS = _shared("services")
#: Sorted set: `notifications` records held back by the user's quiet hours at send time, scored
#: by when those end (delivery/deferred.py).
DELIVERY_PARKED = _shared("dlv-parked")

#: Hash of worker metric snapshots (worker id -> Prometheus text), so one scrape of the API's
#: /metrics shows every live worker too.
WORKER_METRICS = _shared("worker-metrics")

#: Consumer-lag sampler (infra/lag.py): a capped list of offset snapshots (newest first), the
#: latest report built from them, and the lock that lets one API process sample at a time.
# One hash tag: the sampler's commit script touches all three (one slot on a Redis Cluster).
LAG_SAMPLES = _shared("{lag}:samples")
LAG_REPORT = _shared("{lag}:report")
LAG_SAMPLER_LOCK = _shared("{lag}:lock")


#: A user's job matches (JSON object job_id -> match) and applications (JSON list), whole views.
def user_matches(user_id: str) -> str:
    return _user(user_id, "matches")


def user_applications(user_id: str) -> str:
    return _user(user_id, "apps")


#: Hash application_id -> facts JSON (models.applications.ApplicationFacts), for analytics.
# Renamed from "apps:facts" with layout 2: a user named "facts" may have made the old key a string.
APPLICATION_FACTS = _shared("application-facts")

#: Hash of market pulses by scope: field "<location>|<industry>" (casefolded, empty = any).
MARKET_PULSE = _shared("market:pulse")


def market_scope(location: str | None, industry: str | None) -> str:
    return f"{(location or '').casefold()}|{(industry or '').casefold()}"


def command_result(command_id: str) -> str:
    """The worker's answer to an API command (infra/commands.py), kept a day for retries."""
    return _shared(f"cmd:{command_id}")


def risk_recalculation(command_id: str) -> str:
    """A recalculation the API sent (api/routes/risk.py): what it asked and of how many
    partitions, kept as long as the answers, so a poll tells an unknown id from a pending one."""
    return _shared(f"riskrecalc:{command_id}")


def user_rewards(user_id: str) -> str:
    return _user(user_id, "rewards")


def user_referrals(user_id: str) -> str:
    return _user(user_id, "referrals")


def user_growth(user_id: str) -> str:
    """Challenge progress and goals of a user (JSON)."""
    return _user(user_id, "growth")


def user_recommendations(user_id: str) -> str:
    """A user's recommendation facts and the last list pushed (a hash: ``facts``, the bounded
    ``models.recommendations.UserFacts`` the API recommends from; ``meta``, the version and
    digests the worker compares before pushing): streams/recommendations_pipeline.py."""
    return _user(user_id, "recs")


#: The fields of ``user_recommendations``.
RECOMMENDATION_FACTS = "facts"
RECOMMENDATION_META = "meta"


def referral_code(code: str) -> str:
    return _shared(f"refcode:{code}")


#: Hash referrer id -> referral book JSON, for growth analytics and the review queue.
# Renamed from "referrals:books" with layout 2, for the same reason (a user named "books").
REFERRAL_BOOKS = _shared("referral-books")


def referral_ip_claims(ip: str, day: str) -> str:
    return _shared(f"refip:{ip}:{day}")


#: Sorted set: every scored user's current drop-off risk (0-100), for the at-risk list and stats.
RISK_SCORES = _shared("risk-board")
#: The risk trainer's prequential evaluation (JSON), for operators.
RISK_EVALUATION = _shared("risk-evaluation")


def user_profile(user_id: str) -> str:
    """The user's profile and notification settings with their contact (JSON,
    ``CareerState.profile_view``): the API's profile routes and the delivery services read it."""
    return _user(user_id, "profile")


#: The kind of a user's pending address key, per channel (``contact_pending``).
PENDING_CONTACT_KINDS = {"EMAIL": "verify-email", "SMS": "verify-sms"}


def contact_pending(user_id: str, channel: str) -> str:
    """A user's address waiting for its code, on ``channel`` (EMAIL or SMS; a hash,
    ``Pending.to_fields``, expiring with the code): models/contact_verification.py."""
    return _user(user_id, PENDING_CONTACT_KINDS[channel])


def user_profile_written(user_id: str) -> str:
    """The API's last profile write for the user, kept a few minutes (api/routes/profile.py)."""
    return _user(user_id, "profilewrite")


def user_push_subscriptions(user_id: str) -> str:
    """The user's Web Push subscriptions (hash: endpoint digest -> subscription JSON). The API
    adds and removes them for the user; the delivery service removes one the push service says
    is gone (404/410)."""
    return _user(user_id, "push")


def delivery_claim(notification_id: str, channel: str) -> str:
    """One send's idempotency claim (delivery/ledger.py): a digest, so no id can name another
    send's claim or reach outside ``dlv:``."""
    digest = hashlib.sha256(f"{channel}\x00{notification_id}".encode()).hexdigest()[:40]
    return _shared(f"dlv:{digest}")


def unsubscribe_counted(notification_id: str, channel: str) -> str:
    """Set once an unsubscribe through a notification's link was reported (api/routes/tracking.py)."""
    digest = hashlib.sha256(f"{channel}\x00{notification_id}".encode()).hexdigest()[:40]
    return _shared(f"unsub:{digest}")


def tracking_trapped(notification_id: str) -> str:
    """Set while a notification's trap link was just followed: its opens and clicks are a
    scanner's (models/scanners.py)."""
    digest = hashlib.sha256(notification_id.encode()).hexdigest()[:40]
    return _shared(f"trap:{digest}")


def user_notifications(user_id: str) -> str:
    """The user's in-app inbox (JSON: unread count and notifications, newest first)."""
    return _user(user_id, "notifications")


#: The interventions' funnel analytics (JSON, `InterventionStats.view`).
#: The outreach queue (models/outreach.py): every task by id (hash of JSON), the unresolved ones
#: and the resolved ones by time (sorted sets). One hash tag: a change moves a task between them
#: in one script.
OUTREACH_TASKS = _shared("{outreach}:tasks")
OUTREACH_OPEN = _shared("{outreach}:open")
OUTREACH_DONE = _shared("{outreach}:done")

INTERVENTION_ANALYTICS = _shared("interventions:analytics")
#: Hash: campaign id -> its definition (JSON), mirrored from `elimu-broadcast`.
CAMPAIGNS = _shared("campaigns")
#: Hash: campaign id -> its execution log (JSON, `CampaignRun.to_dict`).
CAMPAIGN_RUNS = _shared("campaign-runs")


def campaign_lock(campaign_id: str) -> str:
    """The lock the API holds while it changes a campaign (infra/campaign_view.py)."""
    return _shared(f"campaign-lock:{campaign_id}")


#: Hash of the admins' notification templates (id -> JSON, or a deleted marker), mirrored from
#: the broadcast topic like the campaigns (infra/campaign_view.py).
TEMPLATES = _shared("templates")


# ---------------------------------------------------------------------------------------------
# Delivery receipts (delivery/receipts.py, docs/notifications.md "Delivery receipts"): the index
# from the id a provider's later receipt names to the send it is about, and the mail addresses a
# bounce declared dead (for a while).


def delivery_receipt(channel: str, provider_id: str) -> str:
    """One send's receipt index entry (a hash, ``models.receipts.SentMessage``), by the id its
    receipt will name (an SMS provider's message id, a mail's VERP token): a digest, so no
    provider id, however hostile, can shape a key."""
    digest = hashlib.sha256(f"{channel}\x00{provider_id}".encode()).hexdigest()[:40]
    return _shared(f"rcpt:{digest}")


def email_suppressed(address: str) -> str:
    """Present while a mail address is suppressed: a DSN said it is dead (delivery/receipts.py
    ``suppress``), so the EMAIL channel fails a send to it at once. One key per address, expiring
    (``SUPPRESSION_TTL_MS``): checked in O(1), lifted by deleting it (``lift_suppression``). The
    address (trimmed, lower-cased) is hashed: no address, however hostile, can shape a key."""
    digest = hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:40]
    return _shared(f"email-suppressed:{digest}")
