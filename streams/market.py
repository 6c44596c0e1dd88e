"""Job postings: validation, the market book behind the pulse, and the fan-out to matching.

``job-postings`` may have any number of partitions (producers key it by ``job_id``), but the
pulse is one aggregate over all postings. The ``postings`` agent validates each record once and
forwards it to ``topics.MARKET``, which has a single partition: one worker owns the whole market
(postings are thousands a day, not thousands a second) and its ``jobs`` table, latest posting by
``job_id``, is what makes a re-sent posting count once. For every new or changed posting that
worker sends one copy to each partition of the fan-out topic, where the owners of the users match
it (``streams.career``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from models.events import InvalidEvent, JobPosting, parse_posting
from models.market import MarketBook
from models.time_units import DAY_MS
from streams.records import DeadLetter, Record


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ForwardOutcome:
    forwards: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def validate_postings(records: Iterable[Record], now_ms: int) -> ForwardOutcome:
    """Each valid posting re-encoded canonically (validated once, here), each bad one refused."""
    out = ForwardOutcome()
    for rec in records:
        try:
            posting = parse_posting(rec.value or b"", now_ms)
            if rec.key is not None and rec.key != posting.job_id.encode():
                raise InvalidEvent("key_mismatch", f"message key {rec.key!r} is not the job_id")
        except InvalidEvent as exc:
            out.dead_letters.append(DeadLetter(rec, exc.reason, str(exc)))
            continue
        out.forwards.append((posting.job_id.encode(), orjson.dumps(posting.to_dict())))
    return out


#: How long a closed posting stays in the ``jobs`` table: past the pulse's window (today and the
#: 7 days before), so a re-send inside the window still counts once.
RETAIN_CLOSED_MS = 9 * DAY_MS


class JobStore(Protocol):
    def get(self, key: str) -> JobPosting | None: ...

    def put(self, key: str, posting: JobPosting) -> None: ...

    def delete(self, key: str) -> None: ...

    def values(self) -> Iterable[JobPosting]: ...


@dataclass
class MarketOutcome:
    #: New or changed postings, in arrival order: each goes to matching once.
    changed: list[JobPosting] = field(default_factory=list)
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


class MarketProcessor:
    """Keeps the latest posting per job and the ``MarketBook`` over them."""

    def __init__(self, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.clock_ms = clock_ms
        self.book = MarketBook()
        self.loaded = False
        #: Set when the book changed since the pulse was last published.
        self.dirty = True

    def load(self, jobs: JobStore) -> None:
        """Rebuild the book from the table (after recovery or when this worker gains the market)."""
        self.book = MarketBook()
        for posting in jobs.values():
            self.book.upsert(posting)
        self.book.evict(self.clock_ms())
        self.loaded = self.dirty = True

    def unload(self) -> None:
        """Forget the book (this worker lost the market): it is rebuilt from the table if the
        market comes back."""
        self.loaded = False

    def expire(self, jobs: JobStore, now_ms: int) -> list[str]:
        """Forget postings that are closed (deadline passed, or none) and older than the pulse's
        window: without this the table would hold every posting ever seen. A re-send of one
        after this is new again, but can no longer change the pulse (outside its window) nor
        alert anyone twice (each user's matches remember the job)."""
        cutoff = now_ms - RETAIN_CLOSED_MS
        gone = [
            p.job_id
            for p in jobs.values()
            if p.posted_at_ms < cutoff and (p.deadline_ms is None or p.deadline_ms < now_ms)
        ]
        for job_id in gone:
            jobs.delete(job_id)
        return gone

    def process(self, records: Iterable[Record], jobs: JobStore) -> MarketOutcome:
        if not self.loaded:
            self.load(jobs)
        out = MarketOutcome()
        for rec in records:
            try:
                posting = JobPosting.from_dict(orjson.loads(rec.value or b"{}"))
            except Exception as exc:  # written by our own forwarder; anything else is a bug
                out.dead_letters.append(DeadLetter(rec, "processing_error", f"{type(exc).__name__}: {exc}"))
                continue
            if jobs.get(posting.job_id) == posting:
                out.duplicates += 1
                continue
            jobs.put(posting.job_id, posting)
            self.book.upsert(posting)
            out.changed.append(posting)
            self.dirty = True
        return out
