"""Signatures on the engine's internal topics: a record only the engine could have written.

Outside producers may write the public input topics (CONTRACT.md §4); everything else on Kafka
(API commands, referral messages, the job fan-out, the market feed, risk labels, intervention
outcomes, the broadcast of models and campaigns) is written by the engine itself and steers
money, models and nudges. Anyone who can reach the broker could otherwise forge a `grant` or a
campaign. Each such record carries an HMAC-SHA256 in the ``elimu-sig`` header over its topic,
key and value, with a key derived from ``ELIMU_SECRET``; a reader refuses (dead-letters) a
record without a valid one. Binding the topic and key means a signed record cannot be replayed
onto another topic or for another user.

Not covered: the Faust changelogs (Faust reads them back itself during recovery; ACLs keep
outsiders off them, see docs/security.md) and replays of a record that was legitimately signed
(every internal consumer is idempotent by the record's id).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from infra.topics import SIGNED_TOPICS

SIGNATURE_HEADER = "elimu-sig"
#: Key derivation label: a signing key distinct from the token key derived from the same secret,
#: so a leaked signature can never be presented as a token or the reverse.
_LABEL = b"elimu-pulse/internal-topics/v1"

Headers = Iterable[tuple[str, bytes]]


class RecordSigner:
    """Signs and verifies records of ``topics`` (the engine's internal topics unless a test
    names others); records of any other topic pass unsigned."""

    def __init__(self, secret: str, topics: frozenset[str] = SIGNED_TOPICS) -> None:
        self._key = hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()
        self.topics = topics

    def signature(self, topic: str, key: bytes | None, value: bytes | None) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        # Length-prefixed fields: ("ab", "c") and ("a", "bc") must not sign alike; a tombstone
        # (None) and an empty value are different records.
        for part in (topic.encode("utf-8"), key, value):
            if part is None:
                mac.update(b"\xff\xff\xff\xff")
            else:
                mac.update(len(part).to_bytes(4, "big"))
                mac.update(part)
        return mac.digest()

    def headers(self, topic: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """The headers to produce an internal record with (none for a public topic)."""
        if topic not in self.topics:
            return []
        return [(SIGNATURE_HEADER, self.signature(topic, key, value))]

    def verify(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None) -> bool:
        """Whether the record is trusted: a public topic's always is, an internal one only with
        a valid signature (constant-time comparison)."""
        if topic not in self.topics:
            return True
        expected = self.signature(topic, key, value)
        return any(
            name == SIGNATURE_HEADER and isinstance(sig, bytes) and hmac.compare_digest(sig, expected)
            for name, sig in headers or ()
        )
