"""The single risk trainer, and the broadcast that gives every worker its model.

One agent consumes `elimu-risk-labels` (one partition, so one worker at a time) and learns the
labels in topic order: deterministic, so the same labels give the same model wherever it runs.
It publishes to the compacted `elimu-broadcast` topic (streams/broadcast.py):
- key `risk-scorer`: the model without its evaluation buffer (a few kB), at most every
  `BROADCAST_S`; every worker follows the topic (`infra.feed.TopicFeed`) and swaps it in;
- keys `risk-checkpoint/<i>` then `risk-checkpoint`: the whole trainer (model, evaluation, the
  next label offset, digests of recent label ids), zlib-compressed and split into chunks of at
  most 192 KiB under a manifest written last (streams/chunks.py), at most every
  `RiskSettings.checkpoint_s` (`ELIMU_RISK_CHECKPOINT_S`, 30 s).
  At scale (200k label ids, 20k evaluation pairs, 14k retained labels waiting for their
  deadline) it is ~3.2 MB in 17 chunks; as one record it was 9 MB, which the worker refuses to
  send (over 256 KiB) and Kafka too (over 1 MiB), so it was never stored.
Both are plain data read with type and bounds checks (`decode_checkpoint`, models/risk_codec.py),
never pickles: a record on Kafka must not be able to run code in the worker that reads it.

Restore. A worker that gains the labels partition reads the latest checkpoint, then replays the
labels from the checkpoint's offset up to the first one Faust hands it (`infra.feed.read_range`):
Faust may have committed past the checkpoint, and those labels would otherwise be lost. Label
ids ((user, scored_at)) already learnt are skipped, so a label a user partition re-sent after a
crash is learnt once. Checkpoints are therefore independent of Faust's commits, and rare. A
checkpoint that does not join and verify (a trainer killed between its chunks and its manifest,
a chunk missing or replaced, a forged manifest) is refused whole, logged, and the labels are
replayed from offset 0: slower, never wrong while the labels topic still holds them all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import orjson
from aiokafka import TopicPartition
from redis.exceptions import RedisError

from infra import keys, topics
from infra.feed import read_range
from infra.redis_conn import RedisClient
from infra.signing import RecordSigner
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.risk import RiskModel
from models.risk_codec import (
    MAX_INT,
    MAX_MODEL_BYTES,
    IncompatibleModel,
    need,
    pack_bytes,
    read_int,
    read_object,
    unpack_bytes,
)
from models.risk_state import RiskSettings
from streams import metrics
from streams.broadcast import CHECKPOINT_KEY, SCORER_KEY, Broadcasts
from streams.chunks import ChunkError, split
from streams.delivery import Send
from streams.records import Record
from streams.risk import parse_resolution
from streams.runner import SliceBase, Upstream

log = logging.getLogger(__name__)

BROADCAST_S = 5.0
#: Evaluation pairs kept by the trainer (exact AUC over the most recent labels).
EVAL_PAIRS = 20_000
#: Label ids remembered to drop re-sent labels; re-sends come within a crash's replay.
SEEN_LABELS = 200_000

#: The checkpoint, before compression: a header line `elimu-risk-checkpoint {"format": 2,
#: "next_offset": N, "seen": {"n": K, "ids": base64}}` (the digests of the K most recent label
#: ids, oldest first), then `RiskModel.to_bytes()`. Format 1 held the ids as JSON strings: 200k
#: of them were ~4.6 MB, half the checkpoint; as 8-byte digests they are 1.6 MB, incompressible.
CHECKPOINT_FORMAT = 2
_CHECKPOINT_MAGIC = b"elimu-risk-checkpoint "
#: A label id's digest: 64 bits. Among SEEN_LABELS ids the chance of any two colliding is
#: ~1e-9 (and a collision only drops one label); making a given label collide with one's own
#: ids takes ~2^64 tries (a second preimage), so a user cannot suppress another's label.
DIGEST_BYTES = 8
#: The header's worst case: SEEN_LABELS digests in base64, the offset and the field names.
MAX_CHECKPOINT_HEADER = 4 * (SEEN_LABELS * DIGEST_BYTES + 2) // 3 + 1024
MAX_CHECKPOINT_BYTES = MAX_CHECKPOINT_HEADER + MAX_MODEL_BYTES
#: zlib level 6: at scale the model's rows (feature values that repeat, ids, close timestamps)
#: shrink ~3x; level 1 gave 10% more bytes for half the time, in a thread either way.
_ZLIB_LEVEL = 6


def label_digest(user_id: str, scored_at_ms: int) -> bytes:
    """A label id (user, scored_at) as DIGEST_BYTES: what the trainer remembers to drop re-sends.
    The separator cannot occur in an id (ids are printable, models.events.check_id)."""
    return hashlib.blake2b(f"{scored_at_ms}\x00{user_id}".encode(), digest_size=DIGEST_BYTES).digest()


def checkpoint_payload(model: RiskModel, next_offset: int, seen: Iterable[bytes]) -> bytes:
    """The checkpoint uncompressed. Raises ValueError for a model no reader would accept (see
    `RiskModel.to_bytes`)."""
    ids = b"".join(seen)
    count = len(ids) // DIGEST_BYTES
    header = {
        "format": CHECKPOINT_FORMAT,
        "next_offset": next_offset,
        "seen": {"n": count, "ids": pack_bytes(ids)},
    }
    return _CHECKPOINT_MAGIC + orjson.dumps(header) + b"\n" + model.to_bytes()


def compress(payload: bytes) -> bytes:
    return zlib.compress(payload, _ZLIB_LEVEL)


def encode_checkpoint(model: RiskModel, next_offset: int, seen: Iterable[bytes]) -> bytes:
    """The checkpoint as written (compressed); the trainer compresses in a thread instead."""
    return compress(checkpoint_payload(model, next_offset, seen))


def _decompress(raw: bytes) -> bytes:
    """At most MAX_CHECKPOINT_BYTES, whatever the input claims: a forged stream that would
    inflate past it is refused after that much output, not held whole."""
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(raw, MAX_CHECKPOINT_BYTES)
    except zlib.error as exc:
        raise IncompatibleModel(f"risk checkpoint is not zlib data: {exc}") from None
    if inflater.unconsumed_tail:
        raise IncompatibleModel(f"risk checkpoint inflates past {MAX_CHECKPOINT_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise IncompatibleModel("risk checkpoint is a truncated or padded zlib stream")
    return payload


def decode_checkpoint(raw: bytes) -> tuple[RiskModel, int, OrderedDict[bytes, None]]:
    """(model, next offset, seen label digests), or IncompatibleModel and nothing else: all or
    nothing, since a model without its offset would learn every label again."""
    payload = _decompress(raw)
    end = payload.find(b"\n", 0, MAX_CHECKPOINT_HEADER)
    if end < 0 or not payload.startswith(_CHECKPOINT_MAGIC):
        raise IncompatibleModel("not a risk checkpoint (missing header)")
    try:
        header = read_object(orjson.loads(payload[len(_CHECKPOINT_MAGIC) : end]), "checkpoint header")
    except orjson.JSONDecodeError as exc:
        raise IncompatibleModel(f"unreadable risk checkpoint header: {exc}") from exc
    written = header.get("format")
    if type(written) is not int or written != CHECKPOINT_FORMAT:
        raise IncompatibleModel(f"risk checkpoint format {written!r} is not {CHECKPOINT_FORMAT}")
    next_offset = read_int(need(header, "next_offset"), "next_offset", 0, MAX_INT)
    columns = read_object(need(header, "seen"), "seen")
    count = read_int(need(columns, "n"), "seen.n", 0, SEEN_LABELS)
    ids = unpack_bytes(need(columns, "ids"), "seen.ids", count * DIGEST_BYTES)
    seen = OrderedDict.fromkeys(ids[i : i + DIGEST_BYTES] for i in range(0, len(ids), DIGEST_BYTES))
    if len(seen) != count:
        raise IncompatibleModel("seen label digests repeat")
    return RiskModel.from_bytes(payload[end + 1 :]), next_offset, seen


class RiskTrainer(SliceBase):
    """The risk-trainer slice (streams/runner.py). It learns in ``deliver``: its first batch
    restores the checkpoint from the broadcast topic (I/O, so not in ``process``), and its state is
    that checkpoint, written by its own timer (``publish_due``), not a per-batch changelog."""

    name = agent = "risk-trainer"
    topics = frozenset({topics.RISK_LABELS})

    def __init__(
        self,
        settings: RiskSettings,
        broadcast: Broadcasts,
        send: Send,
        bootstrap: str,
        redis: RedisClient,
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
        #: Digests of the most recent label ids (`label_digest`), oldest first.
        self.seen: OrderedDict[bytes, None] = OrderedDict()
        self.dirty = False
        self.broadcast_at = 0.0
        self.checkpoint_at = 0.0
        self.checkpointed_offset = 0
        #: The last checkpoint generation written, and its chunk count: the next write tombstones
        #: the chunks beyond its own count that this one (or one this worker saw) left.
        self.generation = 0
        self.chunks_written = 0
        #: A checkpoint's records are being sent: a second write must not interleave with it.
        self.writing = False

    def revoked(self, partitions: AbstractSet[tuple[str, int]]) -> None:
        if any(topic == topics.RISK_LABELS for topic, _ in partitions):
            self.forget()

    def forget(self) -> None:
        """The labels partition went to another worker: restore afresh if it comes back."""
        self.model = None

    def process(self, records: Sequence[Record], upstream: Upstream) -> Sequence[Record] | None:
        return records or None

    async def deliver(self, records: Sequence[Record], outcome: Sequence[Record]) -> None:
        await self.handle(records)

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
        label_id = label_digest(resolution.pending.user_id, resolution.pending.scored_at_ms)
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
        try:
            self._load_checkpoint()
        except (ChunkError, IncompatibleModel) as exc:  # torn, forged, or of another format
            log.error("risk checkpoint unusable (%s); training from the start of the labels", exc)
        self.checkpointed_offset = self.next_offset
        tail = await read_range(
            self.bootstrap, TopicPartition(topics.RISK_LABELS, 0), self.next_offset, first_offset, self.signer
        )
        for offset, value in tail:
            self._learn(offset, value)
        log.info(
            "risk trainer restored: %d labels learnt, %d replayed from offset %d",
            self.model.n_learned,
            len(tail),
            self.checkpointed_offset,
        )

    def _load_checkpoint(self) -> None:
        """Adopt the checkpoint on the broadcast topic whole, or raise and leave the fresh model."""
        joined = self.broadcast.checkpoint.join()
        if joined is None:
            log.info("no risk checkpoint on the broadcast topic")
            return
        manifest, raw = joined
        model, next_offset, seen = decode_checkpoint(raw)
        if next_offset != manifest.offset:
            raise IncompatibleModel(
                f"checkpoint offset {next_offset} is not its manifest's {manifest.offset}"
            )
        self.model, self.next_offset, self.seen = model, next_offset, seen

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
        due = (
            self.next_offset > self.checkpointed_offset
            and now - self.checkpoint_at >= self.settings.checkpoint_s
        )
        if due and not self.writing:
            self.checkpoint_at = now
            self.checkpointed_offset = self.next_offset
            self.writing = True
            try:
                await self._write_checkpoint(model)
            finally:
                self.writing = False

    async def _write_checkpoint(self, model: RiskModel) -> None:
        """The checkpoint as chunks then their manifest (streams/chunks.py), every record far
        below the 256 KiB budget. The payload is encoded here, at once, so it is one consistent
        state; compressing and hashing it (the GIL released) runs in a thread, off the loop."""
        next_offset = self.next_offset
        try:
            payload = checkpoint_payload(model, next_offset, self.seen)
        except ValueError as exc:  # a restore then replays from the last good checkpoint
            log.error("risk checkpoint not written: %s", exc)
            return
        generation = max(self.generation, self.broadcast.checkpoint.generation) + 1
        stale = max(self.chunks_written, self.broadcast.checkpoint.span())

        def encode() -> list[tuple[bytes, bytes | None]]:
            return split(CHECKPOINT_KEY, compress(payload), generation, next_offset, stale)

        try:
            records = await asyncio.to_thread(encode)
        except ValueError as exc:  # over the chunked format's 64 MiB
            log.error("risk checkpoint not written: %s", exc)
            return
        # Sent to the end even if the labels partition moves meanwhile: stopping half way would
        # leave a torn checkpoint for the next trainer; finished, it is a consistent one.
        for key, value in records:
            await self.send(BROADCAST_TOPIC, key, value, 0)
        chunks = [value for key, value in records if key != CHECKPOINT_KEY and value is not None]
        self.generation, self.chunks_written = generation, len(chunks)
        log.info(
            "risk checkpoint generation %d written: %d bytes in %d chunks, next offset %d",
            generation,
            sum(map(len, chunks)),
            len(chunks),
            next_offset,
        )

    async def _report(self, model: RiskModel) -> None:
        evaluation = model.evaluation()
        metrics.RISK_MODEL_LABELS.set(model.n_learned)
        for name, field in (("online", "roc_auc"), ("recency", "baseline_roc_auc")):
            if evaluation[field] is not None:
                metrics.RISK_AUC.labels(name).set(evaluation[field])
        # Each candidate's same-day AUC over the selection window (models/risk.py `select`).
        for name, auc in evaluation["candidates"]["roc_auc"].items():
            if auc is not None:
                metrics.RISK_AUC.labels(f"candidate_{name}").set(auc)
        if evaluation["brier"] is not None:
            metrics.RISK_BRIER.set(evaluation["brier"])
        evaluation["labels_learnt"] = model.n_learned
        evaluation["pending_deferred"] = model.deferred_count
        try:
            await self.redis.set(keys.RISK_EVALUATION, orjson.dumps(evaluation))
        except (RedisError, OSError) as exc:  # a report for operators; the next one will do
            metrics.SERVING_ERRORS.inc()
            log.warning("risk evaluation not written: Redis unavailable (%s)", exc)
