"""Applies profiles, posting copies and application statuses to per-user career state.

Pure orchestration over ``models/`` like ``streams.engagement``: the caller supplies the stores
and delivers the outcome. Matching is partition-local: the market agent sends one copy of each
new or changed posting to every partition of ``topics.JOB_FANOUT``, and the worker owning
partition ``p`` matches it against the candidates of partition ``p`` only, through an index
(``models.matching.CandidateIndex``) built from the career table the first time it is needed.
The cost of a posting grows with the candidates sharing a skill with it, not the population.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from infra import topics
from models.applications import Application, StatusChange, apply_status
from models.career import CareerState
from models.events import (
    ApplicationStatusEvent,
    InvalidEvent,
    JobPosting,
    parse_application_status,
    parse_profile,
)
from models.matching import CandidateIndex, Match, PostingIndex, match_candidate, match_posting
from streams.records import DeadLetter, Record, apply_guarded, misrouted_owner
from streams.stores import Store

#: Matches at or above this score are alerted (contract: alert at >= 60, perfect at >= 90).
ALERT_THRESHOLD = 60


class CareerStore(Protocol):
    def get(self, key: str) -> CareerState | None: ...

    def put(self, key: str, state: CareerState) -> None: ...

    def states_of(self, partitions: AbstractSet[int]) -> Iterable[CareerState]: ...


class PostingStore(Protocol):
    """Open postings as seen by one partition (a copy per partition, so each recovers alone)."""

    def put(self, partition: int, posting: JobPosting) -> None: ...

    def delete(self, partition: int, job_id: str) -> None: ...

    def items(self) -> Iterable[tuple[int, JobPosting]]: ...

    def expire(self, now_ms: int) -> int:
        """Delete the copies whose deadline passed; how many."""
        ...

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Alert:
    user_id: str
    match: Match
    channels: list[str]
    #: When the match was made, and where the job is (for the notification's wording).
    at_ms: int = 0
    location: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "channels": self.channels, **self.match.to_dict()}


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    application: Application
    change: StatusChange
    event: ApplicationStatusEvent
    #: The job's title and company when its posting is known (the notification names them).
    job_title: str | None = None
    company: str | None = None


@dataclass
class CareerOutcome:
    touched: dict[str, CareerState] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    #: Users whose stored matches changed (re-scored or new), for the serving view.
    matches_changed: set[str] = field(default_factory=set)
    #: Users whose profile was (re)written, for the profile view.
    profiles_changed: set[str] = field(default_factory=set)
    status_updates: list[StatusUpdate] = field(default_factory=list)
    #: Applications seen for the first time: each earns the ``job_apply`` action once.
    new_applications: list[ApplicationStatusEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    misrouted: list[tuple[Record, bytes, int]] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


class CareerProcessor:
    def __init__(
        self,
        partitions_for: Callable[[str], int],
        postings_store: PostingStore,
        clock_ms: Callable[[], int] = _now_ms,
        threshold: int = ALERT_THRESHOLD,
    ) -> None:
        self.partitions_for = partitions_for
        self.postings_store = postings_store
        self.clock_ms = clock_ms
        self.threshold = threshold
        self.candidates: dict[int, CandidateIndex] = {}
        self.postings = PostingIndex()
        self._postings_loaded = False

    def process(self, records: Iterable[Record], store: CareerStore) -> CareerOutcome:
        out = CareerOutcome()
        dirty: set[str] = set()
        now = self.clock_ms()
        self._load_postings()
        handlers = {
            topics.JOB_FANOUT: self._apply_posting,
            topics.APPLICATION_STATUS: self._apply_status,
            topics.USER_PROFILES: self._apply_profile,
        }
        for rec in records:
            apply = handlers[rec.topic]
            # A profile is read by the engagement processor too, from the same batch: refusing or
            # re-routing it is that processor's to report, or each would be reported twice.
            refusals = [] if rec.topic == topics.USER_PROFILES else out.dead_letters
            apply_guarded(rec, lambda r: apply(r, now, store, out, dirty), refusals)  # noqa: B023
        for user_id in dirty:
            store.put(user_id, out.touched[user_id])
        return out

    # -- state access -------------------------------------------------------------------------

    def _state(self, user_id: str, store: CareerStore, out: CareerOutcome) -> CareerState:
        state = out.touched.get(user_id)
        if state is None:
            state = store.get(user_id) or CareerState(user_id=user_id)
            out.touched[user_id] = state
        return state

    def posting(self, job_id: str) -> JobPosting | None:
        """An open posting this worker holds (its partitions' copies), by id."""
        self._load_postings()
        return self.postings.get(job_id)

    def forget_partition(self, partition: int) -> None:
        """Drop the partition's candidate index (this worker lost it): rebuilt from the table on
        the next posting if the partition comes back."""
        self.candidates.pop(partition, None)

    def forget_user(self, user_id: str) -> None:
        """Take an erased user out of the candidate indexes, so no posting matches them again."""
        for index in self.candidates.values():
            index.remove(user_id)

    def _index(self, partition: int, store: CareerStore) -> CandidateIndex:
        index = self.candidates.get(partition)
        if index is None:
            index = self.candidates[partition] = CandidateIndex()
            for state in store.states_of({partition}):
                if state.candidate is not None:
                    index.upsert(state.candidate)
        return index

    def _load_postings(self) -> None:
        if not self._postings_loaded:
            for _, posting in self.postings_store.items():
                self.postings.upsert(posting)
            self._postings_loaded = True

    def _owned(self, rec: Record, user_id: str, out: CareerOutcome) -> bool:
        owner = misrouted_owner(rec, user_id, self.partitions_for(rec.topic))
        if owner is not None:
            if rec.topic != topics.USER_PROFILES:  # re-routed once, by the engagement processor
                out.misrouted.append((rec, user_id.encode(), owner))
            return False
        return True

    # -- inputs -------------------------------------------------------------------------------

    def _apply_posting(
        self, rec: Record, now: int, store: CareerStore, out: CareerOutcome, dirty: set[str]
    ) -> None:
        posting = JobPosting.from_dict(orjson.loads(rec.value or b"{}"))
        self.postings.upsert(posting)
        self.postings_store.put(rec.partition, posting)
        for match in match_posting(posting, self._index(rec.partition, store), now, self.threshold):
            self._record(match, now, store, out, dirty)

    def _apply_profile(
        self, rec: Record, now: int, store: CareerStore, out: CareerOutcome, dirty: set[str]
    ) -> None:
        if rec.value is None:
            return  # an erased user's profile tombstone (streams/engagement.py says why)
        profile = parse_profile(rec.value, now)
        if not self._owned(rec, profile.user_id, out):
            return
        state = self._state(profile.user_id, store, out)
        candidate = state.adopt_profile(profile, now)
        dirty.add(profile.user_id)
        out.profiles_changed.add(profile.user_id)
        self._index(rec.partition, store).upsert(candidate)
        self.postings.evict(now)
        for match in match_candidate(candidate, self.postings, now, self.threshold):
            self._record(match, now, store, out, dirty)

    def _record(
        self, match: Match, now: int, store: CareerStore, out: CareerOutcome, dirty: set[str]
    ) -> None:
        state = self._state(match.user_id, store, out)
        is_new = state.record_match(match, now)
        dirty.add(match.user_id)
        out.matches_changed.add(match.user_id)
        channels = state.alert_channels()
        if is_new and channels:
            posting = self.postings.get(match.job_id)
            out.alerts.append(
                Alert(match.user_id, match, channels, now, posting.location if posting else None)
            )

    def _apply_status(
        self, rec: Record, now: int, store: CareerStore, out: CareerOutcome, dirty: set[str]
    ) -> None:
        event = parse_application_status(rec.value or b"", now)
        if not self._owned(rec, event.user_id, out):
            return
        state = self._state(event.user_id, store, out)
        previous = state.applications.get(event.application_id)
        try:
            application, change = apply_status(previous, event)
        except ValueError as exc:  # the event names another job (or user) than the application's
            raise InvalidEvent("key_mismatch", str(exc)) from exc
        if change.duplicate:
            return
        state.record_application(application)
        dirty.add(event.user_id)
        posting = self.postings.get(event.job_id)
        out.status_updates.append(
            StatusUpdate(
                application,
                change,
                event,
                posting.title if posting else None,
                posting.company if posting else None,
            )
        )
        if previous is None:
            out.new_applications.append(event)


class PostingCopies:
    """Each fan-out partition's copy of the open postings, in the ``open-postings`` table under
    ``"<partition>:<job_id>"`` and logged to that partition, so it recovers with the partition."""

    def __init__(self, store: Store[JobPosting]) -> None:
        self.store = store

    def put(self, partition: int, posting: JobPosting) -> None:
        self.store.put(f"{partition}:{posting.job_id}", posting)

    def delete(self, partition: int, job_id: str) -> None:
        self.store.delete(f"{partition}:{job_id}")

    def items(self) -> list[tuple[int, JobPosting]]:
        return [(int(k.split(":", 1)[0]), v) for k, v in self.store.items()]

    def expire(self, now_ms: int) -> int:
        """Drop postings whose deadline has passed (tombstoned in the changelog)."""
        expired = [k for k, v in self.store.items() if v.deadline_ms is not None and v.deadline_ms < now_ms]
        for key in expired:
            self.store.delete(key)
        return len(expired)

    async def flush(self) -> None:
        await self.store.flush()
