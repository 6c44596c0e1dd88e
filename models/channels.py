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


LEADERBOARD_CHANNEL_PREFIX = "leaderboard:"


def leaderboard_channel(period: str) -> str:
    """``leaderboard:<period>``: the top of the period's board, pushed on a timer."""
    return f"{LEADERBOARD_CHANNEL_PREFIX}{period}"


def is_snapshot_channel(channel: str) -> bool:
    """Whether each message on ``channel`` replaces the previous one (a leaderboard's top): a
    client that is behind needs only the newest, so its queue keeps one per channel."""
    return channel.startswith(LEADERBOARD_CHANNEL_PREFIX)


#: The job market's live pulse.
MARKET_CHANNEL = "market"
#: Admins: risk scores entering (and leaving) the at-risk list.
AT_RISK_CHANNEL = "admin:at-risk"
#: Admins: the outreach queue's tasks, as they are created, assigned and resolved.
OUTREACH_CHANNEL = "admin:outreach"
#: Admins: the consumer-lag report, on every sample.
OPS_LAG_CHANNEL = "ops:lag"
