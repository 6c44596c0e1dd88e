"""Growth routes (docs/growth.md) on the real Redis and broker.

No worker runs here: for command routes the test plays the worker (``FakeWorker`` consumes the
commands the API produced and writes answers where the worker would), so each test checks both
what the API put on the topic and how it maps the worker's answer to a status. Reads are checked
against views written into Redis in the worker's format (the models' ``to_dict``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any, cast

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from api import commands
from api.routes import goals, referrals
from infra import keys, topics
from infra.channels import ChannelLog
from infra.settings import DEFAULT_RULES
from models import rewards
from models.challenges import (
    ChallengeProgress,
    Goal,
    challenge_for,
    new_goal,
    public_challenge,
    public_goal,
)
from models.events import format_ts, parse_ts
from models.growth import GrowthState
from models.referrals import (
    COMPLETED,
    HELD,
    Referral,
    ReferrerBook,
    Signals,
    referral_code,
)
from models.rules import Rules
from models.streaks import local_day
from models.time_units import DAY_MS, HOUR_MS
from streams.growth import GrowthProcessor
from streams.growth_pipeline import GrowthSlice
from streams.records import Record
from streams.serving import ServingWriter
from streams.tables import TableStore
from tests.api.conftest import SECRET, bearer, end_offset
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic, wait_until

Reply = Callable[[dict[str, Any]], dict[str, Any] | None]


def now_ms() -> int:
    return int(time.time() * 1000)


class FakeWorker:
    """Reads the commands topic from the start; answers each command with ``reply`` (None: no
    answer, as when the worker is slow) under the key the real worker uses."""

    def __init__(self, bootstrap: str, topic: str, redis: Redis) -> None:
        self.topic = topic
        self.redis = redis
        self.commands: list[dict[str, Any]] = []
        self.record_keys: list[bytes | None] = []
        self.reply: Reply = lambda command: None
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        self._task = asyncio.create_task(self._run(tp))

    async def _run(self, tp: TopicPartition) -> None:
        while True:
            batch = await self._consumer.getmany(tp, timeout_ms=100)
            for record in batch.get(tp, []):
                command = orjson.loads(record.value)
                answer = self.reply(command)
                if answer is not None:
                    await self.redis.set(keys.command_result(command["command_id"]), orjson.dumps(answer))
                # Recorded after answering, so a test that saw the command also sees the answer.
                self.commands.append(command)
                self.record_keys.append(record.key)

    async def stop(self) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task  # re-raises a crash of the loop, so no test passes over one
        finally:
            await self._consumer.stop()

    async def received(self, n: int) -> list[dict[str, Any]]:
        async def enough() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()  # surface a crash of the consumer loop
            return len(self.commands) >= n

        await wait_until(enough, timeout=10, what=f"{n} commands on {self.topic}")
        return self.commands


class RealGrowth:
    """The worker's own growth code as a ``FakeWorker.reply``: each command the API produced is
    applied by ``GrowthProcessor`` to an in-memory table, so a test sees what the real worker
    would answer (and can project the table into Redis as the worker does)."""

    def __init__(self) -> None:
        rules = Rules.from_toml(DEFAULT_RULES.read_text())
        self.processor = GrowthProcessor(
            rules, lambda topic: 1, code_of=lambda uid: referral_code(SECRET.encode(), uid)
        )
        self.table: dict[str, GrowthState] = {}
        self.rules = rules

    def get(self, key: str) -> GrowthState | None:
        return self.table.get(key)

    def put(self, key: str, state: GrowthState) -> None:
        self.table[key] = state

    def reply(self, command: dict[str, Any]) -> dict[str, Any] | None:
        key = command["user_id"].encode()
        record = Record(topics.USER_COMMANDS, 0, 0, key, orjson.dumps(command), command["ts"])
        out = self.processor.process([record], [], self)
        assert out.dead_letters == [], out.dead_letters
        return out.answers[0][1] if out.answers else None

    async def project(self, redis: Redis) -> None:
        """What a worker's ``_check_serving`` does after a wipe, for this table."""

        class Store:
            def states_of(_self, partitions: Any) -> list[GrowthState]:
                return list(self.table.values())

        serving = ServingWriter(redis, ChannelLog(redis), self.rules)
        store = cast(TableStore[GrowthState], Store())
        await GrowthSlice(self.processor, store, serving, no_send, 1).project(self.table.values())


async def no_send(topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> None:
    raise AssertionError("projection sends nothing")


@pytest.fixture
async def commands_topic(kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh one-partition commands topic per test, so tests never read each other's commands."""
    topic = f"user-commands-{unique}"
    await create_topic(kafka_bootstrap, topic)
    monkeypatch.setattr(topics, "USER_COMMANDS", topic)  # what the API and this worker read
    return topic


@pytest.fixture
async def worker(kafka_bootstrap: str, commands_topic: str, redis: Redis) -> AsyncIterator[FakeWorker]:
    fake = FakeWorker(kafka_bootstrap, commands_topic, redis)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that expect no answer need not wait the production 5 s."""
    monkeypatch.setattr(commands, "COMMAND_TIMEOUT_S", 0.3)


def assert_command(
    command: dict[str, Any], command_type: str, user_id: str, before_ms: int, /, **fields: Any
) -> None:
    """The envelope every command has (docs/growth.md), then the type's own ``fields``."""
    assert command["type"] == command_type
    assert command["user_id"] == user_id
    assert isinstance(command["command_id"], str) and command["command_id"].startswith(f"{user_id}:")
    assert before_ms <= command["ts"] <= now_ms()
    assert {name: command.get(name) for name in fields} == fields


# ---------------------------------------------------------------------------------------------
# Auth


def test_commands_go_to_the_contract_topic() -> None:
    # The tests redirect the topic; production must still use the one the worker consumes.
    assert topics.USER_COMMANDS == "user-commands"
    assert commands.COMMAND_TIMEOUT_S == 5.0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/rewards/balance"),
        ("POST", "/v1/rewards/redeem"),
        ("POST", "/v1/referrals/generate"),
        ("POST", "/v1/referrals/claim"),
        ("GET", "/v1/referrals/stats"),
        ("GET", "/v1/challenges/today"),
        ("GET", "/v1/users/u-1/goals"),
        ("GET", "/v1/analytics/growth"),
    ],
)
async def test_every_route_needs_a_token(client: httpx.AsyncClient, method: str, path: str) -> None:
    assert_error(await client.request(method, path), 401, "unauthorized")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/rewards/balance?user_id=u-2",
        "/v1/rewards/history?user_id=u-2",
        "/v1/rewards/available?user_id=u-2",
        "/v1/referrals/history?user_id=u-2",
        "/v1/referrals/stats?user_id=u-2",
        "/v1/challenges/today?user_id=u-2",
        "/v1/users/u-2/goals",
    ],
)
async def test_users_read_only_their_own(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path, headers=bearer("u-1")), 403, "forbidden")
    assert (await client.get(path, headers=bearer("ops", "admin"))).status_code == 200


async def test_users_may_not_create_goals_for_others(client: httpx.AsyncClient) -> None:
    body = {"kind": "practice_frequency", "target": 3, "deadline": now_ms() + DAY_MS}
    assert_error(await client.post("/v1/users/u-2/goals", json=body, headers=bearer("u-1")), 403, "forbidden")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/analytics/growth", None),
        ("GET", "/v1/admin/referrals/held", None),
        (
            "POST",
            "/v1/admin/rewards/grant",
            {"user_id": "u-1", "amount": 10, "reason": "x", "grant_id": "g-1"},
        ),
        ("POST", "/v1/admin/referrals/u-1/u-2/review", {"approve": True}),
    ],
)
async def test_admin_routes_refuse_users(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.request(method, path, json=body, headers=bearer("u-1"))
    assert_error(response, 403, "forbidden")


async def test_posts_are_rate_limited_per_principal(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "RATE_BURST", 1)
    monkeypatch.setattr(commands, "RATE_PER_S", 0.01)
    body = {"code": "!"}  # refused as 400 after the limiter, so no worker is needed
    assert_error(await client.post("/v1/referrals/claim", json=body, headers=bearer("u-1")), 400, "bad_code")
    response = await client.post("/v1/referrals/claim", json=body, headers=bearer("u-1"))
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    # Another principal has a bucket of their own.
    assert_error(await client.post("/v1/referrals/claim", json=body, headers=bearer("u-2")), 400, "bad_code")


# ---------------------------------------------------------------------------------------------
# Referral codes


async def test_generate_maps_the_deterministic_code_and_sends_the_command(
    client: httpx.AsyncClient, worker: FakeWorker, redis: Redis
) -> None:
    worker.reply = lambda c: {"ok": True, "code": c["code"]}
    expected = referral_code(SECRET.encode(), "u-gen")
    before = now_ms()
    first = await client.post("/v1/referrals/generate", json={"device_id": "d-1"}, headers=bearer("u-gen"))
    assert first.status_code == 200, first.text
    assert first.json() == {"code": expected}
    again = await client.post("/v1/referrals/generate", headers=bearer("u-gen"))
    assert again.json() == {"code": expected}
    assert await redis.get(keys.referral_code(expected)) == b"u-gen"

    commands = await worker.received(2)
    assert_command(commands[0], "referral_generate", "u-gen", before, code=expected, device_id="d-1")
    assert commands[0]["ip"] == "127.0.0.1"
    assert commands[1]["device_id"] is None
    assert commands[0]["command_id"] != commands[1]["command_id"]
    assert worker.record_keys == [b"u-gen", b"u-gen"]


async def test_generate_refuses_a_code_owned_by_another_user(
    client: httpx.AsyncClient, commands_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    code = referral_code(SECRET.encode(), "u-late")
    await redis.set(keys.referral_code(code), "u-first")
    response = await client.post("/v1/referrals/generate", headers=bearer("u-late"))
    assert_error(response, 409, "code_collision")
    assert await redis.get(keys.referral_code(code)) == b"u-first"
    assert await end_offset(kafka_bootstrap, commands_topic) == 0


async def test_generate_without_an_answer_is_202_pending(
    client: httpx.AsyncClient, worker: FakeWorker, short_wait: None
) -> None:
    response = await client.post("/v1/referrals/generate", headers=bearer("u-slow"))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    (command,) = await worker.received(1)
    assert body["command_id"] == command["command_id"]


# ---------------------------------------------------------------------------------------------
# Claims


async def test_claim_refusals_before_any_command(
    client: httpx.AsyncClient, commands_topic: str, kafka_bootstrap: str, redis: Redis
) -> None:
    own = referral_code(SECRET.encode(), "u-me")
    await redis.set(keys.referral_code(own), "u-me")
    headers = bearer("u-me")
    assert_error(
        await client.post("/v1/referrals/claim", json={"code": "short"}, headers=headers), 400, "bad_code"
    )
    # Well-formed but nobody's code.
    unknown = "ZZZZZZZZ" if own != "ZZZZZZZZ" else "YYYYYYYY"
    response = await client.post("/v1/referrals/claim", json={"code": unknown}, headers=headers)
    assert_error(response, 404, "unknown_code")
    response = await client.post("/v1/referrals/claim", json={"code": own.lower()}, headers=headers)
    assert_error(response, 422, "self_referral")
    assert await end_offset(kafka_bootstrap, commands_topic) == 0
    assert await redis.keys(keys.referral_ip_claims("*", "*")) == []


async def test_claim_counts_the_ip_and_maps_the_answer(
    client: httpx.AsyncClient, worker: FakeWorker, redis: Redis
) -> None:
    code = referral_code(SECRET.encode(), "u-ref")
    await redis.set(keys.referral_code(code), "u-ref")
    outcomes = {
        "u-new": {"ok": True, "code": "claimed", "referrer_id": "u-ref"},
        "u-again": {"ok": False, "code": "already_referred", "referrer_id": "u-other"},
        "u-loop": {"ok": False, "code": "self_referral", "referrer_id": "u-ref"},
    }
    worker.reply = lambda c: outcomes[c["user_id"]]
    typed = f"{code[:4].lower()}-{code[4:]}"  # how a person might type it
    before = now_ms()
    body = {"code": typed, "device_id": "phone-1", "email": "new@example.org"}
    # A client-supplied X-Forwarded-For must not change the IP the fraud checks see.
    spoof = {**bearer("u-new"), "X-Forwarded-For": "10.9.8.7"}
    response = await client.post("/v1/referrals/claim", json=body, headers=spoof)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "claimed", "referrer_id": "u-ref"}

    response = await client.post("/v1/referrals/claim", json={"code": code}, headers=bearer("u-again"))
    assert_error(response, 409, "already_referred")
    response = await client.post("/v1/referrals/claim", json={"code": code}, headers=bearer("u-loop"))
    assert_error(response, 422, "self_referral")

    commands = await worker.received(3)
    assert_command(
        commands[0],
        "referral_claim",
        "u-new",
        before,
        referrer_id="u-ref",
        code=code,
        device_id="phone-1",
        email="new@example.org",
        ip="127.0.0.1",
        ip_claims_24h=1,
    )
    assert [c["ip_claims_24h"] for c in commands] == [1, 2, 3]
    assert worker.record_keys == [b"u-new", b"u-again", b"u-loop"]
    (counter,) = await redis.keys(keys.referral_ip_claims("127.0.0.1", "*"))
    assert await redis.get(counter) == b"3"
    assert 0 < await redis.ttl(counter) <= referrals.IP_CLAIMS_TTL_S
    assert await redis.keys(keys.referral_ip_claims("10.9.8.7", "*")) == []


# ---------------------------------------------------------------------------------------------
# Redemptions and grants


def redeem_answer(command: dict[str, Any]) -> dict[str, Any]:
    code = {
        "streak_freeze": "ok",
        "discount_10": "insufficient_balance",
        "early_access": "limit_reached",
    }.get(command["perk_id"], "unknown_perk")
    cost = 150 if code == "ok" else 0
    return {
        "ok": code == "ok",
        "code": code,
        "perk_id": command["perk_id"],
        "cost": cost,
        "balance": 200 - cost,
        "duplicate": False,
    }


async def test_redeem_maps_each_answer(client: httpx.AsyncClient, worker: FakeWorker) -> None:
    worker.reply = redeem_answer
    headers = bearer("u-r")
    before = now_ms()

    async def redeem(perk: str, request_id: str) -> httpx.Response:
        return await client.post(
            "/v1/rewards/redeem", json={"perk_id": perk, "request_id": request_id}, headers=headers
        )

    ok = await redeem("streak_freeze", "req-1")
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "ok": True,
        "code": "ok",
        "perk_id": "streak_freeze",
        "cost": 150,
        "balance": 50,
        "duplicate": False,
    }
    poor = assert_error(await redeem("discount_10", "req-2"), 409, "insufficient_balance")
    assert poor["balance"] == 200
    assert_error(await redeem("early_access", "req-3"), 409, "limit_reached")
    assert_error(await redeem("yacht", "req-4"), 404, "unknown_perk")

    commands = await worker.received(4)
    assert_command(commands[0], "redeem", "u-r", before, request_id="req-1", perk_id="streak_freeze")
    assert [c["command_id"] for c in commands] == ["u-r:req-1", "u-r:req-2", "u-r:req-3", "u-r:req-4"]
    assert set(worker.record_keys) == {b"u-r"}


async def test_redeem_idempotency_key_is_scoped_by_user(
    client: httpx.AsyncClient,
    commands_topic: str,
    kafka_bootstrap: str,
    worker: FakeWorker,
    redis: Redis,
    short_wait: None,
) -> None:
    body = {"perk_id": "streak_freeze", "request_id": "same"}
    stored = {
        "ok": True,
        "code": "ok",
        "perk_id": "streak_freeze",
        "cost": 150,
        "balance": 0,
        "duplicate": True,
    }
    await redis.set(keys.command_result("u-a:same"), orjson.dumps(stored))

    # u-a retries a redemption already answered: the stored answer, and nothing produced again.
    response = await client.post("/v1/rewards/redeem", json=body, headers=bearer("u-a"))
    assert response.status_code == 200
    assert response.json() == stored
    assert await end_offset(kafka_bootstrap, commands_topic) == 0

    # u-b picked the same request_id: a command of its own, not u-a's answer. No answer → 202.
    response = await client.post("/v1/rewards/redeem", json=body, headers=bearer("u-b"))
    assert response.status_code == 202
    assert response.json() == {"command_id": "u-b:same", "status": "pending"}
    (command,) = await worker.received(1)
    assert command["command_id"] == "u-b:same"
    assert command["user_id"] == "u-b"


@pytest.mark.parametrize(
    "body",
    [
        {"perk_id": "streak_freeze"},
        {"perk_id": "streak_freeze", "request_id": ""},
        {"perk_id": "streak_freeze", "request_id": "x" * 129},
        {"perk_id": "streak_freeze", "request_id": 7},
        {"request_id": "r-1"},
    ],
)
async def test_redeem_needs_a_valid_request_id_and_perk(
    client: httpx.AsyncClient, commands_topic: str, kafka_bootstrap: str, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/rewards/redeem", json=body, headers=bearer("u-1"))
    assert_error(response, 422, "validation_error")
    assert await end_offset(kafka_bootstrap, commands_topic) == 0


async def test_redeem_refuses_a_scoped_id_too_long_for_the_ledger(
    client: httpx.AsyncClient, commands_topic: str, kafka_bootstrap: str
) -> None:
    body = {"perk_id": "streak_freeze", "request_id": "x" * 128}  # fine alone, too long with "u-1:"
    response = await client.post("/v1/rewards/redeem", json=body, headers=bearer("u-1"))
    assert_error(response, 422, "validation_error")
    assert await end_offset(kafka_bootstrap, commands_topic) == 0


async def test_admin_grant_sends_the_command(client: httpx.AsyncClient, worker: FakeWorker) -> None:
    worker.reply = lambda c: {"ok": True, "balance": c["amount"], "duplicate": False}
    before = now_ms()
    body = {"user_id": "u-g", "amount": 120, "reason": "contest", "grant_id": "g-7", "expires_in_days": 30}
    response = await client.post("/v1/admin/rewards/grant", json=body, headers=bearer("ops", "admin"))
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "balance": 120, "duplicate": False}
    (command,) = await worker.received(1)
    assert_command(command, "grant", "u-g", before, grant_id="g-7", amount=120, reason="contest")
    assert command["command_id"] == "u-g:grant:g-7"
    assert before + 30 * DAY_MS <= command["expires_at_ms"] <= now_ms() + 30 * DAY_MS
    assert worker.record_keys == [b"u-g"]
    bad = {**body, "amount": 0}
    response = await client.post("/v1/admin/rewards/grant", json=bad, headers=bearer("ops", "admin"))
    assert_error(response, 422, "validation_error")


# ---------------------------------------------------------------------------------------------
# Reward reads


async def test_reward_reads_compute_from_the_ledger_view(client: httpx.AsyncClient, redis: Redis) -> None:
    now = now_ms()
    ledger = rewards.Ledger("u-l")
    # Its expiry has passed but no command has recorded it: reads must still leave it out.
    rewards.grant(ledger, "g-old", 50, "welcome", now - 10 * DAY_MS, expires_at_ms=now - HOUR_MS)
    rewards.grant(ledger, "g-keep", 300, "referral", now - 2 * DAY_MS)
    rewards.grant(ledger, "g-soon", 100, "contest", now - DAY_MS, expires_at_ms=now + 3 * DAY_MS)
    await redis.set(keys.user_rewards("u-l"), orjson.dumps(ledger.to_dict()))
    headers = bearer("u-l")

    balance = (await client.get("/v1/rewards/balance", headers=headers)).json()
    assert balance["user_id"] == "u-l"
    assert balance["balance"] == 400
    assert balance["expiring_soon"] == {
        "amount": 100,
        "lots": [{"id": "g-soon", "amount": 100, "expires_at": format_ts(now + 3 * DAY_MS)}],
    }
    assert balance["lifetime"] == {"granted": 450, "spent": 0, "expired": 50}

    history = (await client.get("/v1/rewards/history", headers=headers)).json()["history"]
    assert [(h["id"], h["kind"], h["amount"]) for h in history] == [
        ("expiry:g-old", "expiry", -50),
        ("g-soon", "grant", 100),
        ("g-keep", "grant", 300),
        ("g-old", "grant", 50),
    ]

    available = (await client.get("/v1/rewards/available", headers=headers)).json()
    assert available["balance"] == 400
    affordable = {p["perk_id"]: p["affordable"] for p in available["perks"]}
    assert affordable == {
        "streak_freeze": True,
        "discount_10": True,
        "mock_interview": True,
        "early_access": False,
    }


async def test_a_user_without_a_ledger_has_nothing(client: httpx.AsyncClient) -> None:
    balance = (await client.get("/v1/rewards/balance", headers=bearer("u-none"))).json()
    assert balance["balance"] == 0
    assert balance["expiring_soon"] == {"amount": 0, "lots": []}
    history = await client.get("/v1/rewards/history", headers=bearer("u-none"))
    assert history.status_code == 200
    assert history.json()["history"] == []
    available = (await client.get("/v1/rewards/available", headers=bearer("u-none"))).json()
    assert not any(p["affordable"] for p in available["perks"])


# ---------------------------------------------------------------------------------------------
# Referral reads, review, analytics


def referral(referrer: str, referred: str, claimed: int, status: str, **extra: Any) -> Referral:
    return Referral(referrer, referred, claimed, status, **extra)


def books(now: int) -> list[ReferrerBook]:
    a = ReferrerBook("u-a", "AAAAAAAA")
    a.record_claim(referral("u-a", "u-1", now - 3 * DAY_MS, COMPLETED, completed_at_ms=now - 2 * DAY_MS))
    a.record_claim(referral("u-a", "u-2", now - DAY_MS, "pending"))
    # Pending but past the 14-day window: shown as expired without a worker write.
    a.record_claim(referral("u-a", "u-3", now - 20 * DAY_MS, "pending"))
    b = ReferrerBook("u-b", "BBBBBBBB")
    signals = Signals("dev-9", "10.0.0.9", "mailinator.com")
    b.record_claim(
        referral("u-b", "u-4", now - HOUR_MS, HELD, flags=["shared_ip", "disposable_email"], signals=signals)
    )
    return [a, b]


async def test_referral_history_and_stats_of_the_caller(client: httpx.AsyncClient, redis: Redis) -> None:
    now = now_ms()
    book = books(now)[0]
    referred_by = {"referrer_id": "u-z", "claimed_at_ms": now - 30 * DAY_MS, "sent": True}
    view = {"book": book.to_dict(), "referred_by": referred_by}
    await redis.set(keys.user_referrals("u-a"), orjson.dumps(view))

    history = (await client.get("/v1/referrals/history", headers=bearer("u-a"))).json()
    assert history["code"] == "AAAAAAAA"
    assert history["referred_by"] == {"referrer_id": "u-z", "claimed_at": format_ts(now - 30 * DAY_MS)}
    assert [(r["referred_id"], r["status"]) for r in history["referrals"]] == [
        ("u-2", "pending"),
        ("u-1", "completed"),
        ("u-3", "expired"),
    ]
    assert history["referrals"][1]["completed_at"] == format_ts(now - 2 * DAY_MS)
    assert all("flags" not in r and "signals" not in r for r in history["referrals"])

    stats = (await client.get("/v1/referrals/stats", headers=bearer("u-a"))).json()
    assert stats["claimed"] == 3
    assert (stats["completed"], stats["pending"], stats["expired"]) == (1, 1, 1)
    assert stats["credits_earned"] == 200
    admin = await client.get("/v1/referrals/stats?user_id=u-a", headers=bearer("ops", "admin"))
    assert admin.json() == stats

    empty = (await client.get("/v1/referrals/stats", headers=bearer("u-nobody"))).json()
    assert (empty["code"], empty["claimed"], empty["conversion_rate"]) == (None, 0, 0.0)


async def test_held_queue_and_growth_analytics_read_every_book(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    now = now_ms()
    for book in books(now):
        await redis.hset(keys.REFERRAL_BOOKS, book.referrer_id, orjson.dumps(book.to_dict()))
    for user in ("u-a", "u-b", "u-1", "u-2", "u-3", "u-4"):
        await redis.set(keys.user_state(user), b"{}")
    await redis.set(keys.user_rewards("u-a"), b"{}")  # not a user view: must not be counted
    admin = bearer("ops", "admin")

    held = (await client.get("/v1/admin/referrals/held", headers=admin)).json()["held"]
    assert held == [
        {
            "referrer_id": "u-b",
            "referred_id": "u-4",
            "claimed_at": format_ts(now - HOUR_MS),
            "completed_at": None,
            "flags": ["shared_ip", "disposable_email"],
            "signals": {"device_id": "dev-9", "ip": "10.0.0.9", "email_domain": "mailinator.com"},
        }
    ]

    analytics = (await client.get("/v1/analytics/growth", headers=admin)).json()
    assert analytics["total_users"] == 6
    assert analytics["funnel"] == {
        "codes_generated": 2,
        "claimed": 4,
        "pending": 1,
        "completed": 1,
        "held": 1,
        "rejected": 0,
        "expired": 1,
    }
    # invites per user 4/6 × conversion 1/4
    assert analytics["viral_coefficient"] == round(4 / 6 * 1 / 4, 4)
    assert analytics["time_to_complete_hours"]["p50"] == 24.0


async def test_review_is_a_command_keyed_by_the_referrer(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    answers = {
        "u-4": {"ok": True, "status": "pending"},
        "u-5": {"ok": False, "code": "not_held"},
        "u-6": {"ok": False, "code": "unknown_referral"},
    }
    worker.reply = lambda c: answers[c["referred_id"]]
    before = now_ms()
    admin = bearer("ops", "admin")
    response = await client.post("/v1/admin/referrals/u-b/u-4/review", json={"approve": True}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "status": "pending"}
    response = await client.post("/v1/admin/referrals/u-b/u-5/review", json={"approve": False}, headers=admin)
    assert_error(response, 409, "not_held")
    response = await client.post("/v1/admin/referrals/u-b/u-6/review", json={"approve": True}, headers=admin)
    assert_error(response, 404, "unknown_referral")
    commands = await worker.received(3)
    assert_command(commands[0], "referral_review", "u-b", before, referred_id="u-4", approve=True)
    assert commands[1]["approve"] is False
    assert worker.record_keys == [b"u-b", b"u-b", b"u-b"]
    response = await client.post("/v1/admin/referrals/u-b/u-4/review", json={"approve": "yes"}, headers=admin)
    assert_error(response, 422, "validation_error")


# ---------------------------------------------------------------------------------------------
# Daily challenge


def user_view(tz: str, current: int, last_active: str | None) -> dict[str, Any]:
    return {
        "user_id": "u-c",
        "timezone": tz,
        "streak": {"current": current, "longest": current, "freezes": 0, "last_active_day": last_active},
    }


async def test_challenge_today_uses_the_local_date_and_todays_progress(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    tz = "Pacific/Kiritimati"  # UTC+14: its date differs from UTC's for 14 hours of every day
    now = now_ms()
    today = date.fromordinal(local_day(now, tz))
    challenge = challenge_for(today)
    unit = 60 if challenge.template == "time_challenge" else 1  # time progress is kept in seconds
    target = challenge.target * unit
    progress = ChallengeProgress(challenge.id, target, progress=1 * unit, event_ids=["e-1"])
    yesterday = date.fromordinal(today.toordinal() - 1).isoformat()
    await redis.set(keys.user_state("u-c"), orjson.dumps(user_view(tz, 3, yesterday)))
    tomorrow = ChallengeProgress(date.fromordinal(today.toordinal() + 1).isoformat(), 1, progress=1)
    growth_view = {
        "challenge": tomorrow.to_dict(),  # the newest day kept (an event from a clock ahead)
        "challenges": {progress.challenge_id: progress.to_dict(), tomorrow.challenge_id: tomorrow.to_dict()},
        "goals": {},
    }
    await redis.set(keys.user_growth("u-c"), orjson.dumps(growth_view))

    body = (await client.get("/v1/challenges/today", headers=bearer("u-c"))).json()
    assert body["id"] == today.isoformat()
    assert body["progress"] == 1
    assert body["completed"] is False
    assert body == {"user_id": "u-c", **public_challenge(challenge, progress, streak_current=3)}

    # Progress of another day's challenge is not today's progress.
    stale = ChallengeProgress(yesterday, 1, progress=1, completed_at_ms=now - DAY_MS)
    await redis.set(keys.user_growth("u-c"), orjson.dumps({"challenge": stale.to_dict(), "goals": {}}))
    body = (await client.get("/v1/challenges/today", headers=bearer("u-c"))).json()
    assert (body["id"], body["progress"], body["completed"]) == (today.isoformat(), 0, False)


def test_the_streak_challenge_counts_the_streak_before_today() -> None:
    # Which template today has depends on the date, so the wording input is checked directly.
    now = now_ms()
    today = date.fromordinal(local_day(now, "UTC"))

    def day(offset: int) -> str:
        return date.fromordinal(today.toordinal() + offset).isoformat()

    assert goals._streak_before_today(user_view("UTC", 3, day(0)), today, now) == 2
    assert goals._streak_before_today(user_view("UTC", 3, day(-1)), today, now) == 3
    assert goals._streak_before_today(user_view("UTC", 3, day(-3)), today, now) == 0  # broken, no freezes
    assert goals._streak_before_today(None, today, now) is None


async def test_challenge_today_for_a_user_without_views_is_utcs(client: httpx.AsyncClient) -> None:
    now = now_ms()
    today = date.fromordinal(local_day(now, "UTC"))
    response = await client.get("/v1/challenges/today", headers=bearer("u-new"))
    assert response.status_code == 200
    assert response.json() == {"user_id": "u-new", **public_challenge(challenge_for(today), None)}


# ---------------------------------------------------------------------------------------------
# Goals


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "juggling", "target": 3, "deadline": "+7d"}, "invalid_goal"),
        ({"kind": "practice_frequency", "target": 3, "deadline": "-1d"}, "invalid_goal"),
        ({"kind": "practice_frequency", "target": 3, "deadline": "+91d"}, "invalid_goal"),
        ({"kind": "practice_frequency", "target": 3, "deadline": "next friday"}, "invalid_goal"),
        ({"kind": "practice_frequency", "target": 0, "deadline": "+7d"}, "invalid_goal"),
        ({"kind": "category_mastery", "target": 3, "deadline": "+7d"}, "invalid_goal"),
        ({"kind": "practice_frequency", "target": "3", "deadline": "+7d"}, "validation_error"),
        ({"kind": "practice_frequency", "deadline": "+7d"}, "validation_error"),
    ],
)
async def test_invalid_goals_are_422_without_a_command(
    client: httpx.AsyncClient,
    commands_topic: str,
    kafka_bootstrap: str,
    body: dict[str, Any],
    code: str,
) -> None:
    offsets = {"+7d": 7 * DAY_MS, "-1d": -DAY_MS, "+91d": 91 * DAY_MS}
    if body["deadline"] in offsets:
        body = {**body, "deadline": format_ts(now_ms() + offsets[body["deadline"]])}
    response = await client.post("/v1/users/u-g/goals", json=body, headers=bearer("u-g"))
    assert_error(response, 422, code)
    assert await end_offset(kafka_bootstrap, commands_topic) == 0


async def test_goal_create_sends_the_command_and_maps_the_answer(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    def answer(command: dict[str, Any]) -> dict[str, Any]:
        if command["kind"] == "streak_maintenance":
            return {"ok": False, "code": "too_many_goals", "message": "at most 10 active goals"}
        if command["kind"] == "score_improvement":
            return {"ok": False, "code": "invalid_goal", "message": "deadline must be in the future"}
        goal = new_goal(
            "goal-1",
            command["kind"],
            command["target"],
            command["deadline_ms"],
            command["ts"],
            command["params"],
        )
        return {"ok": True, "goal": public_goal(goal)}

    worker.reply = answer
    before = now_ms()
    deadline = format_ts(before + 7 * DAY_MS)
    body = {
        "kind": "category_mastery",
        "target": 5,
        "deadline": deadline,
        "params": {"category": "technical"},
    }
    response = await client.post("/v1/users/u-g/goals", json=body, headers=bearer("u-g"))
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["goal_id"], created["kind"], created["status"]) == (
        "goal-1",
        "category_mastery",
        "active",
    )
    assert created["deadline"] == deadline

    full = {"kind": "streak_maintenance", "target": 5, "deadline": before + 7 * DAY_MS}
    response = await client.post("/v1/users/u-g/goals", json=full, headers=bearer("u-g"))
    assert_error(response, 409, "too_many_goals")
    late = {"kind": "score_improvement", "target": 10, "deadline": deadline}
    response = await client.post("/v1/users/u-g/goals", json=late, headers=bearer("u-g"))
    assert_error(response, 422, "invalid_goal")

    commands = await worker.received(3)
    assert_command(
        commands[0],
        "goal_create",
        "u-g",
        before,
        kind="category_mastery",
        target=5,
        deadline_ms=parse_ts(deadline),
        params={"category": "technical"},
    )
    assert commands[1]["deadline_ms"] == before + 7 * DAY_MS  # epoch ms accepted as is
    assert commands[2]["params"] == {}


async def test_goals_list_shows_passed_deadlines_as_expired(client: httpx.AsyncClient, redis: Redis) -> None:
    now = now_ms()
    past = Goal("g-past", "practice_frequency", 5, {}, now - 10 * DAY_MS, now - DAY_MS, progress=2)
    live = Goal("g-live", "practice_frequency", 5, {}, now - 5 * DAY_MS, now + DAY_MS, progress=4)
    done = Goal(
        "g-done",
        "practice_frequency",
        2,
        {},
        now - 20 * DAY_MS,
        now - 15 * DAY_MS,
        2,
        "completed",
        now - 16 * DAY_MS,
    )
    view = {"challenge": None, "goals": {g.goal_id: g.to_dict() for g in (past, live, done)}}
    await redis.set(keys.user_growth("u-g"), orjson.dumps(view))

    listed = (await client.get("/v1/users/u-g/goals", headers=bearer("u-g"))).json()
    assert [(g["goal_id"], g["status"]) for g in listed] == [
        ("g-done", "completed"),
        ("g-past", "expired"),
        ("g-live", "active"),
    ]
    assert listed[2] == public_goal(live)
    assert listed[2]["percent"] == 80
    assert (await client.get("/v1/users/u-empty/goals", headers=bearer("u-empty"))).json() == []


async def test_a_goal_retried_with_its_request_id_is_created_once(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    def answer(command: dict[str, Any]) -> dict[str, Any]:
        goal_id = command["command_id"].rsplit(":", 1)[-1]
        goal = new_goal(
            goal_id, command["kind"], command["target"], command["deadline_ms"], command["ts"], {}
        )
        return {"ok": True, "goal": public_goal(goal)}

    worker.reply = answer
    body = {"kind": "practice_frequency", "target": 3, "deadline": now_ms() + DAY_MS, "request_id": "g-7"}
    first = await client.post("/v1/users/u-g/goals", json=body, headers=bearer("u-g"))
    again = await client.post("/v1/users/u-g/goals", json=body, headers=bearer("u-g"))
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json() and first.json()["goal_id"] == "g-7"
    (command,) = await worker.received(1)
    assert command["command_id"] == "u-g:goal:g-7"  # one command: the retry reused the answer


# ---------------------------------------------------------------------------------------------
# Trust: lapsed goals, a wiped Redis, bounded grants (the worker's own code behind the API)


async def test_lapsed_goals_do_not_lock_a_user_out(
    client: httpx.AsyncClient, worker: FakeWorker, redis: Redis
) -> None:
    """Ten goals whose deadline passed used to count as active forever: every new goal was 409."""
    growth = RealGrowth()
    past = now_ms() - 10 * DAY_MS
    for i in range(10):
        answer = growth.reply(
            {"command_id": f"u-late:goal:old-{i}", "type": "goal_create", "user_id": "u-late", "ts": past,
             "kind": "practice_frequency", "target": 3, "deadline_ms": past + DAY_MS, "params": {}}
        )  # fmt: skip
        assert answer is not None and answer["ok"] is True
    worker.reply = growth.reply
    body = {
        "kind": "practice_frequency",
        "target": 3,
        "deadline": now_ms() + 7 * DAY_MS,
        "request_id": "new-1",
    }
    response = await client.post("/v1/users/u-late/goals", json=body, headers=bearer("u-late"))
    assert response.status_code == 201, response.text
    assert response.json()["goal_id"] == "new-1" and response.json()["status"] == "active"

    await redis.set(keys.user_growth("u-late"), orjson.dumps(growth.table["u-late"].growth_view()))
    listed = (await client.get("/v1/users/u-late/goals", headers=bearer("u-late"))).json()
    assert sorted(g["status"] for g in listed) == ["active"] + ["expired"] * 10
    # The cap still holds for live goals: nine more fit, the eleventh live one does not.
    for i in range(9):
        more = {**body, "request_id": f"more-{i}"}
        assert (
            await client.post("/v1/users/u-late/goals", json=more, headers=bearer("u-late"))
        ).status_code == 201
    over = await client.post(
        "/v1/users/u-late/goals", json={**body, "request_id": "over"}, headers=bearer("u-late")
    )
    assert_error(over, 409, "too_many_goals")


async def test_a_wiped_redis_still_resolves_referral_codes(
    client: httpx.AsyncClient, worker: FakeWorker, redis: Redis
) -> None:
    growth = RealGrowth()
    worker.reply = growth.reply
    generated = await client.post("/v1/referrals/generate", json={}, headers=bearer("u-ref"))
    assert generated.status_code == 200, generated.text
    code = generated.json()["code"]

    await redis.flushall()
    missing = await client.post("/v1/referrals/claim", json={"code": code}, headers=bearer("u-new"))
    assert_error(missing, 404, "unknown_code")  # what a wipe did before the projection knew codes
    await growth.project(redis)
    claim = await client.post("/v1/referrals/claim", json={"code": code}, headers=bearer("u-new"))
    assert claim.status_code == 202, claim.text
    assert claim.json() == {"status": "claimed", "referrer_id": "u-ref"}
    history = await client.get("/v1/referrals/history", headers=bearer("u-ref"))
    assert history.json()["code"] == code  # the referral views came back too


async def test_grants_are_bounded_at_the_api_and_by_the_worker(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    growth = RealGrowth()
    worker.reply = growth.reply
    admin = bearer("ops", "admin")
    base = {"user_id": "u-rich", "amount": rewards.MAX_GRANT, "reason": "contest", "grant_id": "g-0"}
    too_big = await client.post(
        "/v1/admin/rewards/grant", json={**base, "amount": rewards.MAX_GRANT + 1}, headers=admin
    )
    assert_error(too_big, 422, "validation_error")
    long_reason = await client.post(
        "/v1/admin/rewards/grant", json={**base, "reason": "é" * 40}, headers=admin
    )
    assert_error(long_reason, 422, "validation_error")  # 40 characters, 80 bytes
    for i in range(rewards.MAX_BALANCE // rewards.MAX_GRANT):
        ok = await client.post("/v1/admin/rewards/grant", json={**base, "grant_id": f"g-{i}"}, headers=admin)
        assert ok.status_code == 200, ok.text
    capped = await client.post("/v1/admin/rewards/grant", json={**base, "grant_id": "g-last"}, headers=admin)
    assert_error(capped, 409, "balance_cap")
    commands_seen = await worker.received(rewards.MAX_BALANCE // rewards.MAX_GRANT + 1)
    assert {c["issued_by"] for c in commands_seen} == {"ops"}
    assert rewards.balance(growth.table["u-rich"].ledger, now_ms()) == rewards.MAX_BALANCE
