"""What the processors see of a Kafka message, independent of the client library.

Keeping Faust's Event out of the processing code lets the same processor run under Faust in
production and on plain lists in unit tests (the arroyo pattern).
"""

from __future__ import annotations

import base64
import hashlib
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


#: A dead letter keeps this much of the refused value (and of its key): enough to see what it
#: was, never enough to make the dead letter itself too large for the broker (a 200 KB value of
#: control characters JSON-escapes to 1.2 MB). The size and SHA-256 identify the original.
EXCERPT_BYTES = 1024
KEY_EXCERPT_BYTES = 256
MESSAGE_CHARS = 512


def excerpt(data: bytes, limit: int) -> tuple[str | None, bool]:
    """(text of the first ``limit`` bytes or None when they are not UTF-8, whether cut)."""
    cut = len(data) > limit
    head = data[:limit]
    try:
        return head.decode("utf-8"), cut
    except UnicodeDecodeError as exc:
        # A multi-byte character split by the cut is dropped, not a reason to give up on text.
        if cut and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return head[: exc.start].decode("utf-8"), cut
        return None, cut


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message we refuse, with the reason: whole when small, else a bounded excerpt plus the
    original's size and hash (fetch the original by topic, partition and offset to replay it)."""

    record: Record
    reason: str
    message: str

    def kafka_key(self) -> bytes | None:
        """The dead letter's own Kafka key: the refused record's, cut to KEY_EXCERPT_BYTES."""
        key = self.record.key
        return None if key is None else key[:KEY_EXCERPT_BYTES]

    def as_dict(self) -> dict[str, Any]:
        raw = self.record.value or b""
        out: dict[str, Any] = {
            "topic": self.record.topic,
            "partition": self.record.partition,
            "offset": self.record.offset,
            "reason": self.reason,
            "message": self.message[:MESSAGE_CHARS],
            "raw_bytes": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
        }
        text, cut = excerpt(raw, EXCERPT_BYTES)
        out["raw"] = text
        if text is None:
            # Not text: keep the excerpt's bytes rather than a lossy decode.
            out["raw_b64"] = base64.b64encode(raw[:EXCERPT_BYTES]).decode("ascii")
        if cut:
            out["raw_truncated"] = True
        if self.record.key is not None:
            out["key"] = self.record.key[:KEY_EXCERPT_BYTES].decode("utf-8", "replace")
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
