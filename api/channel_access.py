"""Which websocket channels exist and who may subscribe to them (CONTRACT.md §8).

Kept apart from the websocket protocol so that adding a channel family is a change here only.
"""

from __future__ import annotations

from enum import Enum

from api.auth import Principal
from models.channels import (
    AT_RISK_CHANNEL,
    MARKET_CHANNEL,
    OPS_LAG_CHANNEL,
    OUTREACH_CHANNEL,
    channel_user,
    leaderboard_channel,
)
from models.events import is_valid_id
from models.leaderboard import PERIODS

ADMIN_CHANNELS = frozenset({AT_RISK_CHANNEL, OPS_LAG_CHANNEL, OUTREACH_CHANNEL})
PUBLIC_CHANNELS = frozenset({MARKET_CHANNEL, *(leaderboard_channel(p) for p in PERIODS)})


class Access(Enum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    UNKNOWN = "unknown"


def check(principal: Principal, channel: str) -> Access:
    """``UNKNOWN`` for names that are no channel at all, so clients can tell typos from denials."""
    if channel in PUBLIC_CHANNELS:
        return Access.ALLOWED
    if channel in ADMIN_CHANNELS:
        return Access.ALLOWED if principal.is_admin else Access.FORBIDDEN
    user_id = channel_user(channel)
    # A user id that no token could carry (too long, control characters) names no channel.
    if user_id is not None and is_valid_id(user_id):
        return Access.ALLOWED if principal.may_read_user(user_id) else Access.FORBIDDEN
    return Access.UNKNOWN
