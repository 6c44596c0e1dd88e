"""Why a campaign body or status change is refused: `InvalidCampaign`, naming the culprit field
(`CampaignConflict` when the campaign's state, not the body, refuses it), and the small helpers
that word and raise it (shared by parsing and status changes)."""

from __future__ import annotations

from typing import Any, NoReturn


class InvalidCampaign(ValueError):
    """A campaign body (or status change) we refuse; `field` is the dotted path of the culprit
    ("schedule.local_time"), so the API can point at it, and the message names it too."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the two-argument constructor working through pickle, like InvalidEvent.
        return (type(self), (self.field, self.message))


class CampaignConflict(InvalidCampaign):
    """A change the campaign's current state refuses (a status it cannot go to from the one it
    has, a send id already used for another send): the API's 409, where a bad body is a 422."""


def fail(path: str, message: str) -> NoReturn:
    raise InvalidCampaign(path, f"{path} {message}")


def choice(value: object, options: tuple[str, ...], path: str) -> str:
    if value is None:
        fail(path, f"is required; one of {', '.join(options)}")
    if not isinstance(value, str) or value not in options:
        fail(path, f"must be one of {', '.join(options)}, got {show(value)}")
    return value


def show(value: object) -> str:
    return repr(value)[:64]
