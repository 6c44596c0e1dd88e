"""Every id the API accepts has a byte budget and is printable (``models.events.check_id``).

Ids end up in Redis keys, Kafka keys, channel names, per-user state and logs, so one rule holds
at every entry: 1..128 UTF-8 bytes, no control or other non-printable characters. Path
parameters are checked for every route at once by ``check_path_params`` (installed as an app-wide
dependency); query parameters and body fields use the types below.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, StrictStr
from starlette.requests import HTTPConnection

from api.errors import ApiError
from infra.tracking import MAX_TOKEN_LEN
from models.events import InvalidEvent, check_id


def _valid_id(value: str) -> str:
    try:
        return check_id(value, "id")
    except InvalidEvent as exc:
        # pydantic turns a ValueError into a 422 whose location names the field.
        raise ValueError(exc.message) from exc


#: A body field or parameter that is an id.
Id = Annotated[str, AfterValidator(_valid_id)]
#: An id in a strict request body (a JSON string, never coerced from another type).
StrictId = Annotated[StrictStr, AfterValidator(_valid_id)]


def _valid_name(value: str) -> str:
    return value if value == "" else _valid_id(value)


#: An optional ``?name=`` query parameter that is an id (a user id).
OptionalIdQuery = Annotated[Id | None, Query()]
#: An optional filter that becomes part of a key (a location): an id, or empty for "any".
OptionalNameQuery = Annotated[Annotated[str, AfterValidator(_valid_name)] | None, Query()]


#: Path parameters that are signed links (api/routes/tracking.py), not ids: longer than an id,
#: printable ASCII, and verified by their route before anything is read from them.
TOKEN_PARAMS = frozenset({"token"})


def check_path_params(conn: HTTPConnection) -> None:
    """Refuse any path parameter that is not a valid id (or a token), for every route (422)."""
    for name, value in conn.path_params.items():
        if not isinstance(value, str):
            continue
        try:
            if name in TOKEN_PARAMS:
                if len(value) > MAX_TOKEN_LEN or not value.isascii() or not value.isprintable():
                    raise InvalidEvent("bad_id", f"{name} is not a link token")
                continue
            check_id(value, name)
        except InvalidEvent as exc:
            raise ApiError(
                422,
                "validation_error",
                f"path.{name}: {exc.message}",
                extra={"details": [{"loc": f"path.{name}", "message": exc.message}]},
            ) from exc
