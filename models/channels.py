"""Websocket channel names (one home for their spelling; who may subscribe: api/channel_access.py)."""

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


def leaderboard_channel(period: str) -> str:
    """``leaderboard:<period>``: the top of the period's board, pushed on a timer."""
    return f"leaderboard:{period}"


#: The job market's live pulse.
MARKET_CHANNEL = "market"
#: Admins: risk scores entering (and leaving) the at-risk list.
AT_RISK_CHANNEL = "admin:at-risk"
#: Admins: the consumer-lag report, on every sample.
OPS_LAG_CHANNEL = "ops:lag"
