"""Drop-off risk and nudges per user partition: fold events in, resolve labels, score, sweep
quiet users and send what is due (models/nudges.py).

Pure orchestration over `models.risk_state` and `models.nudges` (no I/O): the pipeline
(streams/risk_pipeline.py) delivers what an outcome holds. Scores come from the latest model the
trainer broadcast (`adopt_model`); until one arrives, a fresh `RiskModel` ranks by the recency
prior.

Stream time. Each partition's watermark is the newest event time applied from it; a user's sweep,
label deadlines and nudges follow their own partition's, never the wall clock nor another
partition's (partitions are consumed unevenly), so a replayed history resolves the same labels.
(A partition with no traffic has no clock of its own; its users are swept once traffic reaches
it, which is when their scores can change anyway.)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from models.campaigns.records import Campaign, UserFacts
from models.career_notices import Notice
from models.events import BehaviorEvent
from models.interventions import Notification, UserContext, recommend_for
from models.interventions.templates import BUILTIN_LIBRARY, TemplateLibrary
from models.nudges import Celebration, NudgeOutcome, VariantCounts, celebrate, next_look, notify, plan
from models.risk import PendingLabel, Resolution, RiskModel, RiskScore
from models.risk_state import (
    AT_RISK_FROM,
    RiskSettings,
    RiskState,
    expire,
    observe_activity,
    remember_saved_job,
    rescore,
    score_where_it_happens,
    worth_publishing,
)
from models.risk_workflow import channel_of, republish_for_row, row_fields
from streams.records import DeadLetter

#: Users looked at per sweep call (one a second) at most. A look costs ~150 us; the budget caps
#: the sweep at a few % of a core, so a replay (stream time racing ahead, every user due every
#: tick) cannot starve the event path: measured, a 2,000 budget took a third of a worker's time in
#: `elimu bench throughput`. 300 a second is still 1M looks an hour, enough for 1M users at the
#: default hourly re-score; users looked at late are looked at at the then-current stream time.
SWEEP_BUDGET = 300

#: (user_id, stream time) -> the user's current streak, or None when unknown.
StreakOf = Callable[[str, int], int | None]
#: Behaviour events that are notification feedback, and the funnel stage each records.
TRACKING_EVENTS = {
    "notification_opened": "opened",
    "notification_clicked": "clicked",
    "notification_converted": "converted",
}


class RiskStore(Protocol):
    def get(self, key: str) -> RiskState | None: ...

    def put(self, key: str, state: RiskState) -> None: ...


class UserLookup(Protocol):
    """What the nudges need to know about a user beyond their risk state (their profile,
    timezone and streak live in other tables of the same partition)."""

    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]: ...


@dataclass
class RiskOutcome:
    resolutions: list[Resolution] = field(default_factory=list)
    #: Scores worth publishing (changed enough), with their published document.
    published: list[tuple[RiskScore, dict[str, Any]]] = field(default_factory=list)
    #: Every score computed, published or not.
    scores: list[RiskScore] = field(default_factory=list)
    #: Published documents for the `admin:at-risk` channel.
    at_risk: list[dict[str, Any]] = field(default_factory=list)
    touched: dict[str, RiskState] = field(default_factory=dict)
    #: Notifications delivered now (for `notifications`, the inbox view and pushes).
    delivered: list[Notification] = field(default_factory=list)
    #: Messages for the interventions analytics (`elimu-intervention-outcomes`).
    feedback: list[dict[str, Any]] = field(default_factory=list)
    #: Users whose notification inbox changed (its view is rewritten).
    inbox_changed: set[str] = field(default_factory=set)
    #: Documents rewritten for their row fields alone (an intervention delivered): the Redis view
    #: only; the score they carry was published already.
    refreshed: list[dict[str, Any]] = field(default_factory=list)
    #: Answers to recalculation commands (command id, answer), written once the views are.
    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Recalculation commands refused (malformed), for `dead-letter`.
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.touched or self.answers or self.dead_letters)


def risk_document(score: RiskScore, recommended: list[str], model_version: int) -> dict[str, Any]:
    """The serving view of a score: the contract's at-risk fields first, then the detail."""
    return {
        **score.to_dict(),
        "recommended_interventions": recommended,
        "model_version": model_version,
        "scored_at_ms": score.scored_at_ms,
    }


def stage_feedback(n: Notification, stage: str) -> dict[str, Any]:
    """One funnel step of one notification, for the analytics (its id makes it countable once);
    its source, a campaign notification's key (never a user id, unlike other keys) and its
    delivery time let a campaign's own funnel and run log count it."""
    return {
        "id": f"{n.id}:{stage}",
        "kind": "stage",
        "stage": stage,
        "type": n.type,
        "channel": n.primary_channel,
        "template": n.template,
        "variant": n.variant,
        "source": n.source,
        "key": n.key if n.source.startswith("campaign:") else None,
        "at_ms": n.deliver_at_ms,
    }


class CampaignSource(Protocol):
    """Where the active campaigns and the interventions' variant counts come from (the broadcast
    topic's view, streams/broadcast.py)."""

    def active_campaigns(self) -> list[Campaign]: ...

    def stats_for(self, template: str) -> Any: ...

    def template_library(self) -> TemplateLibrary: ...


class RiskProcessor:
    def __init__(
        self,
        settings: RiskSettings,
        streak_of: StreakOf,
        users: UserLookup,
        campaigns: Callable[[], Sequence[Campaign]] = tuple,
        variant_counts: VariantCounts = lambda template: {},
        partition_of: Callable[[str], int] = lambda user_id: 0,
    ) -> None:
        self.settings = settings
        self.streak_of = streak_of
        self.users = users
        self.campaigns = campaigns
        self.variant_counts = variant_counts
        #: The templates decide picks from: built-in, and the admins' once the broadcast is read.
        self.templates: Callable[[], TemplateLibrary] = lambda: BUILTIN_LIBRARY
        self.model = RiskModel(settings.horizon_ms, grace_ms=settings.grace_ms)
        self.model_version = 0
        #: The partition a user's events and state live on (streams.records.owner_partition).
        self.partition_of = partition_of
        #: Stream time per partition: the newest event time applied from it. A user's labels
        #: expire by their own partition's time, never another's: partitions are consumed
        #: unevenly (one can be drained days of event time ahead of another in a replay), and a
        #: worker-wide clock expired a steady user's label as "dropped" while that user's next
        #: events still waited unread on a lagging partition.
        self.watermarks: dict[int, int] = {}
        self._due: list[tuple[int, str]] = []
        self._next: dict[str, int] = {}
        #: Users a recalculation queued (`queue_recalculation`): their next look publishes their
        #: document even when the score did not move. Memory only: a restart forgets it, and the
        #: users are then looked at on their usual schedule (docs/risk.md).
        self._forced: set[str] = set()

    def follow(self, source: CampaignSource) -> None:
        """Take campaigns and variant counts from ``source`` from now on (the worker wires the
        broadcast view here once both exist: each needs the other)."""
        self.campaigns = source.active_campaigns
        self.variant_counts = source.stats_for
        self.templates = source.template_library

    def adopt_model(self, model: RiskModel) -> None:
        """Swap in a broadcast model (whole object: a score never mixes two versions)."""
        self.model = model
        self.model_version = model.n_learned

    # --- events ---------------------------------------------------------------------------

    def on_events(
        self,
        events: Iterable[tuple[BehaviorEvent, int]],
        store: RiskStore,
        celebrations: Mapping[str, Sequence[Celebration]] | None = None,
        notices: Mapping[str, Sequence[Notice]] | None = None,
    ) -> RiskOutcome:
        """Fold applied (deduplicated) events and their XP in, resolve the labels they prove
        retained, record notification feedback, and re-schedule the users (those whose activity
        is worth a score are due at once: `models.risk_state.next_due`)."""
        out = RiskOutcome()
        for event, xp in events:
            state = self._state(event.user_id, store, out)
            out.resolutions.extend(observe_activity(state, event, xp, self.settings))
            remember_saved_job(state, event)
            if event.type in TRACKING_EVENTS:
                self._track(state, event, out)
            self._advance(self.partition_of(event.user_id), event.ts_ms)
        # Only activity that takes a label snapshot, or of a user never scored or at risk, is
        # scored here; other users are due to the sweep at once (`next_due`), which looks at them
        # in paced slices. Scoring every user on every batch cut `elimu bench throughput` (a
        # replay of 10 days) from 5.6k to 2.3k events/s.
        for state in out.touched.values():
            last = state.activity.last_event_ms
            if last is not None and score_where_it_happens(state, self.settings):
                self._score(state, last, out)
        for user_id, achieved in (celebrations or {}).items():
            celebrated = out.touched.get(user_id)
            if celebrated is not None and celebrated.activity.last_event_ms is not None:
                now = celebrated.activity.last_event_ms
                ctx, _ = self.users.context(celebrated, now)
                self._deliver(
                    celebrated,
                    celebrate(celebrated, ctx, achieved, now, self.variant_counts, self.templates()),
                    out,
                )
        for user_id, news in (notices or {}).items():
            state = self._state(user_id, store, out)
            for n in news:
                if n.type == "application_update":  # event time; match news is stamped by the clock
                    self._advance(self.partition_of(user_id), n.at_ms)
            ctx, _ = self.users.context(state, max(n.at_ms for n in news))
            self._deliver(state, notify(state, ctx, news, self.variant_counts, self.templates()), out)
        self._store(out, store)
        return out

    def _track(self, state: RiskState, event: BehaviorEvent, out: RiskOutcome) -> None:
        notification_id = event.props.get("notification_id")
        if not isinstance(notification_id, str):
            return
        book = state.notifications
        stages = book.track(notification_id, TRACKING_EVENTS[event.type], event.ts_ms)
        n = book.find(notification_id)
        if n is None or not stages:
            return
        if "opened" in stages:
            n.read = True
            out.inbox_changed.add(state.user_id)
        out.feedback.extend(stage_feedback(n, stage) for stage in stages)

    # --- the sweep --------------------------------------------------------------------------

    def schedule(self, states: Iterable[RiskState]) -> None:
        """Put users (back) on the sweep's agenda: on assignment, after activity and every look,
        and everyone when the campaigns change."""
        campaigns = self.campaigns()
        for state in states:
            now = self.watermarks.get(self.partition_of(state.user_id), 0)
            ctx, _ = self.users.context(state, now)
            due = next_look(state, ctx, self.settings, campaigns)
            if due is None:
                self._next.pop(state.user_id, None)
            elif self._next.get(state.user_id) != due:
                self._next[state.user_id] = due
                heapq.heappush(self._due, (due, state.user_id))

    @property
    def watermark_ms(self) -> int | None:
        """The newest stream time of any partition (what the agenda is scanned up to)."""
        return max(self.watermarks.values(), default=None)

    def _advance(self, partition: int, ts_ms: int) -> None:
        if ts_ms > self.watermarks.get(partition, ts_ms - 1):
            self.watermarks[partition] = ts_ms

    def stream_time(self, partitions: Iterable[int]) -> int:
        """The newest event time seen on any of ``partitions`` (0 before any)."""
        return max((self.watermarks.get(p, 0) for p in partitions), default=0)

    def adopt_watermark(self, states: Iterable[RiskState]) -> None:
        """Start each partition's stream time at the newest event recovered with its state
        (after a restart the sweep need not wait for new traffic to catch up on labels that fell
        due meanwhile)."""
        for state in states:
            last = state.activity.last_event_ms
            if last is not None:
                self._advance(self.partition_of(state.user_id), last)

    def forget(self, owned: Callable[[str], bool]) -> None:
        self._due = [entry for entry in self._due if owned(entry[1])]
        heapq.heapify(self._due)
        self._next = {user: due for user, due in self._next.items() if owned(user)}
        self._forced = {user for user in self._forced if owned(user)}

    def sweep(
        self, store: RiskStore, owned: Callable[[str], bool], budget: int = SWEEP_BUDGET
    ) -> RiskOutcome:
        """Look at the users due by the watermark (at most `budget`): resolve expired labels,
        re-score, and send what is due (risk nudges, streak warnings, campaigns, deferred)."""
        out = RiskOutcome()
        newest = self.watermark_ms
        if newest is None:
            return out
        campaigns = self.campaigns()
        not_yet: list[tuple[int, str]] = []  # due by another partition's time, not their own
        while self._due and self._due[0][0] <= newest and len(out.touched) < budget:
            due, user_id = heapq.heappop(self._due)
            if self._next.get(user_id) != due or user_id in out.touched:
                continue  # a stale entry: the user was looked at or re-scheduled since
            now = self.watermarks.get(self.partition_of(user_id))
            if now is None or due > now:
                not_yet.append((due, user_id))
                continue
            del self._next[user_id]
            state = store.get(user_id) if owned(user_id) else None
            if state is None:
                continue
            out.touched[user_id] = state
            out.resolutions.extend(expire(state, now, self.settings))
            self._look(state, now, campaigns, out, force=user_id in self._forced)
            self._forced.discard(user_id)
        for entry in not_yet:
            heapq.heappush(self._due, entry)
        self._store(out, store)
        return out

    def _look(
        self, state: RiskState, now: int, campaigns: Sequence[Campaign], out: RiskOutcome, force: bool = False
    ) -> RiskScore:
        """One look at a user at stream time ``now``: expire labels, score, send what is due."""
        out.touched[state.user_id] = state
        out.resolutions.extend(expire(state, now, self.settings))
        ctx, facts = self.users.context(state, now)  # once per look: scoring and nudges share it
        score = self._score(state, now, out, ctx, force=force)
        self._nudge(state, ctx, replace(facts, risk_score=score.score), score, now, campaigns, out)
        return score

    # --- recalculation (commands from the API: docs/risk.md "Recalculate") -------------------

    def recalculate(self, user_id: str, store: RiskStore, out: RiskOutcome) -> dict[str, Any]:
        """Look at one user now, as the sweep would, and publish their document whatever the
        score did. At the user's own partition's stream time, so a recalculation computes what
        the sweep would, and a redelivered command computes it again (same score at the same
        stream time; nudges pass the gate, whose idempotency keys and throttles stop a second
        send). The answer says what was published, or why nothing was."""
        state = out.touched.get(user_id) or store.get(user_id)
        if state is None:
            return {"ok": False, "code": "unknown_user", "message": f"no risk state for {user_id[:128]!r}"}
        partition = self.partition_of(user_id)
        now = max(self.watermarks.get(partition, 0), state.activity.last_event_ms or 0)
        if now <= 0:
            return {"ok": False, "code": "no_activity", "message": "the user has no activity to score"}
        self._advance(partition, now)
        score = self._look(state, now, self.campaigns(), out, force=True)
        store.put(user_id, state)
        self.schedule([state])
        document = state.last or {}
        return {
            "ok": True,
            "user_id": user_id,
            "score": score.score,
            "level": score.level,
            "updated_at": document.get("updated_at"),
            "as_of_ms": now,
        }

    def queue_recalculation(self, states: Iterable[RiskState]) -> int:
        """Put every user of ``states`` on the sweep's agenda now (each partition's stream time),
        their next look publishing whatever the score does. The sweep looks at them within its
        budget (SWEEP_BUDGET a second): one command never stalls the event path. Queuing twice
        (a redelivery) queues nothing more: a user has one place on the agenda."""
        n = 0
        for state in states:
            last = state.activity.last_event_ms
            if last is None:
                continue  # nothing to score yet
            # The partition's stream time; before the sweep adopted it (a partition just
            # assigned), the user's own newest event, which the sweep reaches at once.
            due = self.watermarks.get(self.partition_of(state.user_id)) or last
            n += 1
            self._forced.add(state.user_id)
            if self._next.get(state.user_id) != due:
                self._next[state.user_id] = due
                heapq.heappush(self._due, (due, state.user_id))
        return n

    def _nudge(
        self,
        state: RiskState,
        ctx: UserContext,
        facts: UserFacts,
        score: RiskScore,
        now: int,
        campaigns: Sequence[Campaign],
        out: RiskOutcome,
    ) -> None:
        nudges = plan(
            state,
            ctx,
            score,
            now,
            campaigns=campaigns,
            facts=facts,
            variant_counts=self.variant_counts,
            templates=self.templates(),
        )
        self._deliver(state, nudges, out)
        for campaign_id, key, outcome in nudges.campaign_outcomes:
            out.feedback.append(
                {
                    "id": f"campaign:{campaign_id}:{state.user_id}:{key}:{outcome}",
                    "kind": "campaign",
                    "campaign_id": campaign_id,
                    "occurrence": key,
                    "outcome": outcome,
                    "at_ms": now,
                }
            )

    def _deliver(self, state: RiskState, nudges: NudgeOutcome, out: RiskOutcome) -> None:
        received = False
        for n in nudges.delivered:
            out.delivered.append(n)
            out.feedback.append(stage_feedback(n, "sent"))
            if "IN_APP" in n.channels:
                out.inbox_changed.add(state.user_id)
            received |= state.received.record(n.deliver_at_ms, n.type, channel_of(n.channels))
        if received and state.last is not None:
            # The row shows the intervention at once, not at the next publication of the score.
            # In place: a document published in this same outcome carries it too.
            newest = state.received.last
            as_of = max(int(state.last.get("scored_at_ms", 0)), newest.at_ms if newest else 0)
            fields = row_fields(state.last.get("display_name"), state.received, state.weekly, as_of)
            state.last.update(
                last_intervention=fields["last_intervention"], interventions=fields["interventions"]
            )
            if not any(doc is state.last for _, doc in out.published):
                out.refreshed = [d for d in out.refreshed if d.get("user_id") != state.user_id]
                out.refreshed.append(state.last)

    @property
    def due_count(self) -> int:
        return len(self._next)

    # --- shared ---------------------------------------------------------------------------

    def _state(self, user_id: str, store: RiskStore, out: RiskOutcome) -> RiskState:
        state = out.touched.get(user_id)
        if state is None:
            state = store.get(user_id) or RiskState(user_id)
            out.touched[user_id] = state
        return state

    def _score(
        self,
        state: RiskState,
        now_ms: int,
        out: RiskOutcome,
        ctx: UserContext | None = None,
        force: bool = False,
    ) -> RiskScore:
        streak = ctx.streak if ctx is not None else self.streak_of(state.user_id, now_ms)
        if ctx is None:
            ctx, _ = self.users.context(state, now_ms)
        score = rescore(state, self.model, now_ms, streak, self.settings)
        out.scores.append(score)
        previous = state.last
        fields = row_fields(ctx.display_name, state.received, state.weekly, now_ms)
        if force or worth_publishing(previous, score) or republish_for_row(previous, fields):
            document = {**risk_document(score, recommend_for(score, ctx), self.model_version), **fields}
            out.refreshed = [d for d in out.refreshed if d.get("user_id") != state.user_id]
            state.last = document
            out.published.append((score, document))
            was = float(previous.get("score", 0.0)) if previous else 0.0
            # Medium and up go on `admin:at-risk`, and so does a score falling below it, so a
            # list on screen drops a student who recovered.
            if max(score.score, was) >= AT_RISK_FROM:
                out.at_risk.append(document)
        return score

    def _store(self, out: RiskOutcome, store: RiskStore) -> None:
        for user_id, state in out.touched.items():
            store.put(user_id, state)
        self.schedule(out.touched.values())


def resolution_message(resolution: Resolution) -> dict[str, Any]:
    """A resolved label for the trainer (`elimu-risk-labels`)."""
    return {
        **resolution.pending.to_dict(),
        "label": resolution.label,
        "resolved_at_ms": resolution.resolved_at_ms,
    }


def parse_resolution(data: dict[str, Any]) -> Resolution:
    label = int(data["label"])
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label}")
    return Resolution(PendingLabel.from_dict(data), label, int(data["resolved_at_ms"]))
