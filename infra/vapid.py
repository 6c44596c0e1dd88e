"""The VAPID key pair (RFC 8292) that signs our Web Push requests: ``ELIMU_VAPID_PRIVATE_KEY``
(a PEM), else one generated once and kept in the data dir, so the API (which hands browsers
the public key to subscribe with) and every delivery process use the same pair."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEY_FILE = "vapid_private.pem"


def private_pem(configured: str | None, data_dir: Path) -> bytes:
    if configured:
        return configured.replace("\\n", "\n").encode()
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # A name no other process (container PIDs repeat) can have, created 0600 from the start.
        tmp = path.with_suffix(f".{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # two processes racing agree on one key: the first link wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def public_key_b64(pem: bytes) -> str:
    """The public key as browsers take it (``applicationServerKey``): base64url of the
    uncompressed point, no padding."""
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
