"""``elimu deliver``: one delivery service process (scale out by starting more: they share the
consumer group, and Kafka splits the `notifications` partitions between them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError

from delivery import metrics
from delivery.bounces import BounceHandler, start_bounce_listener
from delivery.channels import Channel
from delivery.config import DeliveryConfig
from delivery.deferred import Parked
from delivery.email import EmailChannel
from delivery.ledger import Ledger
from delivery.outreach import OutreachChannel
from delivery.push import WebPushChannel, vapid_key
from delivery.receipts import ReceiptIndex
from delivery.service import GROUP, DeliveryService
from delivery.sms import SmsChannel, TwilioSmsChannel
from infra import keys, topics
from infra.channels import ChannelLog
from infra.kafka_auth import client_security
from infra.metrics_relay import publish_snapshot
from infra.producer import EventProducer
from infra.redis_conn import RedisClient, connect
from infra.settings import Settings
from infra.signing import RecordSigner
from infra.tracking import Links, LinkSigner
from models.contact_verification import CodeSealer
from models.interventions.policy import STAFF_CHANNEL
from models.receipts import BounceAddresses, VerpSigner, africastalking_callback_url, callback_token
from streams.records import Record

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
#: Records per batch: sends run concurrently within one, offsets are committed after it.
MAX_BATCH = 200


def build_channels(
    config: DeliveryConfig, links: Links, settings: Settings, redis: RedisClient
) -> dict[str, Channel]:
    """EMAIL and SMS when their provider is configured; PUSH always (its VAPID key is generated
    when none is configured, and a user without a subscription is simply not pushed)."""
    channels: dict[str, Channel] = {}
    if config.smtp is not None:
        channels["EMAIL"] = EmailChannel(
            config.smtp, config.mail_from, links, config.timeout_s,
            bounces=bounce_addresses(config, settings), suppressed=ReceiptIndex(redis).suppressed,
        )  # fmt: skip
    if config.sms is not None:
        if config.sms.kind == "twilio":
            channels["SMS"] = TwilioSmsChannel(config.sms, config.timeout_s, config.sms_status_callback)
        else:
            channels["SMS"] = SmsChannel(config.sms, config.timeout_s)

    async def forget(user_id: str, subscription_id: str) -> None:
        await redis.hdel(keys.user_push_subscriptions(user_id), subscription_id)

    channels[STAFF_CHANNEL] = OutreachChannel(redis, ChannelLog(redis))
    vapid = vapid_key(config, settings.data_dir)
    channels["PUSH"] = WebPushChannel(vapid, config.vapid_subject, links, forget, config.timeout_s)
    return channels


def bounce_addresses(config: DeliveryConfig, settings: Settings) -> BounceAddresses | None:
    """The mails' VERP envelope senders, when a bounce domain is configured."""
    if config.bounce_domain is None:
        return None
    return BounceAddresses(VerpSigner(settings.secret()), config.bounce_domain)


def callback_url_fingerprint(public_url: str, secret: str) -> str:
    """Africa's Talking's callback URL with its token cut to 6 characters (30 of its 160 bits):
    enough to tell whether the dashboard holds the current one, too little to post to it."""
    token = callback_token(secret)
    return africastalking_callback_url(public_url, secret).replace(token, token[:6] + "…")


async def serve(
    settings: Settings,
    config: DeliveryConfig,
    stop: asyncio.Event,
    *,
    topic: str = topics.NOTIFICATIONS,
    group: str = GROUP,
) -> None:
    """Run until ``stop`` is set. ``topic`` and ``group`` are the contract's (tests use their own)."""
    service_id = os.environ.get("ELIMU_WORKER_NAME") or f"deliver-{socket.gethostname()}-{os.getpid()}"
    redis = connect(settings.redis_url)
    secret = settings.secret()
    # Signs the delivery reports (an internal topic) for the analytics agent.
    producer = EventProducer(settings.kafka_bootstrap, signer=RecordSigner(secret))
    links = Links(LinkSigner(secret), config.public_url)
    channels = build_channels(config, links, settings, redis)
    service = DeliveryService(
        redis=redis,
        producer=producer,
        # The topic read must be signed even when it is not `notifications` (a test's own).
        signer=RecordSigner(secret, topics.SIGNED_TOPICS | {topic}),
        channels=channels,
        ledger=Ledger(redis, service_id),
        rates={name: config.rate_of(name) for name in channels},
        concurrency=config.concurrency,
        parked=Parked(redis),
        codes=CodeSealer(secret),
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # A batch's sends are bounded (SEND_DEADLINE_S each, per channel in parallel), but a
        # batch held up by a provider must not cost the group its member.
        max_poll_interval_ms=30 * 60 * 1000,
        **client_security(),
    )
    bounces = bounce_addresses(config, settings)
    listener: asyncio.Server | None = None
    if config.bounce_listen is not None and bounces is not None:
        # First: a port that cannot be bound stops the service before it consumes anything.
        handler = BounceHandler(bounces, ReceiptIndex(redis), producer)
        listener = await start_bounce_listener(handler, *config.bounce_listen)
    await consumer.start()
    await producer.start()
    if config.sms is not None and config.sms.kind == "africastalking":
        # It signs nothing: the URL is the credential, so the log shows only its fingerprint.
        log.info(
            "Africa's Talking delivery reports: the dashboard's callback URL is %s "
            "(`elimu sms-callback-url` prints it whole)",
            callback_url_fingerprint(config.public_url, secret),
        )
    beat = asyncio.create_task(_heartbeat(redis, service_id))
    log.info("delivery service %s up: channels %s", service_id, sorted(channels) or "none")
    try:
        while not stop.is_set():
            await _send_parked(service)
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_BATCH)
            records = [
                Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp, tuple(m.headers or ()))
                for messages in batches.values()
                for m in messages
            ]
            if not records:
                continue
            await _until_handled(service, records, stop)
            try:
                await consumer.commit()
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance took the partitions: their new owner redelivers the batch and the
                # ledger skips what was sent.
                log.warning("commit after a batch failed (%s); the ledger dedups the redelivery", exc)
    finally:
        beat.cancel()
        if listener is not None:
            listener.close()
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        with contextlib.suppress(Exception):
            await redis.hdel(keys.SERVICE_HEARTBEATS, service_id)
            await redis.aclose()


async def _send_parked(service: DeliveryService) -> None:
    """What quiet hours held back and is due (at most a second late: the poll's timeout). A
    failure leaves the records parked: their lease lapses and they come due again."""
    try:
        await service.handle_parked()
    except Exception:
        log.exception("sending the notifications quiet hours held back failed; they stay parked")


async def _until_handled(service: DeliveryService, records: list[Record], stop: asyncio.Event) -> None:
    """Handle the batch, again while Redis or Kafka fail under it (with backoff, until ``stop``):
    the ledger skips what a failed pass already sent, and nothing is committed before it passes."""
    delay = 0.5
    while True:
        try:
            await service.handle_batch(records)
            return
        except Exception:
            if stop.is_set():
                raise
            log.exception("a batch of %d notifications failed; trying again in %.1fs", len(records), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _heartbeat(redis: RedisClient, service_id: str) -> None:
    while True:
        with contextlib.suppress(Exception):
            await redis.hset(keys.SERVICE_HEARTBEATS, service_id, str(time.time()))
            await publish_snapshot(redis, service_id, metrics.REGISTRY)
        await asyncio.sleep(HEARTBEAT_S)


def run_deliverer(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DeliveryConfig.from_env(settings.api_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, config, stop)

    asyncio.run(main())
