"""FastAPI dependencies shared by the routers: the app state and the signed-in principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import AuthError, Principal, verify_token
from api.errors import ApiError
from api.state import AppState, app_state

# auto_error=False: a missing header must produce our 401 shape, not FastAPI's own error.
_bearer = HTTPBearer(auto_error=False, description="JWT HS256 issued by `elimu token`")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_state(request: Request) -> AppState:
    return app_state(request)


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "missing bearer token", headers=_CHALLENGE)
    try:
        return verify_token(app_state(request).secret, credentials.credentials)
    except AuthError as exc:
        raise ApiError(401, "unauthorized", f"invalid token: {exc}", headers=_CHALLENGE) from exc


def require_user_access(principal: Principal, user_id: str) -> None:
    """A user reads only their own resources; admins read all (CONTRACT.md §7)."""
    if not principal.may_read_user(user_id):
        raise ApiError(403, "forbidden", "you may only access your own resources")


def require_admin(principal: Principal, what: str = "this route") -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", f"{what} is for admins only")


StateDep = Annotated[AppState, Depends(get_state)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
