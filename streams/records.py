"""What the processors see of a Kafka message, independent of the client library.

Keeping Faust's Event out of the processing code lets the same processor run under Faust in
production and on plain lists in unit tests (the arroyo pattern).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2

from infra.signing import RecordSigner
from models.events import InvalidEvent


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    #: Kafka record headers; internal topics carry the engine's signature here.
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message we refuse, with the reason, kept whole so an operator can replay it."""

    record: Record
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        raw = self.record.value or b""
        out: dict[str, Any] = {
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "reason": self.reason,
            "message": self.message,
        }
        try:
            out["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Not text: keep every byte rather than a lossy decode.
            out["raw"] = None
            out["raw_b64"] = base64.b64encode(raw).decode("ascii")
        if self.record.key is not None:
            out["key"] = self.record.key.decode("utf-8", "replace")
        return out


@lru_cache(maxsize=1 << 18)
def owner_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``.

    State is partitioned by this function; a message some other partitioner placed
    elsewhere is re-routed to its owner partition rather than processed on the wrong one.
    """
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def apply_guarded(rec: Record, apply: Callable[[Record], object], dead_letters: list[DeadLetter]) -> None:
    """``apply(rec)``; a refusal (``InvalidEvent``) or a bug becomes a dead letter for ``rec``:
    one bad record never stops a batch, and is kept whole with the reason."""
    try:
        apply(rec)
    except InvalidEvent as exc:
        dead_letters.append(DeadLetter(rec, exc.reason, str(exc)))
    except Exception as exc:
        dead_letters.append(DeadLetter(rec, "processing_error", f"{type(exc).__name__}: {exc}"))


def misrouted_owner(rec: Record, owner_id: str, partitions: int) -> int | None:
    """The partition that owns ``owner_id`` when it is not ``rec``'s, else None.

    Raises ``InvalidEvent("key_mismatch")`` for a keyed record whose key is not the owner id:
    such a record would be processed where its key says but its state lives elsewhere.
    """
    key = owner_id.encode()
    if rec.key is not None and rec.key != key:
        raise InvalidEvent("key_mismatch", f"message key {rec.key!r} is not the id {owner_id!r}")
    owner = owner_partition(key, partitions)
    return owner if owner != rec.partition else None


def split_forged(records: list[Record], signer: RecordSigner) -> tuple[list[Record], list[DeadLetter]]:
    """The records that may be processed, and a dead letter for each record on an internal topic
    without the engine's valid signature (infra/signing.py): a forged command, referral or model
    never reaches a processor."""
    trusted: list[Record] = []
    forged: list[DeadLetter] = []
    for rec in records:
        if signer.verify(rec.topic, rec.key, rec.value, rec.headers):
            trusted.append(rec)
        else:
            forged.append(
                DeadLetter(rec, "bad_signature", f"{rec.topic} accepts only records the engine signed")
            )
    return trusted, forged
