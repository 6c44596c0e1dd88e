"""Every worker's view of `elimu-broadcast` (streams/broadcast.py): campaigns, the interventions'
funnel counts, the trainer's checkpoint (chunks and manifest, streams/chunks.py) and the risk
scorer; bad records skipped, never fatal."""

from __future__ import annotations

import logging
import os
import pickle
import random
import tempfile
import tracemalloc
import uuid

import orjson
import pytest
from river.__version__ import __version__ as RIVER_VERSION

from models.campaigns.parsing import parse_campaign
from models.campaigns.records import Campaign, UserFacts
from models.campaigns.status import with_status
from models.interventions import InterventionStats, UserContext
from models.risk import FORMAT_VERSION, LOGISTIC, RiskModel
from models.risk_state import RiskSettings, RiskState
from streams.broadcast import CHECKPOINT_KEY, SCORER_KEY, STATS_KEY, Broadcasts, campaign_key
from streams.chunks import (
    CHUNK_BYTES,
    MAX_BYTES,
    MAX_CHUNKS,
    MAX_MANIFEST_BYTES,
    ChunkError,
    chunk_key,
    split,
)
from streams.risk import RiskProcessor

CREATED = 1_772_352_000_000  # 2026-03-01T08:00:00Z
AT = CREATED + 10 * 86_400_000


class FakeUsers:
    """The nudges' user lookup, with nothing known beyond the user id."""

    def context(self, state: RiskState, now_ms: int) -> tuple[UserContext, UserFacts]:
        return UserContext(state.user_id), UserFacts(state.user_id, "UTC", None, None, None, {})


def processor() -> RiskProcessor:
    return RiskProcessor(RiskSettings(), lambda user_id, now_ms: None, FakeUsers())


def make_campaign(campaign_id: str = "c1", status: str = "active") -> Campaign:
    return parse_campaign(
        {
            "name": f"campaign {campaign_id}",
            "schedule": {"kind": "one_time", "at": AT},
            "target": {"kind": "all"},
            "intervention": "gentle_reminder",
            "status": status,
        },
        campaign_id,
        CREATED,
    )


def encoded(c: Campaign) -> bytes:
    return orjson.dumps(c.to_dict())


def trained_model(n: int) -> RiskModel:
    model = RiskModel()
    for i in range(n):
        model.learn({"recency_d": float(i % 7), "events_7d": float(i % 3)}, i % 2)
    return model


# ---------------------------------------------------------------------------------------------
# Campaigns


def test_a_campaign_record_adds_the_campaign_and_flags_the_change() -> None:
    b = Broadcasts(processor())
    assert b.campaigns_changed is False and b.active_campaigns() == []

    c1 = make_campaign("c1")
    b.on_record(campaign_key("c1"), encoded(c1), 0)

    assert b.campaigns == {"c1": c1}
    assert b.campaigns_changed is True
    assert b.active_campaigns() == [c1]


def test_a_campaign_record_replaces_the_previous_definition() -> None:
    b = Broadcasts(processor())
    active = make_campaign("c1")
    b.on_record(campaign_key("c1"), encoded(active), 0)
    assert b.take_campaigns_changed() is True  # the caller rescheduled everyone
    assert b.take_campaigns_changed() is False  # and the signal is taken once

    paused = with_status(active, "paused", CREATED + 1_000)
    b.on_record(campaign_key("c1"), encoded(paused), 1)

    assert b.campaigns == {"c1": paused}
    assert b.campaigns["c1"].status == "paused"
    assert b.campaigns_changed is True
    assert b.active_campaigns() == []


def test_a_tombstone_deletes_the_campaign() -> None:
    b = Broadcasts(processor())
    b.on_record(campaign_key("c1"), encoded(make_campaign("c1")), 0)
    b.on_record(campaign_key("c2"), encoded(make_campaign("c2")), 1)
    assert b.take_campaigns_changed() is True

    b.on_record(campaign_key("c1"), None, 2)

    assert set(b.campaigns) == {"c2"}
    assert [c.id for c in b.active_campaigns()] == ["c2"]
    assert b.campaigns_changed is True


def test_a_tombstone_for_an_unknown_campaign_is_harmless() -> None:
    b = Broadcasts(processor())
    b.on_record(campaign_key("c1"), encoded(make_campaign("c1")), 0)
    b.on_record(campaign_key("ghost"), None, 1)
    assert set(b.campaigns) == {"c1"}


def test_only_active_campaigns_reach_the_processor() -> None:
    p = processor()
    b = Broadcasts(p)
    p.follow(b)
    active = make_campaign("on")
    draft = make_campaign("draft", status="draft")
    paused = with_status(make_campaign("off"), "paused", CREATED + 1)
    for offset, c in enumerate((active, draft, paused)):
        b.on_record(campaign_key(c.id), encoded(c), offset)

    assert set(b.campaigns) == {"on", "draft", "off"}
    assert b.active_campaigns() == [active]
    assert list(p.campaigns()) == [active]  # the processor reads the live view


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b"",
        orjson.dumps({"id": "c1", "name": "no schedule"}),
        orjson.dumps([1, 2, 3]),
        b"\xff\xfe",
    ],
    ids=["bad-json", "empty", "missing-fields", "not-an-object", "not-utf8"],
)
def test_a_corrupt_campaign_record_is_skipped_without_raising(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    b = Broadcasts(processor())
    good = make_campaign("c1")
    b.on_record(campaign_key("c1"), encoded(good), 0)
    assert b.take_campaigns_changed() is True

    with caplog.at_level(logging.ERROR, logger="streams.broadcast"):
        b.on_record(campaign_key("c1"), value, 7)

    assert b.campaigns == {"c1": good}  # the last good definition stays
    assert b.campaigns_changed is False
    assert any("offset 7 skipped" in r.getMessage() for r in caplog.records)

    # The feed goes on: the next good record is applied.
    b.on_record(campaign_key("c2"), encoded(make_campaign("c2")), 8)
    assert set(b.campaigns) == {"c1", "c2"}


def test_a_record_without_a_key_or_with_an_unknown_key_changes_nothing() -> None:
    p = processor()
    b = Broadcasts(p)
    b.on_record(None, b"whatever", 0)
    b.on_record(b"something-else", b"whatever", 1)
    assert b.campaigns == {} and b.checkpoint.join() is None and b.campaigns_changed is False
    assert b.stats == InterventionStats()
    assert p.model_version == 0


# ---------------------------------------------------------------------------------------------
# Intervention stats


def stats_bytes() -> tuple[InterventionStats, bytes]:
    stats = InterventionStats()
    for stage in ("sent", "sent", "sent", "opened", "clicked"):
        stats.record(stage, "gentle_reminder", "IN_APP", "gentle_reminder", "a")
    stats.record("sent", "gentle_reminder", "PUSH", "gentle_reminder", "b")
    return stats, orjson.dumps(stats.to_dict())


def test_intervention_stats_feed_the_bandit() -> None:
    p = processor()
    b = Broadcasts(p)
    p.follow(b)
    assert b.stats_for("gentle_reminder") == {}

    stats, value = stats_bytes()
    b.on_record(STATS_KEY, value, 0)

    expected = {
        "a": {"sent": 3, "opened": 1, "clicked": 1, "converted": 0, "unsubscribed": 0},
        "b": {"sent": 1, "opened": 0, "clicked": 0, "converted": 0, "unsubscribed": 0},
    }
    assert b.stats == stats
    assert b.stats_for("gentle_reminder") == expected
    assert b.stats_for("streak_warning") == {}
    assert p.variant_counts("gentle_reminder") == expected  # wired into the processor


def test_a_newer_stats_record_replaces_the_older_one() -> None:
    b = Broadcasts(processor())
    _, value = stats_bytes()
    b.on_record(STATS_KEY, value, 0)
    newer = InterventionStats()
    newer.record("sent", "streak_warning", "PUSH", "streak_warning", "b")
    b.on_record(STATS_KEY, orjson.dumps(newer.to_dict()), 1)
    assert b.stats_for("gentle_reminder") == {}
    shown = {"sent": 1, "opened": 0, "clicked": 0, "converted": 0, "unsubscribed": 0}
    assert b.stats_for("streak_warning") == {"b": shown}


@pytest.mark.parametrize(
    "value",
    [b"{oops", orjson.dumps({"v": 999, "by_type": {}}), orjson.dumps({"v": 1, "by_template": {"t": 3}})],
    ids=["bad-json", "bad-version", "bad-shape"],
)
def test_a_corrupt_stats_record_keeps_the_previous_stats(value: bytes) -> None:
    b = Broadcasts(processor())
    stats, good = stats_bytes()
    b.on_record(STATS_KEY, good, 0)
    b.on_record(STATS_KEY, value, 1)
    assert b.stats == stats


def test_a_stats_tombstone_is_ignored() -> None:
    b = Broadcasts(processor())
    stats, good = stats_bytes()
    b.on_record(STATS_KEY, good, 0)
    b.on_record(STATS_KEY, None, 1)
    assert b.stats == stats


# ---------------------------------------------------------------------------------------------
# Trainer checkpoint


def checkpoint_records(blob: bytes, generation: int, stale: int = 0) -> list[tuple[bytes, bytes | None]]:
    return split(CHECKPOINT_KEY, blob, generation, 40 + generation, stale)


def deliver(b: Broadcasts, records: list[tuple[bytes, bytes | None]], start: int = 0) -> None:
    for offset, (key, value) in enumerate(records, start):
        b.on_record(key, value, offset)


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_checkpoint_is_buffered_by_key_and_joined_whole() -> None:
    p = processor()
    b = Broadcasts(p)
    assert b.checkpoint.join() is None  # nothing published yet
    value = blob(2 * CHUNK_BYTES + 5)
    records = checkpoint_records(value, 1)
    assert [k for k, _ in records] == [chunk_key(CHECKPOINT_KEY, i) for i in range(3)] + [CHECKPOINT_KEY]
    # Other keys in between change nothing (the topic is shared).
    _, stats = stats_bytes()
    deliver(b, [records[0], (STATS_KEY, stats), *records[1:]])
    joined = b.checkpoint.join()
    assert joined is not None
    manifest, back = joined
    assert back == value and (manifest.generation, manifest.chunks, manifest.size, manifest.offset) == (
        1,
        3,
        len(value),
        41,
    )
    assert p.model_version == 0  # a checkpoint is not a scorer
    assert b.campaigns == {} and b.stats_for("gentle_reminder")


def test_chunks_without_their_manifest_are_no_checkpoint() -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(CHUNK_BYTES + 1), 1)[:-1])
    assert b.checkpoint.span() == 2 and b.checkpoint.join() is None


def test_a_newer_generation_replaces_the_chunks_key_by_key_and_tombstones_the_rest() -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(3 * CHUNK_BYTES), 1))
    assert b.checkpoint.span() == 3 and b.checkpoint.generation == 1
    smaller = blob(CHUNK_BYTES + 9, seed=2)
    records = checkpoint_records(smaller, 2, stale=3)
    # Chunks, the manifest, then the tombstone of the key the larger generation used.
    keys = [
        chunk_key(CHECKPOINT_KEY, 0),
        chunk_key(CHECKPOINT_KEY, 1),
        CHECKPOINT_KEY,
        chunk_key(CHECKPOINT_KEY, 2),
    ]
    assert [k for k, _ in records] == keys and records[-1][1] is None
    deliver(b, records, 10)
    assert b.checkpoint.span() == 2 and b.checkpoint.generation == 2
    joined = b.checkpoint.join()
    assert joined is not None and joined[1] == smaller


def test_a_manifest_tombstone_deletes_the_checkpoint() -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(100), 1))
    b.on_record(CHECKPOINT_KEY, None, 9)
    assert b.checkpoint.join() is None


def _tamper(
    records: list[tuple[bytes, bytes | None]], index: int, value: bytes | None
) -> list[tuple[bytes, bytes | None]]:
    return [*records, (chunk_key(CHECKPOINT_KEY, index), value)]


def _flip_last_byte(record: bytes | None) -> bytes:
    assert record is not None
    return record[:-1] + bytes([record[-1] ^ 1])


_GOOD = checkpoint_records(blob(2 * CHUNK_BYTES + 100), 4)
_OTHER = checkpoint_records(blob(2 * CHUNK_BYTES + 100, seed=9), 5)
#: Records after which the latest manifest and chunks do not make a whole value: what a crash,
#: a lost record or a forger leaves.
TORN_OR_FORGED = {
    "chunk-missing": _tamper(_GOOD, 1, None),
    "chunk-of-the-next-generation": _tamper(_GOOD, 2, _OTHER[2][1]),
    "chunk-altered-same-generation": _tamper(_GOOD, 2, _flip_last_byte(_GOOD[2][1])),
    "chunk-truncated": _tamper(_GOOD, 2, (_GOOD[2][1] or b"")[:-1]),
    "chunk-refused-on-arrival": _tamper(_GOOD, 0, b"no header"),
    "manifest-of-other-bytes": [*_GOOD, (CHECKPOINT_KEY, _OTHER[-1][1])],
    "manifest-size-off-by-one": [
        *_GOOD,
        (
            CHECKPOINT_KEY,
            orjson.dumps({**orjson.loads(_GOOD[-1][1] or b""), "bytes": 2 * CHUNK_BYTES + 99}),
        ),
    ],
}


@pytest.mark.parametrize("records", list(TORN_OR_FORGED.values()), ids=list(TORN_OR_FORGED))
def test_chunks_that_do_not_match_their_manifest_are_refused(
    records: list[tuple[bytes, bytes | None]],
) -> None:
    b = Broadcasts(processor())
    deliver(b, records)  # never raises: a bad record is logged and skipped
    with pytest.raises(ChunkError):
        b.checkpoint.join()


def _manifest(**fields: object) -> bytes:
    good = {"generation": 1, "chunks": 1, "bytes": 10, "sha256": "0" * 64, "offset": 0}
    return orjson.dumps({**good, **fields})


FORGED_MANIFESTS = {
    "huge-claims": _manifest(chunks=10**9, bytes=10**12),
    "too-many-chunks": _manifest(chunks=MAX_CHUNKS + 1, bytes=MAX_CHUNKS + 1),
    "too-many-bytes": _manifest(chunks=MAX_CHUNKS, bytes=MAX_BYTES + 1),
    "bytes-beyond-the-chunks": _manifest(chunks=1, bytes=CHUNK_BYTES + 1),
    "bytes-below-the-chunks": _manifest(chunks=3, bytes=2),
    "no-chunks": _manifest(chunks=0, bytes=0),
    "negative": _manifest(generation=-1),
    "bool-count": _manifest(chunks=True),
    "float-count": _manifest(chunks=1.0),
    "string-count": _manifest(chunks="1"),
    "sha-not-hex": _manifest(sha256="z" * 64),
    "sha-upper": _manifest(sha256="A" * 64),
    "sha-short": _manifest(sha256="0" * 63),
    "missing-field": orjson.dumps({"generation": 1, "chunks": 1, "bytes": 10, "sha256": "0" * 64}),
    "extra-field": _manifest(extra=1),
    "a-list": orjson.dumps([1, 1, 10, "0" * 64, 0]),
    "not-json": b"{generation",
    "oversized": _manifest(pad="x" * MAX_MANIFEST_BYTES),
    "pickle": pickle.dumps({"generation": 1}),
    "one-record-checkpoint": b'elimu-risk-checkpoint {"format": 1}\n' + RiskModel().to_bytes(),
}


@pytest.mark.parametrize("value", list(FORGED_MANIFESTS.values()), ids=list(FORGED_MANIFESTS))
def test_a_forged_manifest_is_refused_on_arrival_and_shadows_the_last_good_one(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(100), 1))
    tracemalloc.start()
    try:
        with caplog.at_level(logging.ERROR, logger="streams.broadcast"):
            b.on_record(CHECKPOINT_KEY, value, 5)  # must not raise
        with pytest.raises(ChunkError):
            b.checkpoint.join()  # the latest manifest is this one: the good one is gone
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # nothing sized by what the manifest claims
    assert any("skipped" in r.getMessage() for r in caplog.records)
    assert b.checkpoint.generation == 1


def _chunk(generation: object, index: object, payload: bytes = b"x") -> bytes:
    return b"elimu-chunk " + orjson.dumps({"generation": generation, "index": index}) + b"\n" + payload


BAD_CHUNK_KEYS = [b"-1", b"01", b"+1", b"1.0", b" 1", b"", b"abc", str(MAX_CHUNKS).encode(), b"99999", b"1/2"]


@pytest.mark.parametrize("suffix", BAD_CHUNK_KEYS, ids=[s.decode() or "empty" for s in BAD_CHUNK_KEYS])
def test_a_chunk_key_out_of_range_or_misspelt_is_refused(suffix: bytes) -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(100), 1))
    b.on_record(CHECKPOINT_KEY + b"/" + suffix, _chunk(1, 1), 5)  # must not raise
    assert b.checkpoint.span() == 1
    joined = b.checkpoint.join()
    assert joined is not None and joined[1] == blob(100)


BAD_CHUNKS = {
    "no-header": b"x" * 10,
    "header-not-json": b"elimu-chunk {index\nx",
    "header-index-mismatch": _chunk(1, 1),
    "header-extra-field": b"elimu-chunk " + orjson.dumps({"generation": 1, "index": 0, "x": 1}) + b"\nx",
    "negative-generation": _chunk(-1, 0),
    "bool-generation": _chunk(True, 0),
    "oversized-payload": _chunk(1, 0, b"x" * (CHUNK_BYTES + 1)),
    "header-past-its-limit": b"elimu-chunk " + b" " * 200 + b'{"generation": 1, "index": 0}\nx',
}


@pytest.mark.parametrize("value", list(BAD_CHUNKS.values()), ids=list(BAD_CHUNKS))
def test_a_bad_chunk_is_refused_and_empties_its_key(value: bytes, caplog: pytest.LogCaptureFixture) -> None:
    b = Broadcasts(processor())
    deliver(b, checkpoint_records(blob(100), 1))
    with caplog.at_level(logging.ERROR, logger="streams.broadcast"):
        b.on_record(chunk_key(CHECKPOINT_KEY, 0), value, 5)  # must not raise
    assert any("skipped" in r.getMessage() for r in caplog.records)
    assert b.checkpoint.span() == 0  # the good chunk 0 is no longer the latest record of its key
    with pytest.raises(ChunkError, match="missing"):
        b.checkpoint.join()


def test_the_chunk_buffer_is_bounded_by_key() -> None:
    """At most MAX_CHUNKS keys of at most CHUNK_BYTES each: about MAX_BYTES whatever is written."""
    b = Broadcasts(processor())
    for i in range(MAX_CHUNKS + 50):
        b.on_record(chunk_key(CHECKPOINT_KEY, i), _chunk(1, i), i)
    for _ in range(3):  # rewriting a key replaces its chunk
        b.on_record(chunk_key(CHECKPOINT_KEY, 0), _chunk(2, 0), 0)
    assert len(b.checkpoint.chunks) == MAX_CHUNKS and b.checkpoint.span() == MAX_CHUNKS
    assert MAX_CHUNKS * CHUNK_BYTES < MAX_BYTES + CHUNK_BYTES


def test_a_split_refuses_what_a_reader_would() -> None:
    with pytest.raises(ValueError):
        split(CHECKPOINT_KEY, b"", 1, 0)
    with pytest.raises(ValueError):
        split(CHECKPOINT_KEY, b"x", -1, 0)
    big = bytes(MAX_BYTES + 1)
    with pytest.raises(ValueError):
        split(CHECKPOINT_KEY, big, 1, 0)


# ---------------------------------------------------------------------------------------------
# Risk scorer


def test_a_broadcast_scorer_is_adopted_by_the_processor() -> None:
    p = processor()
    b = Broadcasts(p)
    original = p.model
    trained = trained_model(5)
    trained.served = LOGISTIC  # the learnt candidate, so the new model's scores differ

    b.on_record(SCORER_KEY, trained.to_bytes(scoring_only=True), 0)

    assert p.model is not original
    assert p.model.served == LOGISTIC  # the scorer carries the candidate it serves
    assert p.model.n_learned == 5
    assert p.model_version == 5
    x = {"recency_d": 2.0, "events_7d": 1.0}
    assert p.model.predict(x)[0] == pytest.approx(trained.predict(x)[0])
    assert p.model.predict(x)[0] != pytest.approx(original.predict(x)[0])


def test_a_newer_scorer_replaces_the_older_one() -> None:
    p = processor()
    b = Broadcasts(p)
    b.on_record(SCORER_KEY, trained_model(3).to_bytes(scoring_only=True), 0)
    b.on_record(SCORER_KEY, trained_model(8).to_bytes(scoring_only=True), 1)
    assert p.model_version == 8 and p.model.n_learned == 8


def framed(header: dict[str, object], body: bytes) -> bytes:
    """A scorer record as `RiskModel.to_bytes` frames it: magic, JSON header, newline, JSON body."""
    return b"elimu-risk " + orjson.dumps(header) + b"\n" + body


class _Touch:
    """A pickle that creates a file when loaded: what a Kafka writer would try first."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


GOOD_HEADER = {"format": FORMAT_VERSION, "river": RIVER_VERSION}
GOOD_BODY = trained_model(2).to_bytes(scoring_only=True).partition(b"\n")[2]
PWNED = os.path.join(tempfile.gettempdir(), f"elimu-broadcast-pwned-{uuid.uuid4().hex}")


def _with_a_book() -> bytes:
    model = trained_model(2)
    model.score("u-1", {"recency_d": 1.0}, AT)  # a pending label: trainer state, not a scorer's
    return model.to_bytes().partition(b"\n")[2]


CORRUPT_SCORERS = {
    "garbage": b"definitely not a model",
    "empty": b"",
    "bad-header-json": b"elimu-risk {nope\nbody",
    "other-format": framed({**GOOD_HEADER, "format": FORMAT_VERSION + 1}, GOOD_BODY),
    "bad-body": framed(GOOD_HEADER, b"nope"),
    "missing-keys": framed(GOOD_HEADER, orjson.dumps({"config": {"horizon_ms": 1}})),
    "truncated": framed(GOOD_HEADER, GOOD_BODY[:-40]),
    "pickle-format-2": framed({**GOOD_HEADER, "format": 2}, pickle.dumps(_Touch(PWNED))),
    "pickle-format-3": framed(GOOD_HEADER, pickle.dumps(_Touch(PWNED))),
    "with-a-book": framed(GOOD_HEADER, _with_a_book()),  # a scorer carries no pending labels
    "oversized": framed(GOOD_HEADER, GOOD_BODY + b" " * (1024 * 1024)),
}


@pytest.mark.parametrize("value", list(CORRUPT_SCORERS.values()), ids=list(CORRUPT_SCORERS))
def test_a_corrupt_scorer_is_ignored(value: bytes) -> None:
    p = processor()
    b = Broadcasts(p)
    good = trained_model(4)
    b.on_record(SCORER_KEY, good.to_bytes(scoring_only=True), 0)
    adopted = p.model

    b.on_record(SCORER_KEY, value, 1)  # must not raise

    assert p.model is adopted
    assert p.model_version == 4
    assert not os.path.exists(PWNED)  # nothing in a record ever runs


def test_a_scorer_from_another_river_release_is_adopted() -> None:
    # Plain numbers mean the same in any River release: only the format is checked.
    p = processor()
    Broadcasts(p).on_record(SCORER_KEY, framed({**GOOD_HEADER, "river": "0.0.1"}, GOOD_BODY), 0)
    assert p.model_version == 2


def test_a_scorer_tombstone_is_ignored() -> None:
    p = processor()
    b = Broadcasts(p)
    original = p.model
    b.on_record(SCORER_KEY, None, 0)
    assert p.model is original and p.model_version == 0


def test_the_framing_used_for_corrupt_scorers_is_valid_when_intact() -> None:
    p = processor()
    Broadcasts(p).on_record(SCORER_KEY, framed(GOOD_HEADER, GOOD_BODY), 0)
    assert p.model_version == 2
