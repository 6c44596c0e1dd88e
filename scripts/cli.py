"""The `elimu` command (CONTRACT.md §2)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

import orjson

from infra.settings import Settings
from scripts.kafka_dist import BROKER_KINDS


def _settings_with_stack() -> Settings:
    """Settings from the environment, falling back to the running `elimu up` stack's addresses."""
    from dataclasses import replace

    from scripts.stack import stack_file

    s = Settings.from_env()
    stack = stack_file(s)
    return replace(s, kafka=s.kafka or stack.get("kafka"), redis=s.redis or stack.get("redis"))


def cmd_up(args: argparse.Namespace) -> int:
    from scripts.stack import up

    return up(
        Settings.from_env(),
        workers=args.workers,
        demo=not args.no_demo,
        users=args.users,
        rate=args.rate,
        broker=args.broker,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.app import run_worker

    sys.argv = [sys.argv[0]]  # Faust parses argv itself
    run_worker(_settings_with_stack())
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from api.app import run

    run(_settings_with_stack(), host=args.host)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    from delivery.main import run_deliverer

    run_deliverer(_settings_with_stack())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import issue_token

    print(
        issue_token(Settings.from_env().secret(), args.user_id, "admin" if args.admin else "user", args.ttl)
    )
    return 0


def cmd_sms_callback_url(args: argparse.Namespace) -> int:
    from delivery.config import DeliveryConfig
    from models.receipts import africastalking_callback_url

    settings = Settings.from_env()
    print(
        africastalking_callback_url(DeliveryConfig.from_env(settings.api_port).public_url, settings.secret())
    )
    return 0


async def _produce(bootstrap: str, topic: str, lines: TextIO) -> tuple[int, int]:
    from aiokafka import AIOKafkaProducer

    from infra.kafka_auth import client_security
    from infra.topics import KEY_FIELD

    key_field = KEY_FIELD.get(topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **client_security())
    await producer.start()
    sent = unkeyed = 0
    try:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            key: bytes | None = None
            try:
                obj = orjson.loads(line)
                if key_field and isinstance(obj, dict) and isinstance(obj.get(key_field), str):
                    key = obj[key_field].encode()
            except orjson.JSONDecodeError:
                pass  # published as is: the worker dead-letters it with a reason
            if key is None:
                unkeyed += 1
            await producer.send(topic, line.encode(), key=key)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent, unkeyed


def cmd_produce(args: argparse.Namespace) -> int:
    s = _settings_with_stack()
    src = open(args.file) if args.file else sys.stdin  # noqa: SIM115
    try:
        sent, unkeyed = asyncio.run(_produce(s.kafka_bootstrap, args.topic, src))
    finally:
        if args.file:
            src.close()
    note = f" ({unkeyed} without a key)" if unkeyed else ""
    print(f"published {sent} message(s) to {args.topic}{note}", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from scripts.simulator import run

    s = _settings_with_stack()
    sent = asyncio.run(run(s.kafka_bootstrap, args.users, args.rate, args.duration, args.seed))
    print(f"published {sent} message(s)", file=sys.stderr)
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    from scripts.lag import print_lag

    return print_lag(_settings_with_stack())


def cmd_bench(args: argparse.Namespace) -> int:
    from scripts.bench import main as bench_main

    return bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="elimu", description="Elimu Pulse: real-time engagement engine")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole stack (embedded broker and Redis unless configured)")
    up.add_argument("--no-demo", action="store_true", help="do not start the traffic simulator")
    up.add_argument("--workers", type=int, default=1)
    up.add_argument("--users", type=int, default=200, help="demo users")
    up.add_argument("--rate", type=float, default=20.0, help="demo events per second")
    up.add_argument(
        "--broker",
        choices=BROKER_KINDS,
        help="embedded broker: Apache Kafka (default where Java 17+ runs; durable) or Tansu (memory-only)",
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser("worker", help="run one Faust worker").set_defaults(func=cmd_worker)

    api = sub.add_parser("api", help="run the FastAPI app under uvicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.set_defaults(func=cmd_api)

    sub.add_parser(
        "deliver", help="run one delivery service (EMAIL, PUSH, SMS sends of `notifications`)"
    ).set_defaults(func=cmd_deliver)

    tok = sub.add_parser("token", help="print a signed token")
    tok.add_argument("user_id")
    tok.add_argument("--admin", action="store_true")
    tok.add_argument("--ttl", type=int, default=24 * 3600, help="seconds")
    tok.set_defaults(func=cmd_token)

    sub.add_parser(
        "sms-callback-url", help="print Africa's Talking's delivery report URL (a credential)"
    ).set_defaults(func=cmd_sms_callback_url)

    prod = sub.add_parser("produce", help="publish JSON lines to a topic, keyed as the contract says")
    prod.add_argument("topic")
    prod.add_argument("file", nargs="?", type=Path)
    prod.set_defaults(func=cmd_produce)

    sim = sub.add_parser("simulate", help="synthetic traffic on all input topics")
    sim.add_argument("--users", type=int, required=True)
    sim.add_argument("--rate", type=float, required=True, help="events per second")
    sim.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    sim.add_argument("--seed", type=int, default=7)
    sim.set_defaults(func=cmd_simulate)

    sub.add_parser("lag", help="consumer lag per group/topic/partition").set_defaults(func=cmd_lag)

    bench = sub.add_parser("bench", help="benchmarks (see docs/benchmarks.md)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
