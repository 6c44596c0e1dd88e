"""Every Kafka topic's name, and which of them only the engine may write.

One home for the names that the worker, the API, the CLI and the tests share; modules that
produce or consume a topic import its name from here.
"""

from __future__ import annotations

# Public input topics (CONTRACT.md §4): any authorised producer writes them.
BEHAVIOR_EVENTS = "behavior-events"
JOB_POSTINGS = "job-postings"
APPLICATION_STATUS = "application-status"
USER_PROFILES = "user-profiles"
INPUT_TOPICS = (BEHAVIOR_EVENTS, JOB_POSTINGS, APPLICATION_STATUS, USER_PROFILES)

# Output topics (CONTRACT.md §5).
ENGAGEMENT_UPDATES = "engagement-updates"
NOTIFICATIONS = "notifications"
RISK_SCORES = "risk-scores"
MARKET_PULSE = "market-pulse"
MATCH_ALERTS = "match-alerts"
DEAD_LETTER = "dead-letter"
OUTPUT_TOPICS = (ENGAGEMENT_UPDATES, NOTIFICATIONS, RISK_SCORES, MARKET_PULSE, MATCH_ALERTS)

# The engine's own topics between its processes.
JOB_FANOUT = "elimu-job-fanout"
MARKET = "elimu-market"
USER_COMMANDS = "user-commands"
REFERRALS = "elimu-referrals"
RISK_LABELS = "elimu-risk-labels"
INTERVENTION_OUTCOMES = "elimu-intervention-outcomes"
#: Compacted, one partition, read whole by every worker (streams/broadcast.py): the risk model,
#: the interventions' variant counts and the campaign definitions (written by the API).
BROADCAST = "elimu-broadcast"
INTERNAL_TOPICS = (
    JOB_FANOUT,
    MARKET,
    USER_COMMANDS,
    REFERRALS,
    RISK_LABELS,
    INTERVENTION_OUTCOMES,
    BROADCAST,
)

#: Records on these topics must carry the engine's signature (infra/signing.py): each of them
#: moves money, models, matches or nudges, and none is written by anyone but the engine.
SIGNED_TOPICS = frozenset(INTERNAL_TOPICS)
