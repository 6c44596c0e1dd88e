"""Applies batches of behaviour and profile records to per-user state.

Pure orchestration over ``models/``: decode, validate, dedup, apply, and report what changed.
It owns no I/O: the caller supplies the state store and delivers the outcome (serving view,
pushes, dead letters). One instance serves one worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from infra import topics
from models.events import BehaviorEvent, parse_behavior, parse_profile
from models.gamification import Effects, UserState, apply_event, apply_profile
from models.rules import Rules
from streams.records import DeadLetter, Record, apply_guarded, misrouted_owner


class StateStore(Protocol):
    def get(self, key: str) -> UserState | None: ...

    def put(self, key: str, state: UserState) -> None: ...


@dataclass(frozen=True, slots=True)
class Applied:
    event: BehaviorEvent
    effects: Effects


@dataclass
class BatchOutcome:
    #: Every user whose state was read for this batch, written back or not: their serving view
    #: is re-projected, which repairs a view lost between a state write and a crash.
    touched: dict[str, UserState] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    duplicates: int = 0
    #: Users a profile record of this batch was applied to (their boards are fully re-projected).
    profiled: set[str] = field(default_factory=set)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Records found on a partition their user does not own: (record, user key, owner partition).
    misrouted: list[tuple[Record, bytes, int]] = field(default_factory=list)
    processed: int = 0
    #: perf_counter() when processing began, for the batch-duration metric.
    started: float = 0.0

    def applied_by_user(self) -> dict[str, list[Applied]]:
        by_user: dict[str, list[Applied]] = {}
        for a in self.applied:
            by_user.setdefault(a.event.user_id, []).append(a)
        return by_user


def _now_ms() -> int:
    return int(time.time() * 1000)


class EngagementProcessor:
    def __init__(
        self,
        rules: Rules,
        partitions_for: Callable[[str], int],
        dedup_window_ms: int,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.rules = rules
        #: Partition count of an input topic (the topic's real count, not a setting: the owner
        #: function must agree with the broker or re-routing would loop).
        self.partitions_for = partitions_for
        self.dedup_window_ms = dedup_window_ms
        self.clock_ms = clock_ms

    def process(self, records: Iterable[Record], store: StateStore) -> BatchOutcome:
        out = BatchOutcome()
        dirty: set[str] = set()
        now = self.clock_ms()
        for rec in records:
            out.processed += 1
            apply = self._apply_profile if rec.topic == topics.USER_PROFILES else self._apply_behavior
            apply_guarded(rec, lambda r: apply(r, now, store, out, dirty), out.dead_letters)  # noqa: B023
        for user_id in dirty:
            store.put(user_id, out.touched[user_id])
        return out

    def _state(self, user_id: str, store: StateStore, out: BatchOutcome) -> UserState:
        state = out.touched.get(user_id)
        if state is None:
            state = store.get(user_id) or UserState(user_id=user_id)
            out.touched[user_id] = state
        return state

    def _owned_here(self, rec: Record, user_id: str, out: BatchOutcome) -> bool:
        """Whether this partition owns ``user_id``; if not, the record is queued for re-routing.

        The state of a user lives on the partition Kafka's default partitioner gives its id.
        Producers with another partitioner (librdkafka's default is CRC32) or no key would
        otherwise split a user's state across partitions and workers.
        """
        owner = misrouted_owner(rec, user_id, self.partitions_for(rec.topic))
        if owner is not None:
            out.misrouted.append((rec, user_id.encode(), owner))
            return False
        return True

    def _apply_behavior(
        self, rec: Record, now: int, store: StateStore, out: BatchOutcome, dirty: set[str]
    ) -> None:
        event = parse_behavior(rec.value or b"", now)
        if not self._owned_here(rec, event.user_id, out):
            return
        state = self._state(event.user_id, store, out)
        effects = apply_event(state, event, self.rules, self.dedup_window_ms)
        if effects.duplicate:
            out.duplicates += 1
            return
        dirty.add(event.user_id)
        out.applied.append(Applied(event, effects))

    def _apply_profile(
        self, rec: Record, now: int, store: StateStore, out: BatchOutcome, dirty: set[str]
    ) -> None:
        if rec.value is None:
            # A tombstone: the compacted topic forgets an erased user's profile (the API's DELETE
            # writes it). Not a refusal; the erasure itself is a signed command (streams/privacy.py).
            return
        profile = parse_profile(rec.value, now)
        if not self._owned_here(rec, profile.user_id, out):
            return
        state = self._state(profile.user_id, store, out)
        apply_profile(state, profile)
        dirty.add(profile.user_id)
        out.profiled.add(profile.user_id)
