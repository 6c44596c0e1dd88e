"""`elimu bench quix`: the gamification fold as a Quix Streams application, next to our worker
doing the same (``ELIMU_SLICES=engagement``), on the same broker, the same events, in one run.

What is measured and why: the speed issue asks whether the engine's own runtime is at least as
fast as a mainstream Python stream processor running *the product*, not a counter. The same
``behavior-events`` topic as ``elimu bench throughput`` (simulator traffic, 8 partitions) is
consumed by:

* ``--app fold`` (the default): a Quix Streams application that does per event what our
  engagement slice does per event: validate the record (``models.events.parse_behavior``), load the
  user's state from Quix's RocksDB state, apply the shipped rule book
  (``models.gamification.apply_event``: dedup, XP, levels, streaks, badges, leaderboard periods),
  store the state back (changelog on) and write the engagement message
  (``streams.serving.engagement_message``) to an output topic. It does *not* write Redis views or
  pushes, which our worker does: the comparison favours Quix.
* ``--app counter``: the earlier minimal app (per-user count and sum), bounding Quix's per-message
  path alone.

Then our worker runs only its engagement slice (gamification: the same fold, plus the Redis view,
leaderboards and pushes) on the same topic in the same run. Events/s is measured from the first
processed event to the last (start-up, topic creation and group join excluded), next to a bare
aiokafka consumer on the same topic (the ceiling ``elimu bench throughput`` also reports).

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

from scripts.bench_stack import bench_stack, emit, produce_events, raw_consume_rate, worker_rate
from scripts.kafka_dist import BrokerKind


def _patch_retention() -> None:
    from quixstreams.models.topics import manager

    original = manager.TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive(cls: Any, topics: Any) -> Any:
        for t in topics:
            t.broker_config.extra_config.setdefault("retention.ms", "-1")
        return original(cls, topics)

    manager.TopicManager.derive_topic_config = classmethod(derive)  # type: ignore[method-assign,assignment]


def _quix_rate(kafka: str, n: int, state_dir: str, patch: bool, app_kind: str) -> dict[str, Any]:
    """Run in a fresh process: Quix installs signal handlers and owns its consumer's lifetime."""
    from quixstreams import Application, State

    from infra import topics
    from infra.settings import DEFAULT_RULES
    from models.events import InvalidEvent, parse_behavior
    from models.gamification import UserState, apply_event
    from models.rules import Rules
    from models.time_units import DAY_MS
    from streams.engagement import Applied
    from streams.serving import engagement_message

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
    seen = 0
    first = last = 0.0

    def count() -> None:
        nonlocal seen, first, last
        seen += 1
        if seen == 1:
            first = time.perf_counter()
        if seen >= n:
            last = time.perf_counter()
            app.stop()

    if app_kind == "counter":
        topic = app.topic(topics.BEHAVIOR_EVENTS, value_deserializer="json", key_deserializer="str")

        def per_user(value: dict[str, Any], state: State[str, int]) -> dict[str, Any]:
            state.set("count", int(state.get("count", 0)) + 1)
            seconds = int(state.get("seconds", 0)) + int(value.get("props", {}).get("duration_s", 0))
            state.set("seconds", seconds)
            count()
            return value

        app.dataframe(topic).apply(per_user, stateful=True)
    else:
        rules = Rules.from_toml(DEFAULT_RULES.read_text())
        window_ms = 7 * DAY_MS  # infra.settings.Settings.dedup_window_days, as the worker runs
        topic = app.topic(topics.BEHAVIOR_EVENTS, value_deserializer="bytes", key_deserializer="str")
        out = app.topic("quix-engagement-updates", value_serializer="json", key_serializer="str")

        def fold(value: bytes, state: State[str, Any]) -> dict[str, Any] | None:
            try:
                event = parse_behavior(value, int(time.time() * 1000))
                raw = state.get("user")
                user = UserState.from_dict(raw) if raw else UserState(user_id=event.user_id)
                effects = apply_event(user, event, rules, window_ms)
            except (InvalidEvent, ValueError):
                count()
                return None
            if not effects.duplicate:
                state.set("user", user.to_dict())
            count()
            return engagement_message(user, [Applied(event, effects)], rules) if effects.changed else None

        sdf = app.dataframe(topic).apply(fold, stateful=True)
        sdf = sdf.filter(lambda message: message is not None)
        sdf.to_topic(out)
    app.run()
    if seen < n:
        raise RuntimeError(f"Quix stopped after {seen}/{n} events")
    return {"events": n, "quix_eps": (n - 1) / max(last - first, 1e-9)}


def run(
    events: int, users: int, patch: bool, kind: BrokerKind = "tansu", app_kind: str = "fold"
) -> dict[str, Any]:
    with bench_stack(kind) as st:
        asyncio.run(produce_events(st.kafka, events, users))
        raw = asyncio.run(raw_consume_rate(st.kafka, events))
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            quix: dict[str, Any] = pool.submit(
                _quix_rate, st.kafka, events, str(st.data_dir / "quix-state"), patch, app_kind
            ).result(timeout=900)
        ours = worker_rate(st, events, 1, "engagement")
    return {
        "broker": kind,
        "events": events,
        "users": users,
        "app": app_kind,
        "patched_retention_ms": patch,
        "quix_eps": round(quix["quix_eps"]),
        "worker_gamification_eps": round(ours),
        "worker_vs_quix": round(ours / quix["quix_eps"], 2),
        "raw_aiokafka_eps": round(raw),
        "ratio": round(quix["quix_eps"] / raw, 3),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench quix")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--patch-retention", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--app", choices=("fold", "counter"), default="fold", help="what the Quix app does")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    r = run(args.events, args.users, args.patch_retention, args.broker, args.app)
    print(
        f"quix ({r['app']}): {r['quix_eps']:,} events/s; our worker, gamification alone:"
        f" {r['worker_gamification_eps']:,} events/s ({r['worker_vs_quix']}x Quix);"
        f" raw aiokafka {r['raw_aiokafka_eps']:,}/s",
        flush=True,
    )
    emit(r, args.json)
    return 0
