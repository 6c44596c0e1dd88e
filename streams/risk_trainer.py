"""The single risk trainer, and the broadcast that gives every worker its model.

One agent consumes `elimu-risk-labels` (one partition, so one worker at a time) and learns the
labels in topic order: deterministic, so the same labels give the same model wherever it runs.
It publishes to the compacted `elimu-broadcast` topic (streams/broadcast.py):
- key `risk-scorer`: the model without its evaluation buffer (a few kB), at most every
  `BROADCAST_S`; every worker follows the topic (`infra.feed.TopicFeed`) and swaps it in;
- key `risk-checkpoint`: the whole trainer (model, evaluation, the next label offset, the ids of
  recent labels), at most every `CHECKPOINT_S`.
Both are plain data read with type and bounds checks (`decode_checkpoint`, models/risk_codec.py),
never pickles: a record on Kafka must not be able to run code in the worker that reads it.

Restore. A worker that gains the labels partition reads the latest checkpoint, then replays the
labels from the checkpoint's offset up to the first one Faust hands it (`infra.feed.read_range`):
Faust may have committed past the checkpoint, and those labels would otherwise be lost. Label
ids ((user, scored_at)) already learnt are skipped, so a label a user partition re-sent after a
crash is learnt once. Checkpoints are therefore independent of Faust's commits, and rare.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra import keys
from infra.feed import read_range
from infra.kafka import BROADCAST_TOPIC
from infra.signing import RecordSigner
from models.events import MAX_ID_LEN
from models.risk import RiskModel
from models.risk_codec import (
    MAX_INT,
    MAX_MODEL_BYTES,
    IncompatibleModel,
    need,
    read_int,
    read_list,
    read_object,
    read_users,
)
from models.risk_state import RiskSettings
from streams import metrics
from streams.broadcast import CHECKPOINT_KEY, SCORER_KEY, Broadcasts
from streams.pipeline import Send
from streams.records import Record
from streams.risk import RISK_LABELS_TOPIC, parse_resolution

log = logging.getLogger(__name__)

BROADCAST_S = 5.0
CHECKPOINT_S = 30.0
#: Evaluation pairs kept by the trainer (exact AUC over the most recent labels).
EVAL_PAIRS = 20_000
#: Label ids remembered to drop re-sent labels; re-sends come within a crash's replay.
SEEN_LABELS = 200_000

#: A `risk-checkpoint` record is a header line, `elimu-risk-checkpoint {"format": 1,
#: "next_offset": N, "seen": {"user": [...], "scored_at": [...]}}` (the ids of recent labels, as
#: two columns), then `RiskModel.to_bytes()`.
CHECKPOINT_FORMAT = 1
_CHECKPOINT_MAGIC = b"elimu-risk-checkpoint "
#: The header's worst case: SEEN_LABELS ids of MAX_ID_LEN bytes whose every character JSON
#: escapes in two bytes (`"`, `\\`), plus quotes, commas and a timestamp each.
MAX_CHECKPOINT_HEADER = SEEN_LABELS * (2 * MAX_ID_LEN + 32) + 1024


def encode_checkpoint(model: RiskModel, next_offset: int, seen: Iterable[tuple[str, int]]) -> bytes:
    """Raises ValueError for a model no reader would accept (see `RiskModel.to_bytes`)."""
    ids = list(seen)
    columns = {"user": [user for user, _ in ids], "scored_at": [at for _, at in ids]}
    header = {"format": CHECKPOINT_FORMAT, "next_offset": next_offset, "seen": columns}
    return _CHECKPOINT_MAGIC + orjson.dumps(header) + b"\n" + model.to_bytes()


def decode_checkpoint(raw: bytes) -> tuple[RiskModel, int, OrderedDict[tuple[str, int], None]]:
    """(model, next offset, seen label ids), or IncompatibleModel and nothing else: all or
    nothing, since a model without its offset would learn every label again."""
    if len(raw) > MAX_CHECKPOINT_HEADER + MAX_MODEL_BYTES:
        raise IncompatibleModel(f"risk checkpoint is {len(raw)} bytes; too large")
    end = raw.find(b"\n", 0, MAX_CHECKPOINT_HEADER)
    if end < 0 or not raw.startswith(_CHECKPOINT_MAGIC):
        raise IncompatibleModel("not a risk checkpoint (missing header)")
    try:
        header = read_object(orjson.loads(raw[len(_CHECKPOINT_MAGIC) : end]), "checkpoint header")
    except orjson.JSONDecodeError as exc:
        raise IncompatibleModel(f"unreadable risk checkpoint header: {exc}") from exc
    written = header.get("format")
    if type(written) is not int or written != CHECKPOINT_FORMAT:
        raise IncompatibleModel(f"risk checkpoint format {written!r} is not {CHECKPOINT_FORMAT}")
    next_offset = read_int(need(header, "next_offset"), "next_offset", 0, MAX_INT)
    columns = read_object(need(header, "seen"), "seen")
    users = read_users(read_list(need(columns, "user"), "seen.user", SEEN_LABELS), "seen user")
    times = read_list(need(columns, "scored_at"), "seen.scored_at", SEEN_LABELS)
    if len(times) != len(users) or not all(type(t) is int and 0 <= t <= MAX_INT for t in times):
        raise IncompatibleModel(f"seen.scored_at must be {len(users)} integers in [0, {MAX_INT}]")
    seen = OrderedDict.fromkeys(zip(users, times, strict=True))
    return RiskModel.from_bytes(raw[end + 1 :]), next_offset, seen


class RiskTrainer:
    def __init__(
        self,
        settings: RiskSettings,
        broadcast: Broadcasts,
        send: Send,
        bootstrap: str,
        redis: Redis,
        caught_up: Any,
        *,
        signer: RecordSigner,
    ) -> None:
        self.settings = settings
        self.broadcast = broadcast
        self.send = send
        self.bootstrap = bootstrap
        self.redis = redis
        self.caught_up = caught_up
        self.signer = signer
        self.model: RiskModel | None = None
        self.next_offset = 0
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.dirty = False
        self.broadcast_at = 0.0
        self.checkpoint_at = 0.0
        self.checkpointed_offset = 0

    def forget(self) -> None:
        """The labels partition went to another worker: restore afresh if it comes back."""
        self.model = None

    async def handle(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self.model is None:
            await self._restore(records[0].offset)
        for rec in records:
            self._learn(rec.offset, rec.value)
        await self.publish_due()

    # --- learning ----------------------------------------------------------------------------

    def _learn(self, offset: int, value: bytes | None) -> None:
        assert self.model is not None
        if offset < self.next_offset:
            return  # learnt before the checkpoint this trainer restored
        self.next_offset = offset + 1
        try:
            resolution = parse_resolution(orjson.loads(value or b""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # any malformed record
            log.error("risk label at offset %d skipped: %s", offset, exc)
            return
        label_id = (resolution.pending.user_id, resolution.pending.scored_at_ms)
        if label_id in self.seen:
            return
        self.seen[label_id] = None
        if len(self.seen) > SEEN_LABELS:
            self.seen.popitem(last=False)
        self.model.ingest(resolution)
        self.model.advance(resolution.resolved_at_ms)
        self.dirty = True

    # --- restore -------------------------------------------------------------------------------

    async def _restore(self, first_offset: int) -> None:
        if not await self.caught_up():
            log.warning("risk model topic not caught up; restoring from what was read")
        self.model = RiskModel(
            self.settings.horizon_ms, grace_ms=self.settings.grace_ms, max_eval_pairs=EVAL_PAIRS
        )
        self.next_offset, self.seen = 0, OrderedDict()
        raw = self.broadcast.checkpoint
        if raw is not None:
            try:
                self.model, self.next_offset, self.seen = decode_checkpoint(raw)
            except IncompatibleModel as exc:
                log.error("risk checkpoint unusable (%s); training from the start of the labels", exc)
        self.checkpointed_offset = self.next_offset
        tail = await read_range(
            self.bootstrap, TopicPartition(RISK_LABELS_TOPIC, 0), self.next_offset, first_offset, self.signer
        )
        for offset, value in tail:
            self._learn(offset, value)
        log.info(
            "risk trainer restored: %d labels learnt, %d replayed from offset %d",
            self.model.n_learned,
            len(tail),
            self.checkpointed_offset,
        )

    # --- publishing ----------------------------------------------------------------------------

    async def publish_due(self) -> None:
        """Broadcast the scorer and checkpoint when due (also called by a timer when idle)."""
        model = self.model
        if model is None:
            return
        now = time.monotonic()
        if self.dirty and now - self.broadcast_at >= BROADCAST_S:
            self.dirty = False
            self.broadcast_at = now
            try:
                scorer = model.to_bytes(scoring_only=True)
            except ValueError as exc:  # no reader would take it: keep the last good one out there
                log.error("risk scorer not published: %s", exc)
            else:
                await self.send(BROADCAST_TOPIC, SCORER_KEY, scorer, 0)
            await self._report(model)
        if self.next_offset > self.checkpointed_offset and now - self.checkpoint_at >= CHECKPOINT_S:
            self.checkpoint_at = now
            self.checkpointed_offset = self.next_offset
            try:
                checkpoint = encode_checkpoint(model, self.next_offset, self.seen)
            except ValueError as exc:  # a restore then replays from the last good checkpoint
                log.error("risk checkpoint not written: %s", exc)
                return
            await self.send(BROADCAST_TOPIC, CHECKPOINT_KEY, checkpoint, 0)

    async def _report(self, model: RiskModel) -> None:
        evaluation = model.evaluation()
        metrics.RISK_MODEL_LABELS.set(model.n_learned)
        for name, field in (("online", "roc_auc"), ("recency", "baseline_roc_auc")):
            if evaluation[field] is not None:
                metrics.RISK_AUC.labels(name).set(evaluation[field])
        if evaluation["brier"] is not None:
            metrics.RISK_BRIER.set(evaluation["brier"])
        evaluation["labels_learnt"] = model.n_learned
        evaluation["pending_deferred"] = model.deferred_count
        try:
            await self.redis.set(keys.RISK_EVALUATION, orjson.dumps(evaluation))
        except (RedisError, OSError) as exc:  # a report for operators; the next one will do
            metrics.SERVING_ERRORS.inc()
            log.warning("risk evaluation not written: Redis unavailable (%s)", exc)
