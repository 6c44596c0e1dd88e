"""`infra.keys`: user keys and shared keys live in namespaces no id can cross (property tests).

The issue this guards: a user named ``books`` owned ``elimu:referrals:books``, the shared hash of
every referral book, and the worker looped on WRONGTYPE. Every key function of the module is
classified below, so a new one cannot slip in untested.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra import keys
from infra.channels import dedup_digest
from models.boards import GROUP_KINDS, canonical_group, group_digest

# Every per-user key function, by the kind it writes.
USER_KEYS: dict[str, Callable[[str], str]] = {
    "state": keys.user_state,
    "risk": keys.user_risk,
    "stats": keys.user_stats,
    "matches": keys.user_matches,
    "apps": keys.user_applications,
    "rewards": keys.user_rewards,
    "referrals": keys.user_referrals,
    "growth": keys.user_growth,
    "notifications": keys.user_notifications,
    "profile": keys.user_profile,
    "push": keys.user_push_subscriptions,
    "profilewrite": keys.user_profile_written,
    "board": keys.user_board,
    "recs": keys.user_recommendations,
}
# Per-user key functions that also take a channel, by the kinds they write.
USER_CHANNEL_KEYS: dict[str, Callable[[str, str], str]] = {"contact_pending": keys.contact_pending}
# Shared key functions of one free argument (a channel, a command id, a referral code).
SHARED_KEYS_1: dict[str, Callable[[str], str]] = {
    "channel_seq": keys.channel_seq,
    "channel_log": keys.channel_log,
    "channel_bytes": keys.channel_bytes,
    "channel_dedup": keys.channel_dedup,
    "command_result": keys.command_result,
    "risk_recalculation": keys.risk_recalculation,
    "referral_code": keys.referral_code,
    "campaign_lock": keys.campaign_lock,
    "tracking_trapped": keys.tracking_trapped,
    "email_suppressed": keys.email_suppressed,
}
# ... and of two.
SHARED_KEYS_2: dict[str, Callable[[str, str], str]] = {
    "leaderboard": keys.leaderboard,
    "referral_ip_claims": keys.referral_ip_claims,
    "delivery_claim": keys.delivery_claim,
    "unsubscribe_counted": keys.unsubscribe_counted,
    "delivery_receipt": keys.delivery_receipt,
}
# Functions that do not name a Redis key.
NOT_KEYS = {"channel_pubsub", "market_scope", "channel_user"}
# Group leaderboards (a kind, a digest, a period, a bucket): tested on their own below.
GROUP_KEYS = {"group_leaderboard"}

#: Every shared constant key of the module.
SHARED_CONSTANTS = {
    name: value
    for name, value in vars(keys).items()
    if name.isupper() and isinstance(value, str) and value.startswith(f"{keys.PREFIX}:")
    and name not in {"USER_PREFIX", "PUBSUB_PATTERN"}
}  # fmt: skip

# Ids as hostile as they come: the separators and hash-tag braces of the layout, glob
# characters, and the very words of shared keys.
separators = st.sampled_from([":", "{", "}", "*", "books", "facts", "pulse", "at-risk", "u", "elimu"])
ids = st.lists(st.one_of(separators, st.text(min_size=0, max_size=6)), max_size=8).map("".join)


def test_every_key_function_is_classified() -> None:
    functions = {name for name, f in vars(keys).items() if inspect.isfunction(f) and not name.startswith("_")}
    classified = {f.__name__ for f in USER_KEYS.values()} | set(SHARED_KEYS_1) | set(SHARED_KEYS_2)
    assert functions == classified | set(USER_CHANNEL_KEYS) | NOT_KEYS | GROUP_KEYS
    assert set(USER_KEYS) | set(keys.PENDING_CONTACT_KINDS.values()) == keys.USER_KINDS
    assert all(":" not in kind and "}" not in kind for kind in keys.USER_KINDS)


def test_shared_constants_are_outside_the_user_namespace() -> None:
    assert {"REFERRAL_BOOKS", "APPLICATION_FACTS", "MARKET_PULSE", "RISK_SCORES"} <= set(SHARED_CONSTANTS)
    for name, key in SHARED_CONSTANTS.items():
        assert not key.startswith(keys.USER_PREFIX), name


def test_a_shared_key_cannot_be_made_in_the_user_namespace() -> None:
    with pytest.raises(keys.KeyspaceError):
        keys._shared("u:{books}:referrals")


def test_the_serving_epoch_names_the_layout_version() -> None:
    # A layout change must re-project everything: the epoch key of the old layout is not read.
    assert keys.SERVING_EPOCH.endswith(f":v{keys.LAYOUT_VERSION}") and keys.LAYOUT_VERSION >= 2


@given(user_id=ids, a=ids, b=ids)
def test_no_user_key_is_a_shared_key(user_id: str, a: str, b: str) -> None:
    shared = set(SHARED_CONSTANTS.values())
    shared |= {f(a) for f in SHARED_KEYS_1.values()}
    shared |= {f(a, b) for f in SHARED_KEYS_2.values()}
    per_user = [f(user_id) for f in USER_KEYS.values()]
    per_user += [keys.contact_pending(user_id, channel) for channel in keys.PENDING_CONTACT_KINDS]
    for key in per_user:
        assert key.startswith(keys.USER_PREFIX)
        assert key not in shared
    for key in shared:
        assert not key.startswith(keys.USER_PREFIX), key


def parse_user_key(key: str) -> tuple[str, str]:
    """The (user id, kind) a user key names: the inverse the layout promises."""
    assert key.startswith(keys.USER_PREFIX + "{")
    body, _, kind = key[len(keys.USER_PREFIX) + 1 :].rpartition(":")
    assert body.endswith("}")
    return body[:-1], kind


@given(u1=ids, u2=ids, k1=st.sampled_from(sorted(USER_KEYS)), k2=st.sampled_from(sorted(USER_KEYS)))
def test_distinct_users_and_kinds_give_distinct_keys(u1: str, u2: str, k1: str, k2: str) -> None:
    key1, key2 = USER_KEYS[k1](u1), USER_KEYS[k2](u2)
    assert parse_user_key(key1) == (u1, k1)
    assert (key1 == key2) == ((u1, k1) == (u2, k2))


@given(c1=ids, c2=ids)
def test_channel_keys_differ_for_distinct_channels_and_kinds(c1: str, c2: str) -> None:
    def all_keys(channel: str) -> dict[tuple[str, str], str]:
        return {
            (channel, "seq"): keys.channel_seq(channel),
            (channel, "log"): keys.channel_log(channel),
            (channel, "bytes"): keys.channel_bytes(channel),
            (channel, "dedup"): keys.channel_dedup(channel),
        }

    named = {**all_keys(c1), **all_keys(c2)}
    # As many distinct keys as distinct (channel, kind) pairs: no two pairs share a key.
    assert len(set(named.values())) == len(named)
    # A user's channel is never a user key, nor another user's channel's key.
    assert not any(k.startswith(keys.USER_PREFIX) for k in named.values())


def test_a_dedup_key_is_a_fixed_size_digest_whatever_its_length() -> None:
    long, short = dedup_digest("x" * 10_000), dedup_digest("x")
    assert len(long) == len(short) == 32
    assert long != short


# School and cohort names as hostile as they come: the layout's separators, other keys' words,
# periods and buckets, control-free but otherwise anything.
group_names = st.lists(
    st.one_of(
        separators, st.sampled_from(["daily", "all", "lb", "school", "cohort", " "]), st.text(max_size=6)
    ),
    max_size=8,
).map("".join)


@given(a=group_names, b=group_names, kind_a=st.sampled_from(GROUP_KINDS), kind_b=st.sampled_from(GROUP_KINDS))
def test_group_boards_meet_no_other_key_whatever_the_name(a: str, b: str, kind_a: str, kind_b: str) -> None:
    board_a = keys.group_leaderboard(kind_a, group_digest(kind_a, a), "daily", "2026-12-07")
    board_b = keys.group_leaderboard(kind_b, group_digest(kind_b, b), "daily", "2026-12-07")
    # One board per (kind, canonical name): names equal after normalisation share it, others not.
    same = kind_a == kind_b and canonical_group(a) == canonical_group(b)
    assert (board_a == board_b) == same
    assert not board_a.startswith(keys.USER_PREFIX)
    # Nor a global board, whatever the name: the kind is not a period.
    for period in ("daily", "weekly", "all_time"):
        assert board_a != keys.leaderboard(period, "2026-12-07")
    assert len(board_a) == len(board_b)  # fixed size: the name never reaches the key


def test_a_group_board_is_named_only_by_a_digest() -> None:
    for kind, digest in [
        ("school", "}:" * 16),
        ("daily", "0" * 32),
        ("school", "0" * 31),
        ("cohort", "a b" * 11),
    ]:
        with pytest.raises(keys.KeyspaceError):
            keys.group_leaderboard(kind, digest, "daily", "2026-12-07")
