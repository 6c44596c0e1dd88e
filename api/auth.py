"""Signed bearer tokens (JWT HS256 with ``sub``, ``role`` and ``exp``; CONTRACT.md §7)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import jwt

Role = Literal["user", "admin"]
ALGORITHM = "HS256"
DEFAULT_TTL_S = 24 * 3600


class AuthError(Exception):
    """The token is missing, malformed, badly signed or expired."""


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role

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
    if role not in ("user", "admin") or not isinstance(claims["sub"], str) or not claims["sub"]:
        raise AuthError("invalid claims")
    return Principal(sub=claims["sub"], role=role)
