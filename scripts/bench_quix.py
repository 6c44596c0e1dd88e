"""`elimu bench quix`: a Quix Streams peer of the worker on the same broker and the same events.

What is measured and why: the issue asks how a mainstream Python stream processor does on the same
workload against the embedded Tansu broker. The same ``behavior-events`` topic as ``elimu bench
throughput`` (``_produce_events``: simulator traffic, 8 partitions) is consumed by a minimal Quix
Streams application doing per-user stateful work in its RocksDB state (per key: an event count and
the sum of ``duration_s``, i.e. a read-modify-write of the user's state per event, with its
changelog topic on). That is far less than the worker's full gamification, so it bounds what
Quix's per-message path costs, not what the product would cost on Quix. Events/s is measured from
the first processed event to the last (start-up, topic creation and group join excluded), next to
a bare aiokafka consumer on the same topic in the same run (the ceiling ``elimu bench throughput``
also reports).

Tansu gap: Quix derives its changelog topic's config from the source topic's ``retention.ms`` as
returned by DescribeConfigs, and Tansu does not return that key, so ``TopicManager`` raises
``KeyError: 'retention.ms'``. With ``--patch-retention`` (the default) the missing key is read as
``-1`` (infinite, Kafka's meaning of "unset" for compacted changelogs); ``--no-patch-retention``
shows the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

from scripts.bench_stack import bench_stack, produce_events, raw_consume_rate
from scripts.kafka_dist import BrokerKind


def _patch_retention() -> None:
    from quixstreams.models.topics import manager

    original = manager.TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive(cls: Any, topics: Any) -> Any:
        for t in topics:
            t.broker_config.extra_config.setdefault("retention.ms", "-1")
        return original(cls, topics)

    manager.TopicManager.derive_topic_config = classmethod(derive)  # type: ignore[method-assign,assignment]


def _quix_rate(kafka: str, n: int, state_dir: str, patch: bool) -> dict[str, Any]:
    """Run in a fresh process: Quix installs signal handlers and owns its consumer's lifetime."""
    from quixstreams import Application, State

    if patch:
        _patch_retention()
    app = Application(
        broker_address=kafka,
        consumer_group=f"quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    topic = app.topic("behavior-events", value_deserializer="json", key_deserializer="str")
    seen = 0
    first = last = 0.0

    def per_user(value: dict[str, Any], state: State[str, int]) -> dict[str, Any]:
        nonlocal seen, first, last
        count = int(state.get("count", 0)) + 1
        seconds = int(state.get("seconds", 0)) + int(value.get("props", {}).get("duration_s", 0))
        state.set("count", count)
        state.set("seconds", seconds)
        seen += 1
        if seen == 1:
            first = time.perf_counter()
        if seen >= n:
            last = time.perf_counter()
            app.stop()
        return value

    app.dataframe(topic).apply(per_user, stateful=True)
    app.run()
    if seen < n:
        raise RuntimeError(f"Quix stopped after {seen}/{n} events")
    return {"events": n, "quix_eps": (n - 1) / max(last - first, 1e-9)}


def run(events: int, users: int, patch: bool, kind: BrokerKind = "tansu") -> dict[str, Any]:
    with bench_stack(kind) as st:
        asyncio.run(produce_events(st.kafka, events, users))
        raw = asyncio.run(raw_consume_rate(st.kafka, events))
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            quix: dict[str, Any] = pool.submit(
                _quix_rate, st.kafka, events, str(st.data_dir / "quix-state"), patch
            ).result(timeout=900)
    return {
        "broker": kind,
        "events": events,
        "users": users,
        "patched_retention_ms": patch,
        "quix_eps": round(quix["quix_eps"]),
        "raw_aiokafka_eps": round(raw),
        "ratio": round(quix["quix_eps"] / raw, 3),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench quix")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--patch-retention", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = run(args.events, args.users, args.patch_retention, args.broker)
    print(
        f"quix: {r['quix_eps']:,} events/s (per-user count+sum in RocksDB);"
        f" raw aiokafka {r['raw_aiokafka_eps']:,}/s (ratio {r['ratio']})",
        flush=True,
    )
    text = orjson.dumps(r, option=orjson.OPT_INDENT_2).decode()
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0
