"""The landing routes of a mail's or a push's links (api/routes/tracking.py) and the Web Push
subscription routes (api/routes/push.py), on the real Redis and broker.

Links are minted as the delivery service mints them (infra/tracking.py ``Links``, the API's
secret); what the routes publish is read back from per-test topics.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from infra import keys
from infra.tracking import LINK_TTL_MS, Link, Links, LinkSigner
from models.career import CareerState
from models.delivery import DeliveryRequest
from models.events import UserProfile, parse_profile
from tests.api.conftest import SECRET, bearer, end_offset, read_topic
from tests.api.test_errors_and_auth import assert_error
from tests.conftest import create_topic


def now_ms() -> int:
    return int(time.time() * 1000)


def request(nid: str = "n-1", user: str = "u-1") -> DeliveryRequest:
    return DeliveryRequest(
        notification_id=nid, user_id=user, type="gentle_reminder", channels=("EMAIL",),
        subject="We miss you", body="Five minutes today.", cta="Practice now",
        template="gentle_reminder", variant="b", deliver_at_ms=now_ms(),
    )  # fmt: skip


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


LINKS = Links(LinkSigner(SECRET), "http://api.test")
#: A mail app's user agent (httpx's own reads as an HTTP library: models/scanners.py).
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
#: When a mail whose link a person follows was sent: past the gateways' first seconds.
A_MINUTE_AGO = 60_000


@pytest.fixture
async def topics_(kafka_bootstrap: str, unique: str) -> dict[str, str]:
    names = {name: f"{name}-{unique}" for name in ("events", "profiles", "outcomes")}
    for topic in names.values():
        await create_topic(kafka_bootstrap, topic)
    return names


@pytest.fixture
async def tracked(make_client: Callable[..., Any], topics_: dict[str, str]) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(
        events_topic=topics_["events"], profiles_topic=topics_["profiles"], outcomes_topic=topics_["outcomes"]
    )
    client.headers["user-agent"] = BROWSER
    return client


# ---------------------------------------------------------------------------------------------
# Opens and clicks


async def test_the_open_pixel_records_one_open_of_that_notification(
    tracked: httpx.AsyncClient, kafka_bootstrap: str, topics_: dict[str, str]
) -> None:
    url = LINKS.url("open", request(), "EMAIL", now_ms() - A_MINUTE_AGO)
    for _ in range(3):  # a mail client loading the image again
        response = await tracked.get(path_of(url))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/gif"
        assert response.content.startswith(b"GIF89a") and "no-store" in response.headers["cache-control"]
    records = await read_topic(kafka_bootstrap, topics_["events"], 1)
    events = [orjson.loads(r.value) for r in records]
    assert {e["event_id"] for e in events} == {"open:n-1"}  # however often, one event id
    assert events[0]["type"] == "notification_opened" and events[0]["user_id"] == "u-1"
    assert records[0].key == b"u-1" and events[0]["props"] == {"notification_id": "n-1", "via": "email"}


async def test_a_click_records_a_click_and_lands_on_a_page(
    tracked: httpx.AsyncClient, kafka_bootstrap: str, topics_: dict[str, str]
) -> None:
    response = await tracked.get(path_of(LINKS.url("click", request(), "PUSH", now_ms())))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    (record,) = await read_topic(kafka_bootstrap, topics_["events"], 1)
    event = orjson.loads(record.value)
    assert (event["type"], event["event_id"], event["props"]["via"]) == (
        "notification_clicked",
        "click:n-1",
        "push",
    )


async def test_machine_opens_and_clicks_are_set_aside(
    tracked: httpx.AsyncClient, kafka_bootstrap: str, topics_: dict[str, str]
) -> None:
    """A gateway's open on arrival, a scanner that followed the hidden link, a declared bot: none
    is counted; a person's click on a mail read later is (the one event on the topic)."""
    just_sent = LINKS.url("open", request("n-soon"), "EMAIL", now_ms())
    assert (await tracked.get(path_of(just_sent))).status_code == 200  # the pixel is still served
    trap = LINKS.url("trap", request("n-trap"), "EMAIL", now_ms() - A_MINUTE_AGO)
    assert (await tracked.get(path_of(trap))).status_code == 204
    for kind in ("open", "click"):
        response = await tracked.get(
            path_of(LINKS.url(kind, request("n-trap"), "EMAIL", now_ms() - A_MINUTE_AGO))
        )
        assert response.status_code == 200
    bot = LINKS.url("click", request("n-bot"), "EMAIL", now_ms() - A_MINUTE_AGO)
    response = await tracked.get(
        path_of(bot), headers={"user-agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}
    )
    assert response.status_code == 200
    person = LINKS.url("click", request("n-person"), "EMAIL", now_ms() - A_MINUTE_AGO)
    assert (await tracked.get(path_of(person))).status_code == 200
    records = await read_topic(kafka_bootstrap, topics_["events"], 1)
    assert [orjson.loads(r.value)["event_id"] for r in records] == ["click:n-person"]
    # Read past the one: the end offset shows nothing else was ever produced.
    assert await end_offset(kafka_bootstrap, topics_["events"]) == 1


def forged(token: str) -> str:
    payload, mac = token.split(".")
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["u"] = "u-victim"
    other = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    return f"{other}.{mac}"


@pytest.mark.parametrize("route", ["open", "click", "unsubscribe"])
async def test_forged_expired_or_foreign_links_record_nothing(
    route: str, tracked: httpx.AsyncClient, kafka_bootstrap: str, topics_: dict[str, str]
) -> None:
    good = LINKS.url(route, request(), "EMAIL", now_ms()).rsplit("/", 1)[1]  # type: ignore[arg-type]
    expired = LinkSigner(SECRET).token(Link(route, "n-1", "u-1", "EMAIL", now_ms() - 1))  # type: ignore[arg-type]
    other_secret = LinkSigner("another-secret-entirely-0123456789").token(
        Link(route, "n-1", "u-1", "EMAIL", now_ms() + LINK_TTL_MS)  # type: ignore[arg-type]
    )
    method = "POST" if route == "unsubscribe" else "GET"
    for token in (forged(good), expired, other_secret, "not-a-token", "a.b", "x" * 2000):
        response = await tracked.request(method, f"/v1/t/{route}/{token}")
        assert response.status_code in (404, 422), (token, response.status_code)
    # A click link does not count as an open, nor an open link as a click.
    if route != "unsubscribe":
        wrong = LINKS.url("open" if route == "click" else "click", request(), "EMAIL", now_ms())
        response = await tracked.get(f"/v1/t/{route}/{wrong.rsplit('/', 1)[1]}")
        assert response.status_code in (200, 404)
    for topic in topics_.values():
        assert await end_offset(kafka_bootstrap, topic) == 0


# ---------------------------------------------------------------------------------------------
# One-click unsubscribe


async def hold_profile(redis: Redis, user: str, channels: list[str]) -> None:
    state = CareerState(user_id=user)
    profile = {"user_id": user, "display_name": "Amina", "email": "amina@example.org", "skills": ["sql"]}
    profile["notification_prefs"] = {"channels": channels, "digest": "weekly"}
    state.adopt_profile(parse_profile(orjson.dumps(profile), now_ms()), now_ms() - 1000)
    await redis.set(keys.user_profile(user), orjson.dumps(state.profile_view()))


async def test_a_get_of_the_unsubscribe_link_only_asks(
    tracked: httpx.AsyncClient, redis: Redis, kafka_bootstrap: str, topics_: dict[str, str]
) -> None:
    await hold_profile(redis, "u-1", ["EMAIL", "IN_APP"])
    response = await tracked.get(path_of(LINKS.url("unsubscribe", request(), "EMAIL", now_ms())))
    assert response.status_code == 200 and '<form method="post">' in response.text
    assert await end_offset(kafka_bootstrap, topics_["profiles"]) == 0


async def test_the_one_click_post_turns_the_channel_off_and_counts_against_the_variant(
    make_client: Callable[..., Any],
    topics_: dict[str, str],
    redis: Redis,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api import profile_writes

    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 0.2)  # no worker applies it here
    client: httpx.AsyncClient = await make_client(
        events_topic=topics_["events"], profiles_topic=topics_["profiles"], outcomes_topic=topics_["outcomes"]
    )
    await hold_profile(redis, "u-1", ["EMAIL", "PUSH"])
    url = path_of(LINKS.url("unsubscribe", request(), "EMAIL", now_ms()))
    # RFC 8058: the mail client POSTs this body, without cookies or a token.
    response = await client.post(url, content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 200 and "email" in response.text
    (record,) = await read_topic(kafka_bootstrap, topics_["profiles"], 1)
    written = parse_profile(record.value, now_ms())
    assert isinstance(written, UserProfile) and record.key == b"u-1"
    assert written.notification_prefs["channels"] == ["PUSH"]
    assert written.notification_prefs["digest"] == "weekly"  # the rest of the settings kept
    assert (written.email, written.display_name, written.skills) == ("amina@example.org", "Amina", ("sql",))
    (report,) = await read_topic(kafka_bootstrap, topics_["outcomes"], 1)
    body = orjson.loads(report.value)
    assert body == {
        "id": "dlv:unsubscribed:EMAIL:n-1", "kind": "delivery", "result": "unsubscribed", "channel": "EMAIL",
        "type": "", "template": "gentle_reminder", "variant": "b",
    }  # fmt: skip


async def test_unsubscribing_from_the_last_channel_leaves_the_inbox(
    make_client: Callable[..., Any],
    topics_: dict[str, str],
    redis: Redis,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api import profile_writes

    monkeypatch.setattr(profile_writes, "APPLIED_WAIT_S", 0.2)
    client: httpx.AsyncClient = await make_client(
        events_topic=topics_["events"], profiles_topic=topics_["profiles"], outcomes_topic=topics_["outcomes"]
    )
    await hold_profile(redis, "u-1", ["SMS"])
    response = await client.post(path_of(LINKS.url("unsubscribe", request(), "SMS", now_ms())))
    assert response.status_code == 200
    (record,) = await read_topic(kafka_bootstrap, topics_["profiles"], 1)
    assert parse_profile(record.value, now_ms()).notification_prefs["channels"] == ["IN_APP"]


# ---------------------------------------------------------------------------------------------
# Web Push subscriptions


def browser_subscription(endpoint: str = "https://fcm.googleapis.com/fcm/send/abc123") -> dict[str, Any]:
    p256dh = base64.urlsafe_b64encode(b"\x04" + bytes(range(64))).rstrip(b"=").decode()
    auth = base64.urlsafe_b64encode(bytes(16)).rstrip(b"=").decode()
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}


async def test_the_vapid_key_is_a_p256_point_and_stable(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/push/vapid-key", headers=bearer("u-1"))
    second = await client.get("/v1/push/vapid-key", headers=bearer("u-2"))
    assert first.status_code == 200 and first.json() == second.json()
    raw = base64.urlsafe_b64decode(first.json()["public_key"] + "==")
    assert len(raw) == 65 and raw[0] == 4
    assert (await client.get("/v1/push/vapid-key")).status_code == 401


async def test_a_browser_subscribes_once_lists_only_its_service_and_unsubscribes(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    path, headers = "/v1/users/u-1/push-subscriptions", bearer("u-1")
    created = await client.post(path, json=browser_subscription(), headers=headers)
    assert created.status_code == 201, created.text
    again = await client.post(path, json=browser_subscription(), headers=headers)
    assert again.json()["id"] == created.json()["id"]  # the same browser replaces, not adds
    listed = (await client.get(path, headers=headers)).json()["subscriptions"]
    # The endpoint is a capability: shown as its service only.
    assert listed == [{"id": created.json()["id"], "service": "fcm.googleapis.com"}]
    stored = await redis.hgetall(keys.user_push_subscriptions("u-1"))
    assert len(stored) == 1
    assert (await client.delete(f"{path}/{created.json()['id']}", headers=headers)).status_code == 204
    assert_error(
        await client.delete(f"{path}/{created.json()['id']}", headers=headers), 404, "subscription_not_found"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://fcm.googleapis.com/fcm/send/x",  # not https
        "https://127.0.0.1:6379/",  # our own Redis
        "https://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "https://evil.example/fcm.googleapis.com",  # the service's name in the path
        "https://fcm.googleapis.com.evil.example/x",  # ... or as a prefix of another host
        "https://user:pw@fcm.googleapis.com/x",
        "https://fcm.googleapis.com/x y",
        "file:///etc/passwd",
    ],
)
async def test_endpoints_off_the_browser_push_services_are_refused(
    endpoint: str, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v1/users/u-1/push-subscriptions", json=browser_subscription(endpoint), headers=bearer("u-1")
    )
    assert_error(response, 422, "invalid_subscription")


async def test_subscriptions_are_per_user_and_bounded(client: httpx.AsyncClient) -> None:
    path = "/v1/users/u-1/push-subscriptions"
    assert_error(
        await client.post(path, json=browser_subscription(), headers=bearer("u-2")), 403, "forbidden"
    )
    for i in range(10):
        endpoint = f"https://updates.push.services.mozilla.com/wpush/v2/{i}"
        response = await client.post(
            path, json=browser_subscription(endpoint), headers=bearer("u-1", "admin")
        )
        assert response.status_code == 201
    extra = browser_subscription("https://updates.push.services.mozilla.com/wpush/v2/extra")
    assert_error(
        await client.post(path, json=extra, headers=bearer("u-1", "admin")), 409, "too_many_subscriptions"
    )
