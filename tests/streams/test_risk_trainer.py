"""The single risk trainer (streams/risk_trainer.py) and the broadcast of its model, without Kafka
or Redis: a recording `send`, a fake Redis, a fake `read_range` for the labels tail and a fake
monotonic clock. Label order and offsets, dedup of re-sent labels, the scorer and checkpoint
cadence, the checkpoint's chunks (realistic size, torn writes, shrinking) and restore from a
checkpoint plus the tail after it."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import pickle
import random
import tempfile
import tracemalloc
import uuid
import zlib
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError

from infra import keys, topics
from infra.signing import RecordSigner
from infra.topics import BROADCAST as BROADCAST_TOPIC
from models.campaigns.records import UserFacts
from models.interventions import UserContext
from models.risk import IncompatibleModel, PendingLabel, Resolution, RiskModel
from models.risk_features import FEATURE_NAMES
from models.risk_state import RiskSettings, RiskState
from models.time_units import DAY_MS
from streams import chunks, risk_trainer
from streams.app import MAX_RECORD_BYTES
from streams.broadcast import CHECKPOINT_KEY, SCORER_KEY, Broadcasts
from streams.chunks import CHUNK_BYTES, ChunkBuffer, chunk_key
from streams.records import Record
from streams.risk import RiskProcessor, resolution_message
from streams.risk_trainer import (
    BROADCAST_S,
    EVAL_PAIRS,
    SEEN_LABELS,
    RiskTrainer,
    checkpoint_payload,
    decode_checkpoint,
    encode_checkpoint,
    label_digest,
)

T0 = 1_790_000_000_000
SETTINGS = RiskSettings()
CHECKPOINT_S = SETTINGS.checkpoint_s
H = SETTINGS.horizon_ms
G = SETTINGS.grace_ms
BOOTSTRAP = "broker.invalid:9092"


class FakeUsers:
    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]:
        return UserContext(state.user_id), UserFacts(state.user_id, "UTC", None, None, None, {})


class Sent:
    """A `Send` that records what would have gone to Kafka."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None
    ) -> None:
        self.calls.append((topic, key, value, partition))

    def keyed(self, key: bytes) -> list[bytes]:
        return [value for _, k, value, _ in self.calls if k == key and value is not None]

    def checkpoint_records(self) -> list[tuple[bytes, bytes | None]]:
        return [(k, value) for _, k, value, _ in self.calls if k is not None and k.startswith(CHECKPOINT_KEY)]

    def checkpoints(self) -> list[bytes]:
        """Each checkpoint written, as a reader joins it when its manifest arrives."""
        buffer, out = ChunkBuffer(CHECKPOINT_KEY), []
        for key, value in self.checkpoint_records():
            buffer.on_record(key, value)
            if key == CHECKPOINT_KEY:
                joined = buffer.join()
                assert joined is not None
                out.append(joined[1])
        return out


class FakeRedis:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.values: dict[str, bytes] = {}

    async def set(self, key: str, value: bytes) -> None:
        if self.fail:
            raise RedisConnectionError("redis is down")
        self.values[key] = value


class Clock:
    """`time.monotonic` for the trainer alone (the event loop keeps the real one)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


class Tail:
    """`read_range`: the labels between two offsets, from an in-memory topic."""

    def __init__(self, topic: dict[int, bytes | None]) -> None:
        self.topic = topic
        self.calls: list[tuple[str, TopicPartition, int, int]] = []

    async def __call__(
        self, bootstrap: str, tp: TopicPartition, start: int, end: int, signer: RecordSigner
    ) -> list[tuple[int, bytes | None]]:
        self.calls.append((bootstrap, tp, start, end))
        return [(offset, value) for offset, value in sorted(self.topic.items()) if start <= offset < end]


async def is_caught_up() -> bool:
    return True


def processor() -> RiskProcessor:
    return RiskProcessor(SETTINGS, lambda user_id, now_ms: None, FakeUsers())


def trainer(
    broadcast: Broadcasts | None = None, redis: FakeRedis | None = None, caught_up: Any = is_caught_up
) -> tuple[RiskTrainer, Sent]:
    sent = Sent()
    t = RiskTrainer(
        SETTINGS,
        broadcast or Broadcasts(processor()),
        sent,
        BOOTSTRAP,
        redis or FakeRedis(),  # type: ignore[arg-type]
        caught_up,
        signer=RecordSigner("test-secret"),
    )
    return t, sent


def fresh_model() -> RiskModel:
    return RiskModel(SETTINGS.horizon_ms, grace_ms=SETTINGS.grace_ms, max_eval_pairs=EVAL_PAIRS)


def ready_trainer(**kwargs: Any) -> tuple[RiskTrainer, Sent]:
    """A trainer that restored nothing (its model set directly, as `_restore` would)."""
    t, sent = trainer(**kwargs)
    t.model = fresh_model()
    return t, sent


def label(
    user_id: str,
    scored_at: int,
    value: int,
    resolved_at: int | None = None,
    recency_d: float = 1.0,
) -> bytes:
    pending = PendingLabel(user_id, scored_at, {"recency_d": recency_d, "events_7d": 2.0 - value}, 0.4)
    resolved = resolved_at if resolved_at is not None else scored_at + (H + G + 1 if value else DAY_MS)
    return orjson.dumps(resolution_message(Resolution(pending, value, resolved)))


def labels(n: int, start: int = 0) -> dict[int, bytes | None]:
    """n dropped-user labels at offsets start.. (each learnt at once: label 1 is never deferred)."""
    return {start + i: label(f"u{start + i}", T0 + i * 60_000, 1, recency_d=float(i % 7)) for i in range(n)}


def record(offset: int, value: bytes | None) -> Record:
    return Record(topics.RISK_LABELS, 0, offset, None, value, T0)


def seen_ids(*ids: tuple[str, int]) -> list[bytes]:
    return [label_digest(user, at) for user, at in ids]


def deliver(broadcast: Broadcasts, records: list[tuple[bytes, bytes | None]]) -> None:
    """What every worker's feed does with the broadcast topic: each record, in write order."""
    for offset, (key, value) in enumerate(records):
        broadcast.on_record(key, value, offset)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(risk_trainer, "time", SimpleNamespace(monotonic=c.monotonic))
    return c


def patch_tail(monkeypatch: pytest.MonkeyPatch, topic: dict[int, bytes | None]) -> Tail:
    tail = Tail(topic)
    monkeypatch.setattr(risk_trainer, "read_range", tail)
    return tail


# ---------------------------------------------------------------------------------------------
# Learning in topic order


def test_learn_ingests_a_label_and_moves_the_offset() -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    t._learn(0, label("a", T0, 1))
    assert t.next_offset == 1
    assert t.model.n_learned == 1 and list(t.model.pairs) == [(0.4, 1)]
    assert t.dirty is True
    assert list(t.seen) == seen_ids(("a", T0))


def test_learn_skips_offsets_below_the_next_offset() -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    t.next_offset = 5
    t._learn(3, label("a", T0, 1))
    t._learn(4, label("b", T0, 1))
    assert t.model.n_learned == 0 and len(t.model.pairs) == 0
    assert t.next_offset == 5 and t.dirty is False and not t.seen

    t._learn(5, label("c", T0, 1))
    assert t.model.n_learned == 1 and t.next_offset == 6
    assert list(t.seen) == seen_ids(("c", T0))


def test_a_label_sent_twice_is_learnt_once() -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    t._learn(0, label("a", T0, 1))
    # The same label id (user, scored_at) re-sent after a crash, even resolved differently.
    t._learn(7, label("a", T0, 0, resolved_at=T0 + DAY_MS))
    t._learn(8, label("a", T0, 1, resolved_at=T0 + H + G + 5))
    assert t.model.n_learned == 1
    assert list(t.model.pairs) == [(0.4, 1)]
    assert t.next_offset == 9  # skipped, but consumed
    # Another label of the same user is another id.
    t._learn(9, label("a", T0 + DAY_MS, 1))
    assert t.model.n_learned == 2


MALFORMED = {
    "bad-json": b"{nope",
    "empty": b"",
    "tombstone": None,
    "not-an-object": b"[1, 2]",
    "a-number": b"5",
    "missing-fields": orjson.dumps({"user_id": "a", "label": 1}),
    "label-2": orjson.dumps({**orjson.loads(label("a", T0, 1)), "label": 2}),
    "bad-feature": orjson.dumps({**orjson.loads(label("a", T0, 1)), "features": {"recency_d": "x"}}),
    "bad-time": orjson.dumps({**orjson.loads(label("a", T0, 1)), "scored_at_ms": None}),
}


@pytest.mark.parametrize("value", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_label_is_skipped_without_raising(
    value: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        t._learn(3, value)
    assert t.next_offset == 4  # consumed
    assert t.model.n_learned == 0 and len(t.model.pairs) == 0
    assert t.dirty is False and not t.seen
    assert any("offset 3 skipped" in r.getMessage() for r in caplog.records)

    t._learn(4, label("a", T0, 1))  # the next good one is learnt
    assert t.model.n_learned == 1


@pytest.mark.parametrize("features", [None, [1.0, 2.0]], ids=["null", "list"])
def test_a_label_with_non_object_features_is_skipped_without_raising(features: object) -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    t._learn(0, orjson.dumps({**orjson.loads(label("a", T0, 1)), "features": features}))
    assert t.next_offset == 1 and t.model.n_learned == 0


def test_a_retained_label_is_learnt_when_the_label_stream_passes_its_deadline() -> None:
    t, _ = ready_trainer()
    assert t.model is not None
    t._learn(0, label("a", T0, 0, resolved_at=T0 + DAY_MS))
    assert len(t.model.pairs) == 1 and t.model.n_learned == 0  # evaluated now, learnt later
    assert t.model.deferred_count == 1
    t._learn(1, label("b", T0 + DAY_MS, 1, resolved_at=T0 + H + G))  # not past a's deadline + grace
    assert t.model.n_learned == 1 and t.model.deferred_count == 1
    t._learn(2, label("c", T0 + DAY_MS, 1, resolved_at=T0 + H + G + 1))
    assert t.model.n_learned == 3 and t.model.deferred_count == 0


# ---------------------------------------------------------------------------------------------
# Publishing: the scorer every BROADCAST_S at most, a checkpoint every CHECKPOINT_S


async def test_nothing_is_published_before_a_model_or_a_label(clock: Clock) -> None:
    t, sent = trainer()
    await t.publish_due()  # no model yet
    t.model = fresh_model()
    await t.publish_due()  # nothing learnt
    assert sent.calls == []


async def test_the_scorer_is_broadcast_at_most_every_broadcast_s(clock: Clock) -> None:
    redis = FakeRedis()
    t, sent = ready_trainer(redis=redis)
    assert t.model is not None
    t._learn(0, label("a", T0, 1))
    await t.publish_due()

    [scorer] = sent.keyed(SCORER_KEY)
    assert sent.calls[0][0] == BROADCAST_TOPIC and sent.calls[0][3] == 0
    model = RiskModel.from_bytes(scorer)
    assert model.n_learned == 1
    assert len(model.pairs) == 0 and model.pending_count == 0  # scoring only: no evaluation buffer
    evaluation = orjson.loads(redis.values[keys.RISK_EVALUATION])
    assert evaluation["labels_learnt"] == 1 and evaluation["n"] == 1

    clock.now += BROADCAST_S - 0.1
    t._learn(1, label("b", T0, 1))
    await t.publish_due()
    assert len(sent.keyed(SCORER_KEY)) == 1  # too soon

    clock.now += 0.1
    await t.publish_due()
    assert len(sent.keyed(SCORER_KEY)) == 2
    assert RiskModel.from_bytes(sent.keyed(SCORER_KEY)[-1]).n_learned == 2

    clock.now += 10 * BROADCAST_S
    await t.publish_due()
    assert len(sent.keyed(SCORER_KEY)) == 2  # nothing new learnt: nothing to broadcast


async def test_a_skipped_label_does_not_rebroadcast_the_scorer(clock: Clock) -> None:
    t, sent = ready_trainer()
    t._learn(0, label("a", T0, 1))
    await t.publish_due()
    clock.now += BROADCAST_S
    t._learn(1, b"{nope")
    t._learn(2, label("a", T0, 1))  # a duplicate
    await t.publish_due()
    assert len(sent.keyed(SCORER_KEY)) == 1


async def test_the_checkpoint_is_sent_at_most_every_checkpoint_s(clock: Clock) -> None:
    t, sent = ready_trainer()
    t._learn(0, label("a", T0, 1))
    await t.publish_due()
    assert len(sent.checkpoints()) == 1
    model, next_offset, seen = decode_checkpoint(sent.checkpoints()[0])
    assert next_offset == 1 and list(seen) == seen_ids(("a", T0)) and model.n_learned == 1
    # A small checkpoint is one chunk, then the manifest, on the partition of the broadcast.
    assert [(c[0], c[1], c[3]) for c in sent.calls[-2:]] == [
        (BROADCAST_TOPIC, chunk_key(CHECKPOINT_KEY, 0), 0),
        (BROADCAST_TOPIC, CHECKPOINT_KEY, 0),
    ]

    t._learn(1, label("b", T0, 1))
    clock.now += CHECKPOINT_S - 1
    await t.publish_due()
    assert len(sent.checkpoints()) == 1

    clock.now += 1
    await t.publish_due()
    [_, second] = sent.checkpoints()
    assert decode_checkpoint(second)[1] == 2

    clock.now += 5 * CHECKPOINT_S
    await t.publish_due()
    assert len(sent.checkpoints()) == 2  # no new offset: no new checkpoint


async def test_a_model_no_reader_would_take_is_not_published_and_not_fatal(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    t, sent = ready_trainer()
    t._learn(0, label("a", T0, 1))
    assert t.model is not None
    t.model.learn({f"f{i}": 1.0 for i in range(300)}, 1)  # past the format's 256 features
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        await t.publish_due()  # must not raise
    assert sent.calls == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("scorer not published" in m for m in messages)
    assert any("checkpoint not written" in m for m in messages)


async def test_a_redis_outage_does_not_stop_the_broadcast(clock: Clock) -> None:
    t, sent = ready_trainer(redis=FakeRedis(fail=True))
    t._learn(0, label("a", T0, 1))
    await t.publish_due()  # must not raise
    assert len(sent.keyed(SCORER_KEY)) == 1
    assert len(sent.checkpoints()) == 1


# ---------------------------------------------------------------------------------------------
# Restore: the checkpoint, then the labels after it


async def checkpointed(
    clock: Clock, topic: dict[int, bytes | None], upto: int
) -> tuple[RiskTrainer, list[tuple[bytes, bytes | None]]]:
    """A trainer that learnt topic[0:upto] and checkpointed, and its checkpoint's records."""
    t, sent = ready_trainer()
    for offset in range(upto):
        t._learn(offset, topic[offset])
    await t.publish_due()
    assert len(sent.checkpoints()) == 1
    return t, sent.checkpoint_records()


async def test_a_checkpoint_restores_the_same_trainer(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = labels(6)
    before, checkpoint = await checkpointed(clock, topic, 6)
    assert before.model is not None

    broadcast = Broadcasts(processor())
    deliver(broadcast, checkpoint)
    tail = patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    await t._restore(6)

    assert t.model is not None and t.model is not before.model
    assert t.model.n_learned == before.model.n_learned == 6
    assert t.next_offset == before.next_offset == 6
    assert t.seen == before.seen
    assert t.checkpointed_offset == 6
    assert list(t.model.pairs) == list(before.model.pairs)
    x = {"recency_d": 3.0, "events_7d": 1.0}
    assert t.model.predict(x)[0] == pytest.approx(before.model.predict(x)[0])
    assert tail.calls == [(BOOTSTRAP, TopicPartition(topics.RISK_LABELS, 0), 6, 6)]


async def test_restore_replays_the_tail_from_the_checkpoints_offset(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = labels(10)
    topic[10] = topic[2]  # a label learnt before the checkpoint, re-sent by a user partition
    _, checkpoint = await checkpointed(clock, topic, 4)

    broadcast = Broadcasts(processor())
    deliver(broadcast, checkpoint)
    tail = patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    await t._restore(11)  # Faust hands over offset 11 first: it committed past the checkpoint

    assert tail.calls == [(BOOTSTRAP, TopicPartition(topics.RISK_LABELS, 0), 4, 11)]
    assert t.model is not None
    assert t.model.n_learned == 10  # 4 from the checkpoint, 6 replayed, the re-sent one skipped
    assert t.next_offset == 11
    assert t.checkpointed_offset == 4  # so the next publish writes a new checkpoint
    assert t.dirty is True


async def test_restore_without_a_checkpoint_learns_the_labels_from_the_start(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tail = patch_tail(monkeypatch, labels(3))
    t, _ = trainer()
    await t._restore(3)
    assert tail.calls[0][2:] == (0, 3)
    assert t.model is not None and t.model.n_learned == 3 and t.next_offset == 3
    assert t.model.pairs.maxlen == EVAL_PAIRS
    assert t.model.horizon_ms == SETTINGS.horizon_ms and t.model.grace_ms == SETTINGS.grace_ms


class _Touch:
    """A pickle that creates a file when loaded: what a Kafka writer would try first."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


PWNED = os.path.join(tempfile.gettempdir(), f"elimu-checkpoint-pwned-{uuid.uuid4().hex}")
_MODEL = fresh_model().to_bytes()
_DIGEST = label_digest("u", T0)


def _header(**fields: object) -> bytes:
    header = {"format": 2, "next_offset": 0, "seen": {"n": 0, "ids": ""}, **fields}
    return b"elimu-risk-checkpoint " + orjson.dumps(header)


def _ids(*digests: bytes) -> dict[str, object]:
    return {"n": len(digests), "ids": base64.b64encode(b"".join(digests)).decode()}


#: Checkpoints as a writer would compress them, whose content is refused.
_UNUSABLE_PAYLOADS = {
    "empty": b"",
    "keys": pickle.dumps({"no": "model"}),
    "old-pickle": pickle.dumps({"model": _MODEL, "next_offset": 3, "seen": []}),
    "forged-pickle": pickle.dumps({"model": _Touch(PWNED), "next_offset": 0, "seen": []}),
    "pickle-after-header": _header() + b"\n" + pickle.dumps(_Touch(PWNED)),
    "format-1": b"elimu-risk-checkpoint "
    + orjson.dumps({"format": 1, "next_offset": 0, "seen": {"user": ["u"], "scored_at": [T0]}})
    + b"\n"
    + _MODEL,
    "other-format": _header(format=3) + b"\n" + _MODEL,
    "no-offset": b"elimu-risk-checkpoint " + orjson.dumps({"format": 2, "seen": _ids()}) + b"\n" + _MODEL,
    "negative-offset": _header(next_offset=-1) + b"\n" + _MODEL,
    "seen-count-short": _header(seen={**_ids(_DIGEST), "n": 2}) + b"\n" + _MODEL,
    "seen-count-long": _header(seen={**_ids(_DIGEST, label_digest("v", T0)), "n": 1}) + b"\n" + _MODEL,
    "seen-not-base64": _header(seen={"n": 1, "ids": "!!!!!!!!!!!="}) + b"\n" + _MODEL,
    "seen-count-not-int": _header(seen={"n": True, "ids": _ids(_DIGEST)["ids"]}) + b"\n" + _MODEL,
    "seen-repeats": _header(seen=_ids(_DIGEST, _DIGEST)) + b"\n" + _MODEL,
    "seen-as-columns": _header(seen={"user": ["u"], "scored_at": [T0]}) + b"\n" + _MODEL,
    "too-many-seen": _header(seen=_ids(*(i.to_bytes(8, "big") for i in range(SEEN_LABELS + 1))))
    + b"\n"
    + _MODEL,
    "truncated-model": _header() + b"\n" + _MODEL[:-10],
    "no-newline": _header(),
}
_WHOLE = zlib.compress(_header() + b"\n" + _MODEL)
UNUSABLE_CHECKPOINTS = {
    "not-zlib": b"garbage",
    "raw-pickle": pickle.dumps(_Touch(PWNED)),
    "truncated-zlib": _WHOLE[:-5],
    "padded-zlib": _WHOLE + b"more",
    **{name: zlib.compress(payload) for name, payload in _UNUSABLE_PAYLOADS.items()},
}


def test_the_checkpoint_codec_round_trips() -> None:
    model = fresh_model()
    model.ingest(Resolution(PendingLabel("u", T0, {"recency_d": 2.0}, 0.4), 1, T0 + H + G + 1))
    seen = OrderedDict.fromkeys(seen_ids(("u", T0), ("v", T0 + 1)))
    back, next_offset, back_seen = decode_checkpoint(encode_checkpoint(model, 42, seen))
    assert (next_offset, back_seen) == (42, seen)
    assert back.to_bytes() == model.to_bytes()
    assert decode_checkpoint(_WHOLE)[1] == 0  # the framing the refused ones are built from is valid
    for name, raw in UNUSABLE_CHECKPOINTS.items():
        with pytest.raises(IncompatibleModel):
            decode_checkpoint(raw)
        assert not os.path.exists(PWNED), name


def test_label_digests_are_eight_bytes_and_tell_ids_apart() -> None:
    ids = [("u", T0), ("u", T0 + 1), ("v", T0), ("u1", 0), ("u", 10)]
    digests = seen_ids(*ids)
    assert all(len(d) == 8 for d in digests) and len(set(digests)) == len(ids)
    assert label_digest("u", T0) == label_digest("u", T0)  # stable: a restored trainer matches


def test_a_checkpoint_that_inflates_past_the_limit_is_refused() -> None:
    """A zlib bomb: a few hundred kB that would inflate past the checkpoint's bound."""
    deflate = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    bomb = b"".join(
        deflate.compress(zeros) for _ in range(risk_trainer.MAX_CHECKPOINT_BYTES // len(zeros) + 2)
    )
    bomb += deflate.flush()
    assert len(bomb) < CHUNK_BYTES * 2
    with pytest.raises(IncompatibleModel, match="inflates past"):
        decode_checkpoint(bomb)


@pytest.mark.parametrize("raw", list(UNUSABLE_CHECKPOINTS.values()), ids=list(UNUSABLE_CHECKPOINTS))
async def test_an_unusable_checkpoint_restores_from_the_start(
    raw: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broadcast = Broadcasts(processor())
    deliver(broadcast, chunks.split(CHECKPOINT_KEY, raw, 1, 0))  # whole and verified: refused inside
    tail = patch_tail(monkeypatch, labels(2))
    t, _ = trainer(broadcast)
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        await t._restore(2)
    assert tail.calls[0][2:] == (0, 2)
    assert t.model is not None and t.model.n_learned == 2
    assert t.seen == OrderedDict.fromkeys(seen_ids(("u0", T0), ("u1", T0 + 60_000)))
    assert any("checkpoint unusable" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(PWNED)


async def test_a_checkpoint_missing_its_offset_does_not_leave_a_half_restored_model(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = labels(4)
    before, _ = await checkpointed(clock, topic, 4)
    assert before.model is not None
    broadcast = Broadcasts(processor())
    # A header without its offset: the model it carries must not be adopted alone.
    header = orjson.dumps({"format": 2, "seen": _ids(*before.seen)})
    payload = b"elimu-risk-checkpoint " + header + b"\n" + before.model.to_bytes()
    deliver(broadcast, chunks.split(CHECKPOINT_KEY, zlib.compress(payload), 1, 4))
    patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    await t._restore(4)
    assert t.model is not None
    assert t.model.n_learned == 4  # each label once (today: 8, the 4 learnt twice)


async def test_a_checkpoint_whose_manifest_names_another_offset_is_refused(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    topic = labels(4)
    before, _ = await checkpointed(clock, topic, 4)
    assert before.model is not None
    broadcast = Broadcasts(processor())
    raw = encode_checkpoint(before.model, 4, before.seen)
    deliver(broadcast, chunks.split(CHECKPOINT_KEY, raw, 1, 2))  # the manifest says offset 2
    tail = patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        await t._restore(4)
    assert tail.calls[0][2:] == (0, 4)
    assert any("not its manifest's 2" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# The checkpoint's chunks: at scale, torn, shrinking, forged


def at_scale(t: RiskTrainer, rng: random.Random) -> None:
    """A trainer's state at scale: SEEN_LABELS label ids, EVAL_PAIRS evaluation pairs, 60k labels
    learnt and 14k retained labels waiting for their deadline, each with the engine's features
    (what the labels of 7 500 simulated users over 60 days leave, scripts/bench_risk.py)."""
    assert t.model is not None
    users = [f"user-{i:05d}" for i in range(20_000)]

    def features() -> dict[str, float]:
        # Log counts, day fractions, small integers and ratios, as models/risk_features.py makes.
        return {
            name: rng.choice(
                (
                    math.log1p(rng.randint(0, 40)),
                    rng.randint(0, 7) / 7.0,
                    float(rng.randint(0, 3)),
                    rng.random(),
                )
            )
            for name in FEATURE_NAMES
        }

    for i in range(200):
        t.model.learn(features(), i % 2)
    t.model.n_learned = 60_000
    for i in range(14_000):
        scored = T0 + i * 40_000
        pending = PendingLabel(users[i % len(users)], scored, features(), rng.random())
        t.model.ingest(Resolution(pending, 0, scored + DAY_MS))  # deferred to its deadline
    t.model.pairs.extend((rng.random(), rng.randint(0, 1)) for _ in range(EVAL_PAIRS))
    t.model.baseline_pairs.extend((rng.random() * 7, rng.randint(0, 1)) for _ in range(EVAL_PAIRS))
    t.seen = OrderedDict.fromkeys(label_digest(users[i % len(users)], T0 + i) for i in range(SEEN_LABELS))
    t.next_offset = 250_000
    t.dirty = True


async def test_a_checkpoint_at_scale_is_chunked_below_the_record_budget_and_restores(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    t, sent = ready_trainer()
    at_scale(t, random.Random(5))
    await t.publish_due()

    records = sent.checkpoint_records()
    *chunked, (last_key, manifest_raw) = records
    assert last_key == CHECKPOINT_KEY and manifest_raw is not None  # the manifest, written last
    assert [key for key, _ in chunked] == [chunk_key(CHECKPOINT_KEY, i) for i in range(len(chunked))]
    sizes = [len(key) + len(value or b"") for key, value in records]
    assert max(sizes) < MAX_RECORD_BYTES  # the worker sends each one (over it: dead-lettered)
    manifest = chunks.Manifest.parse(manifest_raw)
    assert (manifest.chunks, manifest.offset, manifest.generation) == (len(chunked), 250_000, 1)
    # As one record (format 1, the ids as JSON strings, uncompressed) this state was ~9 MB.
    assert 5 <= len(chunked) <= 24 and manifest.size <= 24 * CHUNK_BYTES
    assert t.model is not None
    payload = checkpoint_payload(t.model, t.next_offset, t.seen)
    assert len(payload) < 7 * 1024 * 1024 and manifest.size < len(payload) * 0.6

    broadcast = Broadcasts(processor())
    deliver(broadcast, records)
    tail = patch_tail(monkeypatch, {})
    restored, _ = trainer(broadcast)
    await restored._restore(250_000)
    assert tail.calls[0][2:] == (250_000, 250_000)  # nothing replayed: the checkpoint is whole
    assert restored.model is not None and restored.model.to_bytes() == t.model.to_bytes()
    assert restored.seen == t.seen and restored.next_offset == 250_000


async def two_generations(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, topic: dict[int, bytes | None], first: int
) -> tuple[list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes | None]]]:
    """The records of a trainer's checkpoint after topic[:first] and its next after the rest,
    with small chunks so that each checkpoint takes several."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 256)
    t, sent = ready_trainer()
    for offset in range(first):
        t._learn(offset, topic[offset])
    await t.publish_due()
    one = sent.checkpoint_records()
    for offset in range(first, len(topic)):
        t._learn(offset, topic[offset])
    clock.now += CHECKPOINT_S
    await t.publish_due()
    return one, sent.checkpoint_records()[len(one) :]


@pytest.mark.parametrize("written", ["one-chunk", "every-chunk"])
async def test_a_checkpoint_torn_between_its_chunks_and_its_manifest_is_refused_and_the_labels_replayed(
    written: str, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    topic = labels(8)
    one, two = await two_generations(clock, monkeypatch, topic, 3)
    *chunks_two, (manifest_key, _) = two
    assert manifest_key == CHECKPOINT_KEY and len(chunks_two) >= 3
    # The trainer died after writing generation 2's chunks (some or all), before its manifest:
    # the latest manifest is generation 1's, some chunks under it are generation 2's.
    torn = chunks_two[:1] if written == "one-chunk" else chunks_two
    broadcast = Broadcasts(processor())
    deliver(broadcast, one + torn)
    tail = patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        await t._restore(8)
    assert tail.calls[0][2:] == (0, 8)  # from the start of the labels
    assert t.model is not None and t.model.n_learned == 8 and t.next_offset == 8
    [message] = [r.getMessage() for r in caplog.records if "checkpoint unusable" in r.getMessage()]
    assert "generation 2, the manifest of 1" in message and "torn" in message

    # Delivered whole, the same records restore generation 2.
    whole = Broadcasts(processor())
    deliver(whole, one + two)
    restored, _ = trainer(whole)
    await restored._restore(8)
    assert restored.checkpointed_offset == 8 and tail.calls[-1][2:] == (8, 8)


async def test_a_smaller_checkpoint_tombstones_the_chunks_the_larger_one_left(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 retained labels wait for their deadline in the first checkpoint; a dropped label
    # resolved a horizon later learns them all, and the book the second one carries is empty.
    topic: dict[int, bytes | None] = {
        i: label(f"r{i}", T0 + i, 0, resolved_at=T0 + i + DAY_MS, recency_d=i / 7) for i in range(40)
    }
    topic[40] = label("z", T0, 1, resolved_at=T0 + 2 * (H + G))
    one, two = await two_generations(clock, monkeypatch, topic, 40)
    count_one = chunks.Manifest.parse(one[-1][1] or b"").chunks
    [manifest_two] = [value for key, value in two if key == CHECKPOINT_KEY]
    count_two = chunks.Manifest.parse(manifest_two or b"").chunks
    assert count_two < count_one
    # Tombstones for the keys beyond the new count, after the manifest.
    tombstones = [key for key, value in two if value is None]
    assert tombstones == [chunk_key(CHECKPOINT_KEY, i) for i in range(count_two, count_one)]
    assert two[-len(tombstones) - 1][0] == CHECKPOINT_KEY

    broadcast = Broadcasts(processor())
    deliver(broadcast, one + two)
    assert broadcast.checkpoint.span() == count_two  # what compaction keeps: one generation
    patch_tail(monkeypatch, topic)
    t, _ = trainer(broadcast)
    await t._restore(41)
    assert t.model is not None and t.model.n_learned == 41 and t.model.deferred_count == 0


async def test_a_new_trainer_writes_above_the_topics_generation_and_tombstones_what_it_saw(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that becomes the trainer over a checkpoint it cannot use (here: 6 chunks of
    random bytes under a generation-7 manifest) continues the generations and clears the keys."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 256)
    broadcast = Broadcasts(processor())
    deliver(broadcast, chunks.split(CHECKPOINT_KEY, random.Random(1).randbytes(6 * 256), 7, 0))
    assert broadcast.checkpoint.span() == 6
    patch_tail(monkeypatch, labels(1))
    t, sent = trainer(broadcast)
    await t.handle([record(1, label("b", T0, 1))])
    records = sent.checkpoint_records()
    manifest = chunks.Manifest.parse(next(v for k, v in records if k == CHECKPOINT_KEY) or b"")
    assert manifest.generation == 8 and manifest.chunks < 6
    assert [k for k, v in records if v is None] == [
        chunk_key(CHECKPOINT_KEY, i) for i in range(manifest.chunks, 6)
    ]
    deliver(broadcast, records)
    joined = broadcast.checkpoint.join()
    assert joined is not None and decode_checkpoint(joined[1])[0].n_learned == 2


async def test_a_forged_manifest_is_refused_unallocated_and_the_labels_replayed(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, records = await checkpointed(clock, labels(3), 3)
    forged = orjson.dumps(
        {"generation": 1, "chunks": 10**9, "bytes": 10**12, "sha256": "0" * 64, "offset": 3}
    )
    broadcast = Broadcasts(processor())
    tracemalloc.start()
    try:
        deliver(broadcast, [*records, (CHECKPOINT_KEY, forged)])  # shadows the honest manifest
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024  # nothing sized by the manifest's claims
    tail = patch_tail(monkeypatch, labels(3))
    t, _ = trainer(broadcast)
    with caplog.at_level(logging.ERROR, logger="streams.risk_trainer"):
        await t._restore(3)
    assert tail.calls[0][2:] == (0, 3)
    assert t.model is not None and t.model.n_learned == 3
    assert any("checkpoint unusable" in r.getMessage() and "chunks" in r.getMessage() for r in caplog.records)


async def test_a_checkpoint_write_in_flight_is_not_interleaved_with_the_next(clock: Clock) -> None:
    """Sends that wait on Kafka for longer than CHECKPOINT_S must not let a second write's
    chunks land between the first one's."""
    reached, release = asyncio.Event(), asyncio.Event()
    t, sent = ready_trainer()
    inner = sent.__call__

    async def slow(topic: str, key: bytes | None, value: bytes | None, partition: int | None) -> None:
        await inner(topic, key, value, partition)
        if key == chunk_key(CHECKPOINT_KEY, 0) and not reached.is_set():  # the first one only
            reached.set()
            await release.wait()

    t.send = slow
    t._learn(0, label("a", T0, 1))
    first = asyncio.create_task(t.publish_due())
    await reached.wait()
    clock.now += 2 * CHECKPOINT_S
    t._learn(1, label("b", T0, 1))
    await t.publish_due()  # due, but the first write is still in flight
    assert [k for k, _ in sent.checkpoint_records()] == [chunk_key(CHECKPOINT_KEY, 0)]
    release.set()
    await first
    assert [decode_checkpoint(c)[1] for c in sent.checkpoints()] == [1]
    clock.now += CHECKPOINT_S
    await t.publish_due()  # the next one once the first is done
    assert [decode_checkpoint(c)[1] for c in sent.checkpoints()] == [1, 2]


async def test_restore_goes_on_when_the_broadcast_topic_is_not_caught_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def behind() -> bool:
        return False

    patch_tail(monkeypatch, labels(1))
    t, _ = trainer(caught_up=behind)
    with caplog.at_level(logging.WARNING, logger="streams.risk_trainer"):
        await t._restore(1)
    assert t.model is not None and t.model.n_learned == 1
    assert any("not caught up" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# handle: restore on the first batch, learn, publish


async def test_handle_restores_then_learns_the_batch_then_publishes(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = labels(8)
    _, checkpoint = await checkpointed(clock, topic, 3)
    broadcast = Broadcasts(processor())
    deliver(broadcast, checkpoint)
    tail = patch_tail(monkeypatch, topic)
    t, sent = trainer(broadcast)

    await t.handle([record(offset, topic[offset]) for offset in (5, 6, 7)])

    assert tail.calls[0][2:] == (3, 5)
    assert t.model is not None and t.model.n_learned == 8 and t.next_offset == 8
    [scorer] = sent.keyed(SCORER_KEY)
    [new_checkpoint] = sent.checkpoints()
    assert RiskModel.from_bytes(scorer).n_learned == 8
    assert decode_checkpoint(new_checkpoint)[1] == 8

    # The next batch does not restore again; a redelivered record is skipped by offset.
    clock.now += BROADCAST_S
    await t.handle([record(7, topic[7]), record(8, label("z", T0, 1))])
    assert len(tail.calls) == 1
    assert t.model.n_learned == 9 and t.next_offset == 9


async def test_an_empty_batch_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    tail = patch_tail(monkeypatch, labels(2))
    t, sent = trainer()
    await t.handle([])
    assert t.model is None and tail.calls == [] and sent.calls == []


async def test_a_trainer_that_lost_the_partition_restores_when_it_comes_back(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = labels(4)
    tail = patch_tail(monkeypatch, topic)
    t, _ = trainer()
    await t.handle([record(0, topic[0]), record(1, topic[1])])
    t.forget()
    assert t.model is None
    await t.handle([record(3, topic[3])])
    assert [call[2:] for call in tail.calls] == [(0, 0), (0, 3)]  # no checkpoint was kept here
    assert t.model is not None and t.model.n_learned == 4


# ---------------------------------------------------------------------------------------------
# The broadcast: every worker adopts the trainer's scorer


async def test_the_trainers_scorer_is_adopted_by_every_workers_processor(clock: Clock) -> None:
    t, sent = ready_trainer()
    for offset, value in labels(5).items():
        t._learn(offset, value)
    await t.publish_due()

    worker = processor()
    broadcast = Broadcasts(worker)
    for offset, (_, key, value, _) in enumerate(sent.calls):
        broadcast.on_record(key, value, offset)

    assert t.model is not None
    assert worker.model_version == 5 and worker.model.n_learned == 5
    x = {"recency_d": 2.0, "events_7d": 1.0}
    assert worker.model.predict(x)[0] == pytest.approx(t.model.predict(x)[0])
    joined = broadcast.checkpoint.join()  # kept as chunks, joined for a new trainer
    assert joined is not None and joined[1] == sent.checkpoints()[0]


async def test_a_corrupt_scorer_is_logged_and_ignored(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    t, sent = ready_trainer()
    t._learn(0, label("a", T0, 1))
    await t.publish_due()
    [scorer] = sent.keyed(SCORER_KEY)

    worker = processor()
    broadcast = Broadcasts(worker)
    broadcast.on_record(SCORER_KEY, scorer, 0)
    adopted = worker.model
    with caplog.at_level(logging.ERROR, logger="streams.broadcast"):
        broadcast.on_record(SCORER_KEY, scorer[: len(scorer) // 2], 1)  # must not raise
        broadcast.on_record(SCORER_KEY, b"not a model", 2)
    assert worker.model is adopted and worker.model_version == 1
    assert sum("not adopted" in r.getMessage() or "skipped" in r.getMessage() for r in caplog.records) == 2
