"""Real protocol peers for the delivery service's tests, each on loopback:

* ``SmtpPeer``: an SMTP server (aiosmtpd's ``Controller``, in a thread of its own) that keeps
  every mail it accepts, and refuses recipients on demand (550 for good, 451 a number of times);
* ``SmsPeer``: an HTTP server in Africa's Talking's shape (``POST`` a form, ``apiKey`` header);
* ``PushPeer``: a Web Push service that checks the VAPID signature (RFC 8292) and decrypts each
  message with the browser's keys (RFC 8291, aes128gcm), as the browser would.

``Harness`` builds the service the way ``elimu deliver`` does (``delivery.main.build_channels``)
for tests that call ``handle_batch`` directly; ``Tail`` reads what the service wrote to a topic.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import http_ece
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiosmtpd.controller import Controller
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from redis.asyncio import Redis

from delivery.channels import Channel
from delivery.config import DeliveryConfig, SmsProvider, SmtpServer
from delivery.deferred import Parked
from delivery.ledger import Ledger
from delivery.main import build_channels
from delivery.service import DeliveryService
from infra import keys, topics
from infra.kafka import ensure_topics
from infra.net import free_port
from infra.producer import EventProducer
from infra.settings import Settings
from infra.signing import RecordSigner
from infra.tracking import Links, LinkSigner
from infra.vapid import private_pem, public_key_b64
from models.contact_verification import CodeSealer
from models.events import format_ts
from models.push import PushSubscription, parse_subscription
from streams.records import Record
from tests.conftest import wait_until

SECRET = "test-secret-for-delivery-tests-0123456789abcdef"
SMS_USERNAME = "sandbox"
SMS_API_KEY = "atsk_0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://pulse.example.org"
MAIL_FROM = "Elimu Pulse <no-reply@pulse.example.org>"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------
# SMTP


class SmtpPeer:
    """An SMTP server that keeps what it accepts. ``refuse``: addresses answered 550 at RCPT;
    ``tempfail[address] = n``: answered 451 the first ``n`` times."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        #: Each mail's bytes as they came over the wire.
        self.raw: list[bytes] = []
        self.refuse: set[str] = set()
        self.tempfail: dict[str, int] = {}
        self.rcpt_attempts: Counter[str] = Counter()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, server_hostname="smtp.test")

    @property
    def server(self) -> SmtpServer:
        return SmtpServer.from_url(f"smtp://127.0.0.1:{self.port}")

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        self.rcpt_attempts[address] += 1
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        left = self.tempfail.get(address, 0)
        if left > 0:
            self.tempfail[address] = left - 1
            return f"451 4.7.1 <{address}>: Recipient address rejected: try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        self.raw.append(raw)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 2.0.0 Ok: queued"

    def to(self, address: str) -> list[EmailMessage]:
        """The mails accepted for ``address`` (by the To header)."""
        return [m for m in self.messages if any(a.addr_spec == address for a in m["To"].addresses)]


# ---------------------------------------------------------------------------------------------
# SMS (Africa's Talking's messaging API)


class SmsPeer:
    """``status_for[number]``: the recipient status code answered for it (101 otherwise);
    ``fail_http``: how many requests to answer HTTP 500 first."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict[str, str]] = []
        self.requests = 0
        self.errors: list[str] = []
        self.status_for: dict[str, int] = {}
        self.fail_http = 0
        self._runner: web.AppRunner | None = None

    @property
    def provider(self) -> SmsProvider:
        return SmsProvider(
            url=f"http://127.0.0.1:{self.port}/version1/messaging", username=SMS_USERNAME, api_key=SMS_API_KEY
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/version1/messaging", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("apiKey") != SMS_API_KEY:
            self.errors.append(f"apiKey header {request.headers.get('apiKey')!r}")
            return web.Response(status=401, text="The supplied authentication is invalid")
        if self.fail_http > 0:
            self.fail_http -= 1
            return web.Response(status=500, text="Internal Server Error")
        if not request.content_type.startswith("application/x-www-form-urlencoded"):
            self.errors.append(f"content type {request.content_type!r}")
            return web.Response(status=400, text="Request is missing required form field")
        form = {k: str(v) for k, v in (await request.post()).items()}
        missing = [f for f in ("username", "to", "message") if not form.get(f)]
        if missing or form["username"] != SMS_USERNAME:
            self.errors.append(f"form {form!r}")
            return web.Response(status=400, text="Request is missing required form field")
        to = form["to"]
        status = self.status_for.get(to, 101)
        if status == 101:
            self.received.append(form)
            recipient = {
                "statusCode": 101, "number": to, "status": "Success",
                "cost": "KES 0.8000", "messageId": f"ATXid_{len(self.received)}",
            }  # fmt: skip
        else:
            recipient = {
                "statusCode": status, "number": to, "status": "InvalidPhoneNumber",
                "cost": "0", "messageId": "None",
            }  # fmt: skip
        body = {
            "SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000", "Recipients": [recipient]}
        }
        return web.json_response(body, status=201)

    def to(self, number: str) -> list[dict[str, str]]:
        return [f for f in self.received if f["to"] == number]


# ---------------------------------------------------------------------------------------------
# Web Push


@dataclass
class Browser:
    """A browser's side of a subscription: the keys it decrypts its messages with."""

    name: str
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    subscription: PushSubscription


@dataclass
class PushPeer:
    """A push service: checks each request's VAPID ``Authorization``, decrypts its payload with
    the addressed browser's keys and keeps it; ``gone``: browsers answered 410."""

    port: int = field(default_factory=free_port)
    #: The VAPID public key the service must sign with (base64url), when known.
    expected_key: str | None = None
    browsers: dict[str, Browser] = field(default_factory=dict)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    gone: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hosts(self) -> tuple[str, ...]:
        return (f"127.0.0.1:{self.port}",)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def browser(self) -> Browser:
        """A new browser subscribed to this service, its subscription checked as the API does."""
        name = uuid.uuid4().hex[:16]
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        data = {
            "endpoint": f"{self.origin}/push/{name}",
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }
        browser = Browser(name, key, auth, parse_subscription(data, self.hosts))
        self.browsers[name] = browser
        return browser

    def payloads(self, browser: Browser) -> list[dict[str, Any]]:
        return self.received.get(browser.name, [])

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests[name] += 1
        browser = self.browsers.get(name)
        if browser is None:
            return web.Response(status=404)
        problem = self.check_vapid(request.headers.get("Authorization", ""))
        if problem:
            self.errors.append(problem)
            return web.Response(status=401, text=problem)
        if request.headers.get("Content-Encoding") != "aes128gcm":
            self.errors.append(f"Content-Encoding {request.headers.get('Content-Encoding')!r}")
            return web.Response(status=400)
        if not request.headers.get("TTL", "").isdigit():
            self.errors.append(f"TTL {request.headers.get('TTL')!r}")
            return web.Response(status=400)
        if name in self.gone:
            return web.Response(status=410, text="push subscription has unsubscribed or expired")
        body = await request.read()
        try:
            plain = http_ece.decrypt(
                body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
            )
            payload = orjson.loads(plain)
        except Exception as exc:
            self.errors.append(f"decrypt: {exc!r}")
            return web.Response(status=400)
        self.received.setdefault(name, []).append(payload)
        return web.Response(status=201, headers={"Location": f"{self.origin}/m/{uuid.uuid4().hex}"})

    def check_vapid(self, header: str) -> str | None:
        """Why ``header`` is not a valid VAPID authorization for this service (RFC 8292), or None."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return f"Authorization scheme {scheme!r}"
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, k = fields.get("t", ""), fields.get("k", "")
        if token.count(".") != 2 or not k:
            return "Authorization lacks t= or k="
        if self.expected_key is not None and k != self.expected_key:
            return "signed with another key than the service's VAPID key"
        head, claims_b64, sig_b64 = token.split(".")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(k))
            sig = unb64url(sig_b64)
            if len(sig) != 64:
                return f"ES256 signature of {len(sig)} bytes"
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            public.verify(der, f"{head}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
            header_obj = orjson.loads(unb64url(head))
            claims = orjson.loads(unb64url(claims_b64))
        except InvalidSignature:
            return "bad JWT signature"
        except ValueError as exc:
            return f"malformed JWT: {exc}"
        if header_obj.get("alg") != "ES256":
            return f"JWT alg {header_obj.get('alg')!r}"
        if claims.get("aud") != self.origin:
            return f"JWT aud {claims.get('aud')!r}, not {self.origin!r}"
        exp = claims.get("exp")
        if not isinstance(exp, int) or not time.time() < exp <= time.time() + 24 * 3600:
            return f"JWT exp {exp!r} not within the next 24 h"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return f"JWT sub {claims.get('sub')!r}"
        return None


# ---------------------------------------------------------------------------------------------
# Records, profiles, subscriptions


def notification(
    uid: str,
    nid: str,
    channels: Sequence[str] = ("IN_APP", "EMAIL", "PUSH", "SMS"),
    *,
    deliver_at_ms: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A `notifications` record as the worker writes it (streams/risk_pipeline.py)."""
    at = now_ms() if deliver_at_ms is None else deliver_at_ms
    value: dict[str, Any] = {
        "notification_id": nid,
        "user_id": uid,
        "type": "streak_risk",
        "channels": list(channels),
        "subject": "Your 6-day streak ends tonight",
        "body": "Habari Amani — one short lesson keeps your streak alive.\nIt takes five minutes.",
        "cta": "Keep my streak",
        "template": "streak_risk.v2",
        "variant": "B",
        "source": "risk",
        "urgency": "high",
        "created_at": format_ts(at),
        "deliver_at": format_ts(at),
        "idempotency_key": f"risk:{uid}:streak_risk:20000",
    }
    value.update(overrides)
    return value


def record(
    value: dict[str, Any] | bytes,
    key: str,
    *,
    topic: str = topics.NOTIFICATIONS,
    offset: int = 0,
    secret: str | None = SECRET,
) -> Record:
    """A consumed record of ``topic``, signed with ``secret`` (None: unsigned)."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    kb = key.encode()
    headers = () if secret is None else tuple(RecordSigner(secret).headers(topic, kb, raw))
    return Record(topic, 0, offset, kb, raw, now_ms(), headers)


@dataclass
class User:
    uid: str
    email: str | None
    phone: str | None
    display_name: str = "Amani Wanjirū"
    channels: tuple[str, ...] = ("IN_APP", "EMAIL", "PUSH", "SMS")

    def view(self) -> dict[str, Any]:
        """Like ``CareerState.profile_view``."""
        return {
            "user_id": self.uid,
            "display_name": self.display_name,
            "timezone": "Africa/Nairobi",
            "location": "Nairobi",
            "skills": ["python"],
            "experience_years": 2,
            "education": None,
            "interests": [],
            "salary_expectation": None,
            "currency": None,
            "email": self.email,
            "phone": self.phone,
            "notification_prefs": {"channels": list(self.channels), "job_alerts": True},
            "updated_at": now_ms(),
        }


async def save_profile(redis: Redis, user: User) -> None:
    await redis.set(keys.user_profile(user.uid), orjson.dumps(user.view()))


async def save_subscription(redis: Redis, uid: str, sub: PushSubscription) -> None:
    """As ``POST /v1/users/{id}/push-subscriptions`` stores it (api/routes/push.py)."""
    value = orjson.dumps({**sub.to_dict(), "created_ms": now_ms()})
    await redis.hset(keys.user_push_subscriptions(uid), sub.id, value)


# ---------------------------------------------------------------------------------------------
# Reading what the service wrote


@dataclass(frozen=True)
class Out:
    topic: str
    key: bytes | None
    raw: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def value(self) -> dict[str, Any]:
        data = orjson.loads(self.raw)
        assert isinstance(data, dict)
        return data


class Tail:
    """The records written to ``topic`` after ``start``, every partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Out] = []
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.topics()  # metadata
        partitions = self._consumer.partitions_for_topic(self.topic) or {0}
        self._tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_end(*self._tps)
        for tp in self._tps:  # resolve the end now, before the test writes anything
            await self._consumer.position(tp)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Out]:
        batch = await self._consumer.getmany(*self._tps, timeout_ms=100)
        for tp in self._tps:
            self.records.extend(
                Out(self.topic, m.key, m.value or b"", tuple(m.headers or ())) for m in batch.get(tp, [])
            )
        return self.records

    async def everything(self) -> list[Out]:
        """Every record written so far (up to the end offsets as of now): for asserting what a
        finished ``handle_batch`` wrote, including that it wrote nothing more."""
        ends = await self._consumer.end_offsets(self._tps)

        async def caught_up() -> bool:
            await self.poll()
            for tp in self._tps:
                if await self._consumer.position(tp) < ends[tp]:
                    return False
            return True

        await wait_until(caught_up, timeout=15, what=f"reading {self.topic} to its end")
        return self.records

    async def wait_for(
        self, predicate: Callable[[list[Out]], bool], what: str, timeout: float = 20
    ) -> list[Out]:
        async def met() -> bool:
            return predicate(await self.poll())

        await wait_until(met, timeout=timeout, what=what)
        return self.records


def reports_of(records: Sequence[Out], nid: str) -> list[dict[str, Any]]:
    """The delivery reports of notification ``nid``, in the order written."""
    return [r.value for r in records if str(r.value.get("id", "")).endswith(f":{nid}")]


def letters_of(records: Sequence[Out], uid: str) -> list[dict[str, Any]]:
    """The dead letters of records keyed by ``uid``."""
    return [r.value for r in records if r.value.get("key") == uid]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def smtp_peer() -> Iterator[SmtpPeer]:
    peer = SmtpPeer()
    peer.controller.start()
    yield peer
    peer.controller.stop()


@pytest.fixture
async def sms_peer() -> AsyncIterator[SmsPeer]:
    peer = SmsPeer()
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
def settings(redis_url: str, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(kafka=kafka_bootstrap, redis=redis_url, data_dir=tmp_path, secret_override=SECRET)


@pytest.fixture
async def push_peer(settings: Settings) -> AsyncIterator[PushPeer]:
    # The key the service will sign with: the one kept in the data dir (infra/vapid.py).
    peer = PushPeer(expected_key=public_key_b64(private_pem(None, settings.data_dir)))
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
def config(smtp_peer: SmtpPeer, sms_peer: SmsPeer, push_peer: PushPeer) -> DeliveryConfig:
    return DeliveryConfig(
        smtp=smtp_peer.server,
        mail_from=MAIL_FROM,
        sms=sms_peer.provider,
        vapid_subject="mailto:ops@pulse.example.org",
        push_hosts=push_peer.hosts,
        public_url=PUBLIC_URL,
        timeout_s=5.0,
    )


@pytest.fixture
async def outcomes(kafka_bootstrap: str) -> AsyncIterator[Tail]:
    """Delivery reports written from now on."""
    await ensure_topics(kafka_bootstrap, 1)
    tail = Tail(kafka_bootstrap, topics.INTERVENTION_OUTCOMES)
    await tail.start()
    yield tail
    await tail.stop()


@pytest.fixture
async def dead_letters(kafka_bootstrap: str, outcomes: Tail) -> AsyncIterator[Tail]:
    """Dead letters written from now on."""
    tail = Tail(kafka_bootstrap, topics.DEAD_LETTER)
    await tail.start()
    yield tail
    await tail.stop()


class Harness:
    """Delivery services built as ``elimu deliver`` builds one, sharing a real producer."""

    def __init__(self, settings: Settings, redis: Redis, producer: EventProducer) -> None:
        self.settings = settings
        self.redis = redis
        self.producer = producer
        self.sleeps: list[float] = []
        self._channels: list[Channel] = []

    async def _sleep(self, seconds: float) -> None:
        """Retries and pacing without the wait (what they would have waited is kept)."""
        self.sleeps.append(seconds)

    def service(
        self,
        config: DeliveryConfig,
        owner: str = "deliver-test-a",
        *,
        parked: Parked | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> DeliveryService:
        links = Links(LinkSigner(SECRET), config.public_url)
        channels = build_channels(config, links, self.settings, self.redis)
        self._channels.extend(channels.values())
        return DeliveryService(
            redis=self.redis,
            producer=self.producer,
            signer=RecordSigner(SECRET),
            channels=channels,
            ledger=Ledger(self.redis, owner),
            rates={name: config.rate_of(name) for name in channels},
            concurrency=config.concurrency,
            sleep=self._sleep,
            clock_ms=clock_ms,
            parked=parked,
            codes=CodeSealer(SECRET),
        )

    async def close(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()


@pytest.fixture
async def harness(settings: Settings, redis: Redis, kafka_bootstrap: str) -> AsyncIterator[Harness]:
    producer = EventProducer(kafka_bootstrap, signer=RecordSigner(SECRET))
    await producer.start()
    h = Harness(settings, redis, producer)
    yield h
    await h.close()
    await producer.stop()
