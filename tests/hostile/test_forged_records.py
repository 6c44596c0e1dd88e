"""Records forged on the engine's internal topics by someone who can write to Kafka.

Commands, referral messages and the broadcast move money, models and nudges, and only the engine
writes them: each carries an HMAC signature (infra/signing.py). A record without one, with one
made with another secret, or with a genuine one lifted from another record (another key, another
topic) is refused as ``bad_signature`` and changes nothing; a genuinely signed command still works,
which shows the refusals are about the signature and nothing else. A pickle on the broadcast is
never loaded, signed or not.
"""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from infra.signing import RecordSigner
from infra.topics import BROADCAST, REFERRALS, RISK_LABELS, USER_COMMANDS
from tests.conftest import wait_until
from tests.hostile.kit import (
    MAX_DEAD_LETTER_BYTES,
    Outgoing,
    Stack,
    admin_headers,
    dead_letters,
    honest_event_applied,
    new_id,
    now_ms,
    produce_all,
    user_headers,
    worker_metric,
)
from tests.integration.processes import TEST_SECRET

pytestmark = pytest.mark.integration

ENGINE = RecordSigner(TEST_SECRET)
STRANGER = RecordSigner("wrong")


def grant(user_id: str, amount: int = 5_000) -> tuple[bytes, bytes]:
    """(key, value) of a `grant` command as the API writes one (api/routes/rewards.py)."""
    grant_id = new_id("g")
    command = {
        "command_id": f"{user_id}:grant:{grant_id}",
        "type": "grant",
        "user_id": user_id,
        "ts": now_ms(),
        "grant_id": grant_id,
        "amount": amount,
        "reason": "forged",
        "expires_at_ms": None,
    }
    return user_id.encode(), orjson.dumps(command)


async def balance(http: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    r = await http.get("/v1/rewards/balance", params={"user_id": user_id}, headers=admin_headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_forged_grants_are_dead_lettered_bad_signature_and_credit_nothing(stack: Stack) -> None:
    victim = new_id("rich")
    key, value = grant(victim)
    other_key, other_value = grant(new_id("someone-else"))
    _, referral_like = grant(victim)
    forged: list[Outgoing] = [
        (USER_COMMANDS, key, value, None),  # no signature at all
        (USER_COMMANDS, key, value, STRANGER.headers(USER_COMMANDS, key, value)),  # another secret
        # The engine's genuine signature, lifted from another user's command.
        (USER_COMMANDS, key, value, ENGINE.headers(USER_COMMANDS, other_key, other_value)),
        # ...and from the same bytes on another internal topic (signatures bind the topic).
        (USER_COMMANDS, key, referral_like, ENGINE.headers(REFERRALS, key, referral_like)),
        # A signature header that is not even the right length.
        (USER_COMMANDS, key, value, [("elimu-sig", b"\x00")]),
    ]
    async with (
        dead_letters(stack.kafka) as letters,
        httpx.AsyncClient(base_url=stack.url, timeout=15) as http,
    ):
        origins = await produce_all(stack.kafka, forged)
        await letters.wait_for(origins, stack)
        for origin in origins:
            (letter,) = letters.by_origin[origin]
            assert letter.reason == "bad_signature", letter.body
            assert letter.size < MAX_DEAD_LETTER_BYTES
        assert (await balance(http, victim))["lifetime"]["granted"] == 0

        # The same command with the engine's own signature is applied: the refusals above were
        # about the signature, not the command.
        signed = await produce_all(
            stack.kafka, [(USER_COMMANDS, key, value, ENGINE.headers(USER_COMMANDS, key, value))]
        )

        async def credited() -> dict[str, Any] | None:
            stack.assert_alive()
            body = await balance(http, victim)
            return body if body["balance"] > 0 else None

        body = await wait_until(credited, timeout=30, what="the genuinely signed grant")
        assert body["balance"] == 5_000 and body["lifetime"]["granted"] == 5_000, body
        await letters.drain()
        assert signed[0] not in letters.by_origin
    assert (
        await worker_metric(stack, "elimu_dead_letters_total", topic=USER_COMMANDS, reason="bad_signature")
        >= 5
    )


async def test_forged_referral_messages_pay_no_one(stack: Stack) -> None:
    referrer = new_id("referrer")
    async with httpx.AsyncClient(base_url=stack.url, timeout=15) as http:
        r = await http.post("/v1/referrals/generate", headers=user_headers(referrer), json={})
        assert r.status_code == 200, r.text
        messages: list[Outgoing] = []
        for i in range(3):
            referred = new_id(f"ghost{i}")
            at = now_ms()
            claim = {"type": "claim", "referrer_id": referrer, "referred_id": referred, "at_ms": at}
            complete = {"type": "complete", "referrer_id": referrer, "referred_id": referred, "at_ms": at + 1}
            for msg in (claim, complete):
                value = orjson.dumps(msg)
                messages.append(
                    (
                        REFERRALS,
                        referrer.encode(),
                        value,
                        STRANGER.headers(REFERRALS, referrer.encode(), value) if i else None,
                    )
                )
        async with dead_letters(stack.kafka) as letters:
            origins = await produce_all(stack.kafka, messages)
            await letters.wait_for(origins, stack)
        assert {letter.reason for o in origins for letter in letters.by_origin[o]} == {"bad_signature"}
        history = await http.get("/v1/referrals/history", headers=user_headers(referrer))
        assert history.status_code == 200, history.text
        assert history.json().get("referrals", []) == [], history.json()
        assert (await balance(http, referrer))["lifetime"]["granted"] == 0
        await honest_event_applied(stack, http)


class Touch:
    """Unpickling this creates ``path``: the proof that something called ``pickle.loads``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.path), "w"))


async def test_a_pickle_on_the_broadcast_never_runs_signed_or_not(stack: Stack, tmp_path: Path) -> None:
    keys = [b"risk-scorer", b"risk-checkpoint", b"intervention-stats", b"campaign:evil"]
    unsigned_marker, signed_marker = tmp_path / "unsigned-ran", tmp_path / "signed-ran"
    unsigned = pickle.dumps(Touch(unsigned_marker))
    signed = pickle.dumps(Touch(signed_marker))
    before = await worker_metric(stack, "elimu_dead_letters_total", topic=BROADCAST, reason="bad_signature")
    records: list[Outgoing] = [(BROADCAST, k, unsigned, None) for k in keys]
    # Signed with the engine's secret: were the secret to leak, still no code runs.
    records += [(BROADCAST, k, signed, ENGINE.headers(BROADCAST, k, signed)) for k in keys]
    await produce_all(stack.kafka, records)

    async def refused() -> bool:
        stack.assert_alive()
        now = await worker_metric(stack, "elimu_dead_letters_total", topic=BROADCAST, reason="bad_signature")
        return now - before >= len(keys)

    await wait_until(refused, timeout=30, what="the unsigned broadcast records refused")
    # A (signed) label makes this worker's trainer restore, reading the signed pickle as its
    # checkpoint: the path that unpickled checkpoints before. Its log says when it has.
    label = b"{}"
    await produce_all(
        stack.kafka, [(RISK_LABELS, b"label", label, ENGINE.headers(RISK_LABELS, b"label", label))]
    )

    async def restored() -> bool:
        stack.assert_alive()
        return "risk trainer restored" in stack.worker.tail(400)

    await wait_until(restored, timeout=45, what="the risk trainer restored over the pickle")
    async with httpx.AsyncClient(base_url=stack.url, timeout=15) as http:
        await honest_event_applied(stack, http)
    assert not unsigned_marker.exists() and not signed_marker.exists()
    assert "risk checkpoint unusable" in stack.worker.tail(400)
