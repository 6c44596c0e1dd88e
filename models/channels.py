"""Names of the websocket channel families that carry an id (one home for their spelling)."""

from __future__ import annotations

#: A user's own channel is ``user:<user_id>``.
USER_CHANNEL_PREFIX = "user:"


def user_channel(user_id: str) -> str:
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def channel_user(channel: str) -> str | None:
    """The user whose channel this is, or None for any other channel."""
    if channel.startswith(USER_CHANNEL_PREFIX):
        return channel[len(USER_CHANNEL_PREFIX) :]
    return None
