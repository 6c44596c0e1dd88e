"""Fixed-size digests of ids, for the memories that make per-user state idempotent.

An id may be 128 bytes (``models.events.check_id``), so a state remembering a few hundred raw ids
grows by tens of kilobytes, all of it chosen by the client. A 16-byte BLAKE2b digest is the same
size whatever the id, so a memory's size is its count times a constant (22 characters of
base64url, 25 bytes of JSON with quotes and comma). Collisions are out of reach (about 2^-64 for
2^32 ids remembered), and one would only make a new command look like a retry of another.
"""

from __future__ import annotations

import base64
import hashlib

DIGEST_BYTES = 16
#: Characters of ``id_digest``'s result (base64url of DIGEST_BYTES, unpadded).
DIGEST_CHARS = 22


def id_digest(value: str) -> str:
    """The 22-character digest under which ``value`` is remembered."""
    # surrogatepass: a lone surrogate cannot reach state (check_id refuses it), but a digest must
    # never be the thing that raises.
    raw = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
