"""The batch processor without Faust: a dict as the state store, records as Kafka gives them."""

from __future__ import annotations

import orjson
import pytest

from infra import topics
from infra.settings import DEFAULT_RULES
from models.gamification import UserState
from models.rules import Rules
from streams.engagement import EngagementProcessor
from streams.records import Record, owner_partition

NOW = 1_795_000_000_000  # 2026-11-18T...Z
PARTS = 8


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, UserState] = {}
        self.puts = 0

    def get(self, key: str) -> UserState | None:
        return self.data.get(key)

    def put(self, key: str, state: UserState) -> None:
        self.puts += 1
        self.data[key] = state


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.from_toml(DEFAULT_RULES.read_text())


@pytest.fixture
def processor(rules: Rules) -> EngagementProcessor:
    return EngagementProcessor(rules, lambda topic: PARTS, 30 * 86_400_000, clock_ms=lambda: NOW)


_offset = 0


def rec(
    value: object,
    user: str = "u-1",
    topic: str = topics.BEHAVIOR_EVENTS,
    partition: int | None = None,
    key: bytes | str | None = "auto",
) -> Record:
    global _offset
    _offset += 1
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    k = user.encode() if key == "auto" else key
    part = owner_partition(user.encode(), PARTS) if partition is None else partition
    return Record(topic, part, _offset, k if not isinstance(k, str) else k.encode(), raw, NOW)


def ev(
    eid: str, etype: str = "lesson_complete", user: str = "u-1", ts: int = NOW - 60_000, **props: object
) -> dict:
    return {"event_id": eid, "user_id": user, "type": etype, "ts": ts, "props": props}


def test_applies_events_and_writes_each_user_once_per_batch(processor: EngagementProcessor) -> None:
    store = DictStore()
    out = processor.process([rec(ev("e1")), rec(ev("e2")), rec(ev("e3", user="u-2"), user="u-2")], store)
    assert out.processed == 3
    assert len(out.applied) == 3
    assert store.puts == 2  # one write per touched user, not per event
    assert store.data["u-1"].xp > store.data["u-2"].xp > 0


def test_duplicate_event_ids_change_nothing(processor: EngagementProcessor) -> None:
    store = DictStore()
    processor.process([rec(ev("e1"))], store)
    xp = store.data["u-1"].xp
    out = processor.process([rec(ev("e1")), rec(ev("e1"))], store)
    assert out.duplicates == 2
    assert out.applied == []
    assert store.data["u-1"].xp == xp
    # The user is still reported as touched so the serving view is re-projected.
    assert "u-1" in out.touched


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1,2]", "not_object"),
        (orjson.dumps({"event_id": "x", "user_id": "u-1", "type": "login"}), "missing_field"),
        (orjson.dumps(ev("f1", ts=NOW + 10 * 60_000)), "ts_in_future"),
        (orjson.dumps(ev("x" * 200)), "id_too_long"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_a_reason(
    processor: EngagementProcessor, raw: bytes, reason: str
) -> None:
    store = DictStore()
    out = processor.process([rec(raw), rec(ev("ok-1"))], store)
    assert [d.reason for d in out.dead_letters] == [reason]
    assert out.dead_letters[0].as_dict()["raw"] == raw.decode()
    assert len(out.applied) == 1  # the good message after it is not lost


def test_binary_garbage_is_kept_whole_in_the_dead_letter(processor: EngagementProcessor) -> None:
    out = processor.process([rec(b"\xff\xfe\x00garbage")], DictStore())
    d = out.dead_letters[0].as_dict()
    assert d["reason"] == "not_json"
    assert d["raw"] is None and d["raw_b64"]


def test_key_that_is_not_the_user_id_is_refused(processor: EngagementProcessor) -> None:
    out = processor.process([rec(ev("e1", user="u-1"), key=b"someone-else")], DictStore())
    assert [d.reason for d in out.dead_letters] == ["key_mismatch"]


def test_record_on_a_partition_its_user_does_not_own_is_rerouted(processor: EngagementProcessor) -> None:
    owner = owner_partition(b"u-1", PARTS)
    wrong = (owner + 1) % PARTS
    store = DictStore()
    out = processor.process([rec(ev("e1"), partition=wrong), rec(ev("e2"), key=None, partition=wrong)], store)
    assert [(o, k) for _, k, o in out.misrouted] == [(owner, b"u-1"), (owner, b"u-1")]
    assert out.applied == [] and store.data == {}


def test_profile_sets_timezone_for_later_events(processor: EngagementProcessor) -> None:
    store = DictStore()
    profile = {"user_id": "u-1", "timezone": "Pacific/Kiritimati"}
    processor.process([rec(profile, topic=topics.USER_PROFILES)], store)
    assert store.data["u-1"].timezone == "Pacific/Kiritimati"


def test_processing_error_is_dead_lettered_not_raised(processor: EngagementProcessor, monkeypatch) -> None:
    import streams.engagement as mod

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(mod, "apply_event", boom)
    out = processor.process([rec(ev("e1"))], DictStore())
    assert out.dead_letters[0].reason == "processing_error"
    assert "kaboom" in out.dead_letters[0].message
