"""The engine's topology, declared once: every Kafka topic's name, partitioning, compaction,
configuration and key, and which topics only the engine may write.

One home for what the worker (the topics its Faust app declares), the launcher and the CLI
(``infra.kafka.ensure_topics``), the API and the tests share; modules that produce or consume a
topic import its name from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
#: moves money, models, matches or nudges, and none is written by anyone but the engine. The
#: `notifications` output is among them: the delivery services mail, text and push what it says.
SIGNED_TOPICS = frozenset((*INTERNAL_TOPICS, NOTIFICATIONS))

#: Topics with one partition: one worker owns the whole market, the risk trainer and the
#: interventions analytics; the broadcast is read whole by every worker; dead letters are few.
#: Every other topic has ``ELIMU_PARTITIONS`` partitions, keyed (and so owned) by user id.
SINGLE_PARTITION = frozenset({MARKET, RISK_LABELS, INTERVENTION_OUTCOMES, BROADCAST, DEAD_LETTER})
COMPACTED = frozenset({USER_PROFILES, BROADCAST})

#: The message key of each input topic (CONTRACT.md §4).
KEY_FIELD = {
    BEHAVIOR_EVENTS: "user_id",
    JOB_POSTINGS: "job_id",
    APPLICATION_STATUS: "user_id",
    USER_PROFILES: "user_id",
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    #: Partitions: the user partition count (``ELIMU_PARTITIONS``) unless the topic has one.
    single_partition: bool
    #: Topic configuration beyond the broker's defaults (compaction, retention, segments).
    config: dict[str, str] = field(default_factory=dict)

    def partitions(self, user_partitions: int) -> int:
        return 1 if self.single_partition else user_partitions

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


#: Configurations beyond the broker's defaults. The risk labels are the trainer's whole history:
#: a new trainer whose checkpoint is unusable relearns them from offset 0, so they are kept for
#: good (the default 7 days would silently drop what the model learnt from). The broadcast takes
#: a ~3 MB risk checkpoint every 30 s under a handful of keys: compaction only cleans closed
#: segments, so short segments and an eager cleaner keep what a starting worker reads to the
#: latest values instead of hours of superseded checkpoints.
_CONFIGS: dict[str, dict[str, str]] = {
    **{t: {"cleanup.policy": "compact"} for t in COMPACTED},
    BROADCAST: {
        "cleanup.policy": "compact",
        "segment.ms": str(10 * 60 * 1000),
        "segment.bytes": str(64 * 1024 * 1024),
        "min.cleanable.dirty.ratio": "0.1",
    },
    RISK_LABELS: {"retention.ms": "-1"},
}

#: Every topic the engine creates (the changelogs of its tables are Faust's, named after them).
TOPOLOGY: tuple[TopicSpec, ...] = tuple(
    TopicSpec(name, name in SINGLE_PARTITION, _CONFIGS.get(name, {}))
    for name in (*INPUT_TOPICS, *OUTPUT_TOPICS, *INTERNAL_TOPICS, DEAD_LETTER)
)
