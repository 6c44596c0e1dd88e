"""STAFF: a ``human_outreach`` notification becomes a task in the outreach queue
(models/outreach.py), with the student's risk and its signals in words and their last
notifications, as they are when it arrives. The task's id is the notification's: a redelivered
notification finds its task and changes nothing."""

from __future__ import annotations

import orjson

from delivery.channels import Recipient, Sent
from infra import keys, outreach_store
from infra.channels import ChannelLog
from infra.redis_conn import RedisClient
from models.delivery import DeliveryRequest
from models.interventions.policy import STAFF_CHANNEL
from models.outreach import new_task
from models.risk_explain import explain


class OutreachChannel:
    name = STAFF_CHANNEL

    def __init__(self, redis: RedisClient, channels: ChannelLog) -> None:
        self.redis = redis
        self.channels = channels

    async def send(self, request: DeliveryRequest, recipient: Recipient) -> Sent:
        uid = request.user_id
        raw_risk, raw_inbox = await self.redis.mget([keys.user_risk(uid), keys.user_notifications(uid)])
        risk = orjson.loads(raw_risk) if raw_risk else {}
        inbox = (orjson.loads(raw_inbox) if raw_inbox else {}).get("notifications") or []
        words = [e["text"] for e in explain(risk.get("contributions") or {})]
        summary = ". ".join(part for part in (request.subject, request.body) if part)
        task = new_task(request.notification_id, uid, request.deliver_at_ms, summary, risk, words, inbox)
        await outreach_store.create(self.redis, self.channels, task)
        return Sent(provider_id=task.id, result="delivered")

    async def close(self) -> None:
        return None
