"""Property-based fuzz of every input topic against a running worker.

Per topic, ``FUZZ_EXAMPLES`` records that are each bad by the contract (tests/hostile/fuzz.py:
random bytes, wrong JSON types, 5,000 levels of nesting, strings up to 200 KB, control characters
and lone surrogates in ids, ids over 128 UTF-8 bytes, times in 1970 or past year 9999, keys that
are not the id, empty keys) are generated up front and produced in one go. Then an honest user
posts one event. Every bad record must come back as a dead letter with a reason (found by its
topic, partition and offset), each dead letter must be small, the worker must stay up, and the
honest event must be applied: nothing bad stalled the worker or reached state.

The seed is printed on failure; ``ELIMU_FUZZ_SEED`` replays one.
"""

from __future__ import annotations

import os
from collections import Counter

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.topics import COMPACTED, INPUT_TOPICS, JOB_POSTINGS, MARKET
from models.events import REASONS
from tests.conftest import wait_until
from tests.hostile.fuzz import Bad, bad_records, fresh_seed, generate
from tests.hostile.kit import (
    MAX_DEAD_LETTER_BYTES,
    Origin,
    Outgoing,
    Stack,
    dead_letters,
    honest_event_applied,
    new_id,
    now_ms,
    offer_all,
    produce_all,
)

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("ELIMU_FUZZ_EXAMPLES", "200"))
#: What a refusal of bad *input* may say: the parsers' vocabulary and the router's. Never
#: ``processing_error``: that is an exception the code did not expect, i.e. a bug.
INPUT_REASONS = REASONS | {"key_mismatch"}


@pytest.mark.parametrize("topic", INPUT_TOPICS)
async def test_every_bad_record_is_dead_lettered_small_and_an_honest_event_still_applies(
    stack: Stack, topic: str
) -> None:
    seed = int(os.environ.get("ELIMU_FUZZ_SEED") or fresh_seed())
    bads = generate(bad_records(topic, now_ms()), FUZZ_EXAMPLES, seed)
    assert len(bads) >= FUZZ_EXAMPLES // 2, f"hypothesis drew only {len(bads)} (seed {seed})"
    outgoing: list[Outgoing] = []
    positions: list[int] = []  # index in ``outgoing`` of each bad record
    for bad in bads:
        if bad.anchor is not None:
            outgoing.append((topic, bad.anchor[0], bad.anchor[1], None))
        positions.append(len(outgoing))
        outgoing.append((topic, bad.key, bad.value, None))

    async with (
        dead_letters(stack.kafka) as letters,
        httpx.AsyncClient(base_url=stack.url, timeout=15) as http,
    ):
        offered = await offer_all(stack.kafka, outgoing)
        # Apache Kafka refuses a keyless record on a compacted topic at the door (Tansu takes it
        # and the engine dead-letters it): refused there, it never reaches the engine.
        door = [(bads[positions.index(i)], why) for i, (o, why) in enumerate(offered) if o is None]
        unexpected = [(b.defect, b.key, why) for b, why in door if topic not in COMPACTED or b.key]
        assert not unexpected, unexpected[:5]
        origins: dict[Origin, Bad] = {
            origin: bad
            for i, bad in zip(positions, bads, strict=True)
            if (origin := offered[i][0]) is not None
        }
        # Produced after every bad record: applied only if nothing before it stalled the worker.
        await honest_event_applied(stack, http)
        if topic == JOB_POSTINGS:
            await honest_posting_forwarded(stack)
        await letters.wait_for(origins, stack, timeout=90)
        stack.assert_alive()

    problems: list[str] = []
    for origin, bad in origins.items():
        for letter in letters.by_origin[origin]:
            what = f"{bad.defect} at {origin} (value {len(bad.value)} B, key {len(bad.key or b'')} B)"
            if letter.reason not in INPUT_REASONS:
                problems.append(f"{what}: reason {letter.reason!r}: {letter.body.get('message')}")
            if letter.size >= MAX_DEAD_LETTER_BYTES:
                problems.append(f"{what}: dead letter of {letter.size} bytes")
            if letter.body.get("raw_bytes") != len(bad.value):
                problems.append(f"{what}: raw_bytes {letter.body.get('raw_bytes')} != {len(bad.value)}")
    defects = Counter(bad.defect.split(":")[0] for bad in bads)
    assert not problems, f"seed {seed}, {len(problems)} problems:\n" + "\n".join(problems[:20])
    # What the fuzz covered, for the report (-rA shows it).
    print(
        f"{topic}: seed {seed}, {len(bads)} bad records ({len(door)} refused by the broker), {dict(defects)}"
    )
    # One input record, one refusal (a profile goes to two processors; only one reports it).
    twice = [o for o in origins if len(letters.by_origin[o]) > 1]
    assert not twice, f"records dead-lettered more than once: {twice[:5]}"


async def honest_posting_forwarded(stack: Stack) -> None:
    """A valid posting produced now reaches the market topic: the postings agent is not stalled."""
    job_id = new_id("honest-job")
    posting = {"job_id": job_id, "title": "Analyst", "posted_at": now_ms() - 1000, "skills": ["sql"]}
    await produce_all(stack.kafka, [(JOB_POSTINGS, job_id.encode(), orjson.dumps(posting), None)])
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(MARKET, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)

        async def forwarded() -> bool:
            stack.assert_alive()
            batch = await consumer.getmany(tp, timeout_ms=200)
            return any(m.key == job_id.encode() for m in batch.get(tp, []))

        await wait_until(forwarded, timeout=45, what="honest posting on the market topic")
    finally:
        await consumer.stop()
