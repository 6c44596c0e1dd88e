"""The career slice: profiles, application statuses and fanned-out postings to matches, alerts
and application views.

The runner's at-least-once order (streams/runner.py): alerts and the first application's action
acked by Kafka, then the state's changelog, then dead letters, re-routed records, the Redis views
and pushes, all deduplicated, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import orjson

from infra import keys, topics
from infra.channels import Outgoing
from models.applications import Application
from models.career import CareerState
from models.channels import user_channel
from models.events import format_ts
from streams import metrics
from streams.career import CareerOutcome, CareerProcessor, PostingStore
from streams.delivery import Outbound, Send, deliver_refusals, send_durably, write_until_redis_answers
from streams.records import Record, owner_partition
from streams.runner import SliceBase, Upstream
from streams.serving import Serving
from streams.stores import Store

#: The gamification action a new application earns (awarded through ``behavior-events``, with
#: an event id derived from the application id, so it counts once however often it is replayed).
APPLY_ACTION = "job_apply"


def matches_view(state: CareerState) -> str:
    return orjson.dumps(
        sorted(state.matches.values(), key=lambda m: (-m["match_score"], m["job_id"]))
    ).decode()


def profile_view(state: CareerState) -> str:
    return orjson.dumps(state.profile_view()).decode()


def applications_view(state: CareerState) -> str:
    apps = sorted(state.applications.values(), key=lambda a: -a.updated_at_ms)
    return orjson.dumps([a.public_view() for a in apps]).decode()


class CareerSlice(SliceBase):
    name = "career"
    topics = frozenset({topics.USER_PROFILES, topics.APPLICATION_STATUS, topics.JOB_FANOUT})
    agent = "engagement"

    def __init__(
        self,
        processor: CareerProcessor,
        store: Store[CareerState],
        postings_store: PostingStore,
        serving: Serving,
        send: Send,
        partitions: int,
    ) -> None:
        self.processor = processor
        self.store = store
        self.postings_store = postings_store
        self.serving = serving
        self.send = send
        self.partitions = partitions

    def process(self, records: Sequence[Record], upstream: Upstream) -> CareerOutcome | None:
        return self.processor.process(records, self.store) if records else None

    async def expire_postings(self, now_ms: int) -> None:
        """Drop postings whose deadline passed from the matching index and the open-postings
        copies (tombstoned, so a recovering worker does not load them again)."""
        self.processor.postings.evict(now_ms)
        if self.postings_store.expire(now_ms):
            await self.postings_store.flush()

    async def persist(self, outcome: CareerOutcome) -> None:
        # Alerts and the first application's action are recorded as done in the state (matches,
        # applications): in Kafka before the state is.
        durable: list[Outbound] = [
            (topics.MATCH_ALERTS, alert.user_id.encode(), orjson.dumps(alert.as_dict()), None)
            for alert in outcome.alerts
        ]
        for ev in outcome.new_applications:
            action = {
                "event_id": f"application:{ev.application_id}",
                "user_id": ev.user_id,
                "type": APPLY_ACTION,
                "ts": ev.ts_ms,
                "props": {"application_id": ev.application_id, "job_id": ev.job_id},
            }
            key = ev.user_id.encode()
            durable.append(
                (topics.BEHAVIOR_EVENTS, key, orjson.dumps(action), owner_partition(key, self.partitions))
            )
        await send_durably(self.send, durable)
        await self.store.flush()
        await self.postings_store.flush()

    async def deliver(self, records: Sequence[Record], outcome: CareerOutcome) -> None:
        await deliver_refusals(self.send, outcome.dead_letters, outcome.misrouted)
        metrics.MATCH_ALERTS.inc(len(outcome.alerts))
        await write_until_redis_answers(lambda: self._write_serving(outcome))
        for rec in records:
            metrics.EVENTS_PROCESSED.labels(self.agent, rec.topic).inc()

    async def _write_serving(self, outcome: CareerOutcome) -> None:
        sets: list[tuple[str, str]] = []
        hsets: list[tuple[str, str, str]] = []
        messages: list[Outgoing] = []
        for user_id in outcome.matches_changed:
            sets.append((keys.user_matches(user_id), matches_view(outcome.touched[user_id])))
        for user_id in outcome.profiles_changed:
            sets.append((keys.user_profile(user_id), profile_view(outcome.touched[user_id])))
        changed_apps = {u.application.user_id for u in outcome.status_updates}
        for user_id in changed_apps:
            sets.append((keys.user_applications(user_id), applications_view(outcome.touched[user_id])))
        for alert in outcome.alerts:
            messages.append(
                Outgoing(
                    user_channel(alert.user_id), "match_alert", alert.as_dict(), f"match:{alert.match.job_id}"
                )
            )
        for update in outcome.status_updates:
            app = update.application
            hsets.append((keys.APPLICATION_FACTS, app.application_id, self._facts_json(app)))
            if update.change.changed:
                data = {
                    "application_id": app.application_id,
                    "job_id": app.job_id,
                    "status": app.status,
                    "previous_status": update.change.previous_status,
                    "ts": format_ts(update.event.ts_ms),
                    "note": update.event.note,
                }
                messages.append(
                    Outgoing(user_channel(app.user_id), "application_status", data, update.event.event_id)
                )
        await self.serving.write_documents(sets, hsets, messages)

    def _facts_json(self, app: Application) -> str:
        """The analytics facts of ``app``, joined with its posting's industry and source."""
        posting = self.processor.postings.get(app.job_id)
        facts = app.facts(posting.industry if posting else None, posting.source if posting else None)
        return orjson.dumps(dataclasses.asdict(facts)).decode()

    async def rebuild(self, partitions: AbstractSet[int]) -> int:
        states = self.store.states_of(partitions)
        await self.project(states)
        return len(states)

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        # The candidate index of a fan-out partition is rebuilt from the table if it comes back.
        for topic, partition in partitions:
            if topic == topics.JOB_FANOUT:
                self.processor.forget_partition(partition)

    async def project(self, states: Sequence[CareerState]) -> None:
        """Rewrite the career views of ``states`` (a rebuild after Redis was lost)."""
        sets: list[tuple[str, str]] = []
        hsets: list[tuple[str, str, str]] = []
        for state in states:
            if state.matches:
                sets.append((keys.user_matches(state.user_id), matches_view(state)))
            if state.profile_at_ms is not None or state.candidate is not None:
                sets.append((keys.user_profile(state.user_id), profile_view(state)))
            if state.applications:
                sets.append((keys.user_applications(state.user_id), applications_view(state)))
                for app in state.applications.values():
                    hsets.append((keys.APPLICATION_FACTS, app.application_id, self._facts_json(app)))
            if len(sets) + len(hsets) >= 2000:
                await self.serving.write_documents(sets, hsets, [])
                sets, hsets = [], []
        await self.serving.write_documents(sets, hsets, [])
