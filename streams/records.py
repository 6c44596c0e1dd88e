"""What the processors see of a Kafka message, independent of the client library.

Keeping Faust's Event out of the processing code lets the same processor run under Faust in
production and on plain lists in unit tests (the arroyo pattern).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


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
