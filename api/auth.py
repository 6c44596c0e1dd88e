"""Signed bearer tokens (JWT HS256 with ``sub``, ``role`` and ``exp``; CONTRACT.md §7).

``sub`` must be an id like any other (``models.events.check_id``): it becomes Redis keys, Kafka
keys and channel names. ``exp`` is kept on the principal because a websocket outlives the moment
its token is checked: the connection closes when ``expires_at`` passes (api/ws.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import jwt

from models.events import InvalidEvent, check_id

Role = Literal["user", "admin"]
ALGORITHM = "HS256"
DEFAULT_TTL_S = 24 * 3600


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role
    #: The token's ``exp`` (epoch seconds).
    expires_at: float = math.inf

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_read_user(self, user_id: str) -> bool:
        return self.is_admin or self.sub == user_id


def issue_token(secret: str, sub: str, role: Role = "user", ttl_s: int = DEFAULT_TTL_S) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_s}, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]})
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from exc
    role = claims.get("role", "user")
    sub, exp = claims["sub"], claims["exp"]
    if role not in ("user", "admin") or not isinstance(sub, str) or not sub:
        raise AuthError("invalid claims")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthError("invalid claims: exp")
    try:
        check_id(sub, "sub")
    except InvalidEvent as exc:
        raise AuthError(f"invalid claims: {exc.message}") from exc
    return Principal(sub=sub, role=role, expires_at=float(exp))
