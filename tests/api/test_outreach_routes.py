"""The outreach queue: its store (infra/outreach_store.py) on one Redis and on a Redis Cluster,
and the admin routes (``GET /v1/admin/outreach``, ``POST .../assign``, ``POST .../resolve``) and
the ``admin:outreach`` websocket channel on the real Redis.

No delivery service runs here: tasks are created the way it creates them
(``outreach_store.create`` of a ``models.outreach.new_task``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, cast

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from infra import keys, outreach_store
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient
from models.channels import OUTREACH_CHANNEL
from models.outreach import (
    MAX_ASSIGNEE_LEN,
    MAX_NOTE_LEN,
    OutreachError,
    OutreachTask,
    assign,
    new_task,
    resolve,
)
from tests.api.conftest import LiveServer, bearer, recv_json, send_json
from tests.api.test_errors_and_auth import assert_error

ADMIN = bearer("ops-amani", "admin")
T0 = 1_795_305_600_000  # 2026-11-22T00:00:00Z
PUBLIC_FIELDS = {
    "id",
    "user_id",
    "created_at",
    "updated_at",
    "score",
    "level",
    "signals",
    "explanations",
    "summary",
    "last_interventions",
    "status",
    "assignee",
    "note",
    "history",
}
RISK = {"score": 91.5, "level": "critical", "signals": ["recency_d", "events_7d"]}
INBOX = [
    {"type": "gentle_reminder", "subject": "We miss you", "created_at": "2026-11-21T10:00:00Z", "read": False}
]


def task(task_id: str, created_ms: int = T0, user_id: str = "u-dora") -> OutreachTask:
    """A task as the delivery service builds it from a human_outreach notification."""
    words = ["Several days have passed since the last activity."]
    return new_task(task_id, user_id, created_ms, f"Reach out to student {user_id}", RISK, words, INBOX)


async def pushed(redis: RedisClient) -> list[dict[str, Any]]:
    """The data of every message on ``admin:outreach`` so far."""
    recovered, messages = await ChannelLog(redis).replay(OUTREACH_CHANNEL, 0)
    assert recovered or not messages
    for m in messages:
        assert m.type == "outreach_task"
    return [m.data for m in messages]


async def index_ids(redis: RedisClient, index: str) -> list[str]:
    """The ids of a sorted-set index, oldest first."""
    members = cast(list[bytes], await redis.zrange(index, 0, -1))
    return [m.decode() for m in members]


async def open_ids(redis: RedisClient) -> list[str]:
    return await index_ids(redis, keys.OUTREACH_OPEN)


async def done_ids(redis: RedisClient) -> list[str]:
    return await index_ids(redis, keys.OUTREACH_DONE)


def assigning(who: str, at_ms: int) -> Callable[[OutreachTask], OutreachTask]:
    def change(t: OutreachTask) -> OutreachTask:
        return assign(t, who, who, at_ms)

    return change


def resolving(who: str, at_ms: int, note: str = "called") -> Callable[[OutreachTask], OutreachTask]:
    def change(t: OutreachTask) -> OutreachTask:
        return resolve(t, note, who, at_ms)

    return change


class ReadTogether:
    """The client, except that the first ``parties`` reads of a task wait for each other: every
    writer has read the same version before any of them writes (the race, held open)."""

    def __init__(self, redis: RedisClient, parties: int) -> None:
        self._redis = redis
        self._barrier = asyncio.Barrier(parties)
        self._left = parties

    async def hget(self, key: str, field: str) -> Any:
        raw = await self._redis.hget(key, field)
        if self._left > 0:
            self._left -= 1
            await asyncio.wait_for(self._barrier.wait(), 10)
        return raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


class ChangedUnderfoot:
    """The client, except that another writer changes the task after every read of it."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self.reads = 0

    async def hget(self, key: str, field: str) -> Any:
        raw = await self._redis.hget(key, field)
        assert raw is not None
        self.reads += 1
        other = OutreachTask.from_dict(orjson.loads(raw)).to_dict()
        other["summary"] = f"edited elsewhere {self.reads}"
        await self._redis.hset(key, field, orjson.dumps(other))
        return raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)


# ---------------------------------------------------------------------------------------------
# The store, on one Redis and on a cluster


async def test_store_creates_a_task_once(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    first = task("n-1")
    assert await outreach_store.create(either_redis, channels, first) is True
    # A redelivered notification: the same id, even with other content, changes nothing.
    again = task("n-1", created_ms=T0 + 5000, user_id="u-other")
    assert await outreach_store.create(either_redis, channels, again) is False

    assert await outreach_store.get(either_redis, "n-1") == first
    assert await open_ids(either_redis) == ["n-1"]
    assert await either_redis.hlen(keys.OUTREACH_TASKS) == 1
    assert await pushed(either_redis) == [first.public()]  # one push, for the creation
    assert await outreach_store.get(either_redis, "n-nope") is None


async def test_store_update_of_an_unknown_task_is_not_found(either_redis: RedisClient) -> None:
    with pytest.raises(OutreachError) as info:
        await outreach_store.update(either_redis, ChannelLog(either_redis), "n-nope", assigning("a", T0))
    assert info.value.code == "not_found"
    assert await either_redis.hlen(keys.OUTREACH_TASKS) == 0


async def test_store_resolve_moves_the_task_from_open_to_done(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    await outreach_store.create(either_redis, channels, task("n-1"))
    await outreach_store.create(either_redis, channels, task("n-2", T0 + 1))

    assigned = await outreach_store.update(either_redis, channels, "n-1", assigning("amani", T0 + 10))
    assert assigned.status == "assigned"
    assert await open_ids(either_redis) == ["n-1", "n-2"]  # assigned is still unresolved
    assert await done_ids(either_redis) == []

    resolved = await outreach_store.update(either_redis, channels, "n-1", resolving("amani", T0 + 20))
    assert await outreach_store.get(either_redis, "n-1") == resolved
    assert (resolved.status, resolved.assignee, resolved.note) == ("resolved", "amani", "called")
    assert await open_ids(either_redis) == ["n-2"]
    assert await done_ids(either_redis) == ["n-1"]
    assert await either_redis.zscore(keys.OUTREACH_DONE, "n-1") == T0 + 20  # by when it was resolved

    with pytest.raises(OutreachError) as info:
        await outreach_store.update(either_redis, channels, "n-1", assigning("baraka", T0 + 30))
    assert info.value.code == "already_resolved"
    assert await outreach_store.get(either_redis, "n-1") == resolved
    # Every change was pushed, the refused one not.
    assert [(d["id"], d["status"]) for d in await pushed(either_redis)] == [
        ("n-1", "open"),
        ("n-2", "open"),
        ("n-1", "assigned"),
        ("n-1", "resolved"),
    ]


async def test_store_two_officers_assigning_at_once_both_land_one_on_top_of_the_other(
    either_redis: RedisClient,
) -> None:
    channels = ChannelLog(either_redis)
    await outreach_store.create(either_redis, channels, task("n-1"))
    racing = cast(RedisClient, ReadTogether(either_redis, 2))

    a, b = await asyncio.gather(
        outreach_store.update(racing, channels, "n-1", assigning("amani", T0 + 10)),
        outreach_store.update(racing, channels, "n-1", assigning("baraka", T0 + 10)),
    )

    stored = await outreach_store.get(either_redis, "n-1")
    assert stored is not None
    first, last = (a, b) if len(a.history) < len(b.history) else (b, a)
    # Both read the creation; the one that wrote second saw the first's write and retried on
    # top of it: nothing is lost, and the task has exactly one assignee, the last one.
    assert stored == last
    assert last.history[: len(first.history)] == first.history
    assert [h[1] for h in stored.history] == [
        "created",
        f"assigned to {first.assignee}",
        f"assigned to {last.assignee}",
    ]
    assert {first.assignee, last.assignee} == {"amani", "baraka"}
    assert stored.assignee == last.assignee and stored.status == "assigned"
    assert [d["assignee"] for d in await pushed(either_redis)] == [None, first.assignee, last.assignee]


async def test_store_many_officers_at_once_each_win_or_are_told_busy(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    await outreach_store.create(either_redis, channels, task("n-1"))
    officers = [f"officer-{i}" for i in range(8)]
    racing = cast(RedisClient, ReadTogether(either_redis, len(officers)))

    results = await asyncio.gather(
        *(outreach_store.update(racing, channels, "n-1", assigning(o, T0 + 10)) for o in officers),
        return_exceptions=True,
    )

    won = [r for r in results if isinstance(r, OutreachTask)]
    refused = [r for r in results if not isinstance(r, OutreachTask)]
    assert all(isinstance(r, OutreachError) and r.code == "busy" for r in refused), refused
    assert won
    stored = await outreach_store.get(either_redis, "n-1")
    assert stored is not None
    # Exactly the winners are in the history, each once, in the order they landed.
    landed = sorted(won, key=lambda t: len(t.history))
    assert [h[1] for h in stored.history] == ["created", *(f"assigned to {t.assignee}" for t in landed)]
    assert stored == landed[-1] and stored.assignee == landed[-1].assignee
    for earlier, later in itertools.pairwise(landed):
        assert later.history[: len(earlier.history)] == earlier.history


async def test_store_resolve_and_assign_racing_end_resolved(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    await outreach_store.create(either_redis, channels, task("n-1"))
    racing = cast(RedisClient, ReadTogether(either_redis, 2))

    resolved, assigned = await asyncio.gather(
        outreach_store.update(racing, channels, "n-1", resolving("amani", T0 + 10)),
        outreach_store.update(racing, channels, "n-1", assigning("baraka", T0 + 10)),
        return_exceptions=True,
    )

    stored = await outreach_store.get(either_redis, "n-1")
    assert isinstance(resolved, OutreachTask) and stored == resolved
    assert stored.status == "resolved"
    if isinstance(assigned, OutreachTask):  # the assignment landed first; resolved on top of it
        assert [h[1] for h in stored.history] == ["created", "assigned to baraka", "resolved"]
        assert stored.assignee == "baraka"
    else:  # the resolution landed first; the assignment, retried, found it resolved
        assert isinstance(assigned, OutreachError) and assigned.code == "already_resolved"
        assert [h[1] for h in stored.history] == ["created", "resolved"]
        assert stored.assignee is None
    assert await open_ids(either_redis) == []
    assert await done_ids(either_redis) == ["n-1"]


async def test_store_a_change_never_overwrites_a_version_it_did_not_see(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    await outreach_store.create(either_redis, channels, task("n-1"))
    underfoot = ChangedUnderfoot(either_redis)
    seen: list[str] = []

    def change(t: OutreachTask) -> OutreachTask:
        seen.append(t.summary)
        return resolve(t, "done", "amani", T0 + 10)

    with pytest.raises(OutreachError) as info:
        await outreach_store.update(cast(RedisClient, underfoot), channels, "n-1", change)

    assert info.value.code == "busy"
    assert underfoot.reads == len(seen) == outreach_store._CAS_TRIES
    stored = await outreach_store.get(either_redis, "n-1")
    assert stored is not None
    assert stored.summary == f"edited elsewhere {underfoot.reads}"  # the other writer's, untouched
    assert stored.status == "open"
    assert await open_ids(either_redis) == ["n-1"] and await done_ids(either_redis) == []
    assert len(await pushed(either_redis)) == 1  # the creation only


async def test_store_listing_is_newest_first_and_pages_back_in_time(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    for i in range(6):
        await outreach_store.create(either_redis, channels, task(f"n-{i}", T0 + i * 1000))
    await outreach_store.update(either_redis, channels, "n-4", assigning("amani", T0 + 10_000))
    await outreach_store.update(either_redis, channels, "n-1", resolving("amani", T0 + 20_000))
    await outreach_store.update(either_redis, channels, "n-3", resolving("amani", T0 + 30_000))

    async def ids(status: str, limit: int = 50, before: int | None = None) -> list[str]:
        # (time, "") reads strictly before that time: no id is below "".
        cursor = None if before is None else (before, "")
        return [t.id for t in await outreach_store.listing(either_redis, status, limit, cursor)]

    assert await ids("active") == ["n-5", "n-4", "n-2", "n-0"]
    assert await ids("open") == ["n-5", "n-2", "n-0"]
    assert await ids("assigned") == ["n-4"]
    assert await ids("resolved") == ["n-3", "n-1"]  # by when they were resolved
    assert await ids("active", limit=2) == ["n-5", "n-4"]
    assert await ids("active", limit=2, before=T0 + 4000) == ["n-2", "n-0"]  # created before n-4
    assert await ids("open", before=T0 + 5000) == ["n-2", "n-0"]
    assert await ids("active", before=T0) == []
    assert await ids("resolved", before=T0 + 30_000) == ["n-1"]


async def test_store_listing_a_status_skips_past_a_page_of_others(either_redis: RedisClient) -> None:
    channels = ChannelLog(either_redis)
    for i in range(70):
        await outreach_store.create(either_redis, channels, task(f"n-{i:02}", T0 + i))
    for i in range(5, 70):  # the 65 newest are taken: more than one page of the index
        await outreach_store.update(either_redis, channels, f"n-{i:02}", assigning("amani", T0 + 100))

    found = await outreach_store.listing(either_redis, "open", 3)
    assert [t.id for t in found] == ["n-04", "n-03", "n-02"]
    assert len(await outreach_store.listing(either_redis, "assigned", 200)) == 65


# ---------------------------------------------------------------------------------------------
# The routes

ROUTES = [
    ("GET", "/v1/admin/outreach", None),
    ("POST", "/v1/admin/outreach/n-1/assign", {}),
    ("POST", "/v1/admin/outreach/n-1/resolve", {"note": "x"}),
]


async def get_list(client: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/v1/admin/outreach{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    assert_error(await client.request(method, path, json=body), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_users_are_refused(
    client: httpx.AsyncClient, redis: Redis, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))
    response = await client.request(method, path, json=body, headers=bearer("u-dora"))
    assert_error(response, 403, "forbidden")
    stored = await outreach_store.get(redis, "n-1")
    assert stored is not None and stored.status == "open" and len(stored.history) == 1


async def test_an_empty_queue(client: httpx.AsyncClient) -> None:
    for status in ("active", "open", "assigned", "resolved"):
        assert await get_list(client, f"?status={status}") == {"tasks": [], "next_before": None}
    assert await get_list(client) == {"tasks": [], "next_before": None}


async def test_a_created_task_is_listed_with_its_public_fields(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    created = task("n-1")
    await outreach_store.create(redis, ChannelLog(redis), created)

    body = await get_list(client)

    assert body["next_before"] is None
    [shown] = body["tasks"]
    assert set(shown) == PUBLIC_FIELDS
    assert shown == created.public()
    assert shown["created_at"] == shown["updated_at"] == "2026-11-22T00:00:00Z"
    assert (shown["score"], shown["level"], shown["signals"]) == (
        91.5,
        "critical",
        ["recency_d", "events_7d"],
    )
    assert shown["explanations"] == ["Several days have passed since the last activity."]
    assert shown["last_interventions"] == INBOX
    assert (shown["status"], shown["assignee"], shown["note"]) == ("open", None, None)
    assert shown["history"] == [{"at": "2026-11-22T00:00:00Z", "action": "created", "by": "engine"}]
    assert (await get_list(client, "?status=open"))["tasks"] == [shown]
    assert (await get_list(client, "?status=assigned"))["tasks"] == []
    assert (await get_list(client, "?status=resolved"))["tasks"] == []


async def test_assign_defaults_to_the_caller(client: httpx.AsyncClient, redis: Redis) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))

    response = await client.post("/v1/admin/outreach/n-1/assign", json={}, headers=ADMIN)

    assert response.status_code == 200, response.text
    shown = response.json()
    assert set(shown) == PUBLIC_FIELDS
    assert (shown["status"], shown["assignee"]) == ("assigned", "ops-amani")
    assert [(h["action"], h["by"]) for h in shown["history"]] == [
        ("created", "engine"),
        ("assigned to ops-amani", "ops-amani"),
    ]
    assert shown["updated_at"] > shown["created_at"]
    assert await get_list(client, "?status=assigned") == {"tasks": [shown], "next_before": None}
    assert (await get_list(client, "?status=open"))["tasks"] == []


async def test_assign_to_someone_else(client: httpx.AsyncClient, redis: Redis) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))
    response = await client.post("/v1/admin/outreach/n-1/assign", json={"assignee": "baraka"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["assignee"] == "baraka"
    assert response.json()["history"][-1]["by"] == "ops-amani"


async def test_resolve_takes_a_task_off_the_active_list(client: httpx.AsyncClient, redis: Redis) -> None:
    channels = ChannelLog(redis)
    await outreach_store.create(redis, channels, task("n-1"))
    await outreach_store.create(redis, channels, task("n-2", T0 + 1000))
    assert (await client.post("/v1/admin/outreach/n-1/assign", json={}, headers=ADMIN)).status_code == 200

    response = await client.post(
        "/v1/admin/outreach/n-1/resolve", json={"note": "Called her; back on Monday."}, headers=ADMIN
    )

    assert response.status_code == 200, response.text
    shown = response.json()
    assert (shown["status"], shown["assignee"], shown["note"]) == (
        "resolved",
        "ops-amani",
        "Called her; back on Monday.",
    )
    assert shown["history"][-1]["action"] == "resolved"
    assert [t["id"] for t in (await get_list(client))["tasks"]] == ["n-2"]
    assert (await get_list(client, "?status=resolved"))["tasks"] == [shown]


async def test_resolving_twice_is_a_conflict(client: httpx.AsyncClient, redis: Redis) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))
    first = await client.post("/v1/admin/outreach/n-1/resolve", json={"note": "done"}, headers=ADMIN)
    assert first.status_code == 200, first.text

    again = await client.post("/v1/admin/outreach/n-1/resolve", json={"note": "again"}, headers=ADMIN)
    assert_error(again, 409, "already_resolved")
    late = await client.post("/v1/admin/outreach/n-1/assign", json={}, headers=ADMIN)
    assert_error(late, 409, "already_resolved")
    stored = await outreach_store.get(redis, "n-1")
    assert stored is not None and stored.note == "done" and stored.assignee is None


async def test_an_unknown_task_is_not_found(client: httpx.AsyncClient) -> None:
    for action, body in (("assign", {}), ("resolve", {"note": ""})):
        response = await client.post(f"/v1/admin/outreach/n-nope/{action}", json=body, headers=ADMIN)
        assert_error(response, 404, "not_found")


async def test_a_resolve_without_a_note_is_allowed(client: httpx.AsyncClient, redis: Redis) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))
    response = await client.post("/v1/admin/outreach/n-1/resolve", json={}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["note"]) == ("resolved", None)


@pytest.mark.parametrize(
    ("action", "body", "code"),
    [
        ("resolve", {"note": "n" * (MAX_NOTE_LEN + 1)}, "validation_error"),
        ("resolve", {"note": 5}, "validation_error"),
        ("resolve", {"note": "x", "by": "someone"}, "validation_error"),
        ("assign", {"assignee": "a" * (MAX_ASSIGNEE_LEN + 1)}, "validation_error"),
        ("assign", {"assignee": ""}, "validation_error"),
        ("assign", {"assignee": "   "}, "invalid_assignee"),
        ("assign", {"assignee": "two\nlines"}, "invalid_assignee"),
    ],
    ids=["long_note", "number_note", "extra_field", "long_assignee", "empty_assignee", "blank", "newline"],
)
async def test_an_invalid_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, redis: Redis, action: str, body: dict[str, Any], code: str
) -> None:
    created = task("n-1")
    await outreach_store.create(redis, ChannelLog(redis), created)
    response = await client.post(f"/v1/admin/outreach/n-1/{action}", json=body, headers=ADMIN)
    assert_error(response, 422, code)
    assert await outreach_store.get(redis, "n-1") == created


async def test_the_longest_note_is_accepted(client: httpx.AsyncClient, redis: Redis) -> None:
    await outreach_store.create(redis, ChannelLog(redis), task("n-1"))
    note = "n" * MAX_NOTE_LEN
    response = await client.post("/v1/admin/outreach/n-1/resolve", json={"note": note}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["note"] == note


@pytest.mark.parametrize("query", ["?status=closed", "?limit=0", "?limit=201", "?limit=x"])
async def test_bad_list_parameters_are_refused(client: httpx.AsyncClient, query: str) -> None:
    assert_error(await client.get(f"/v1/admin/outreach{query}", headers=ADMIN), 422, "validation_error")


@pytest.mark.parametrize("cursor", ["-1", "12", "x:n-1", ":n-1", "12:"])
async def test_a_cursor_not_made_by_the_list_is_refused(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get(f"/v1/admin/outreach?before={cursor}", headers=ADMIN)
    assert_error(response, 422, "invalid_cursor")


async def test_the_list_pages_with_next_before(client: httpx.AsyncClient, redis: Redis) -> None:
    channels = ChannelLog(redis)
    for i in range(5):
        await outreach_store.create(redis, channels, task(f"n-{i}", T0 + i * 1000))

    page1 = await get_list(client, "?limit=2")
    assert [t["id"] for t in page1["tasks"]] == ["n-4", "n-3"]
    assert page1["next_before"] == f"{T0 + 3000}:n-3"
    page2 = await get_list(client, f"?limit=2&before={page1['next_before']}")
    assert [t["id"] for t in page2["tasks"]] == ["n-2", "n-1"]
    page3 = await get_list(client, f"?limit=2&before={page2['next_before']}")
    assert [t["id"] for t in page3["tasks"]] == ["n-0"]
    assert page3["next_before"] is None


async def test_the_resolved_list_pages_by_resolution_time(client: httpx.AsyncClient, redis: Redis) -> None:
    channels = ChannelLog(redis)
    for i in range(3):
        await outreach_store.create(redis, channels, task(f"n-{i}", T0 + i))
    # Resolved in another order than created: n-0 last.
    for n, at in (("n-2", T0 + 10_000), ("n-1", T0 + 20_000), ("n-0", T0 + 30_000)):
        await outreach_store.update(redis, channels, n, resolving("amani", at))

    page1 = await get_list(client, "?status=resolved&limit=2")
    assert [t["id"] for t in page1["tasks"]] == ["n-0", "n-1"]
    assert page1["next_before"] == f"{T0 + 20_000}:n-1"
    page2 = await get_list(client, f"?status=resolved&limit=2&before={page1['next_before']}")
    assert [t["id"] for t in page2["tasks"]] == ["n-2"]


async def test_paging_never_skips_tasks_created_in_the_same_millisecond(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    channels = ChannelLog(redis)
    for i in range(3):  # one sweep: every critical student's task has the sweep's time
        await outreach_store.create(redis, channels, task(f"n-{i}", T0, user_id=f"u-{i}"))

    seen: list[str] = []
    query = "?limit=2"
    for _ in range(5):
        page = await get_list(client, query)
        seen += [t["id"] for t in page["tasks"]]
        if page["next_before"] is None:
            break
        query = f"?limit=2&before={page['next_before']}"
    assert sorted(seen) == ["n-0", "n-1", "n-2"]


# ---------------------------------------------------------------------------------------------
# admin:outreach, live


async def subscribe(ws: Any, channel: str) -> dict[str, Any]:
    await send_json(ws, {"op": "subscribe", "channel": channel})
    reply: dict[str, Any] = await recv_json(ws)
    return reply


async def test_admins_see_tasks_live_as_they_are_created_and_assigned(
    server: LiveServer, redis: Redis
) -> None:
    async with server.connect_as("ops-amani", "admin") as ws:
        assert await subscribe(ws, OUTREACH_CHANNEL) == {
            "op": "subscribed",
            "channel": OUTREACH_CHANNEL,
            "recovered": False,
        }
        created = task("n-1")
        assert await outreach_store.create(redis, ChannelLog(redis), created)
        message = await recv_json(ws)
        assert (message["channel"], message["type"]) == (OUTREACH_CHANNEL, "outreach_task")
        assert message["data"] == created.public()

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as http:
            response = await http.post("/v1/admin/outreach/n-1/assign", json={}, headers=ADMIN)
        assert response.status_code == 200, response.text
        change = await recv_json(ws)
        assert (change["channel"], change["type"]) == (OUTREACH_CHANNEL, "outreach_task")
        assert change["id"] == message["id"] + 1
        assert change["data"] == response.json()
        assert (change["data"]["status"], change["data"]["assignee"]) == ("assigned", "ops-amani")


async def test_users_may_not_subscribe_to_the_outreach_channel(server: LiveServer) -> None:
    async with server.connect_as("u-dora") as ws:
        reply = await subscribe(ws, OUTREACH_CHANNEL)
        assert reply["op"] == "error" and reply["code"] == "forbidden", reply
        # The connection stays usable for what the user may read.
        assert (await subscribe(ws, "user:u-dora"))["op"] == "subscribed"
