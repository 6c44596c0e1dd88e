"""`elimu bench fanout`: live fan-out of one channel to N websocket clients of one API process.

What is measured and why: every API process holds one Redis pub/sub connection and hands each
channel message to all of its local websocket connections (api/hub.py). A public channel such as
``leaderboard:daily`` is the worst case: every signed-in client may subscribe to it, so one publish
becomes N frames. Here one API process (started as ``elimu bench latency`` starts it) serves N
websocket clients, all in this process on one asyncio loop, all subscribed to ``leaderboard:daily``;
M leaderboard-shaped messages are published through ``ChannelLog.publish`` straight into Redis at a
steady rate. Per message we take the time from just before the publish to the *last* of the N
clients receiving it (delivery-to-all), and count messages delivered vs expected. The API's RSS
and CPU are sampled from /proc (psutil). The baseline, in the same run against the same API
process, is one connection: the ratio is the cost of fanning out.

The clients share the machine (and its two cores) with the API, Redis and the broker, so at high
N the figure includes the clients' own receive work; the bench process's CPU is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil

from api.auth import issue_token
from infra.channels import ChannelLog
from infra.net import free_port, wait_for_port
from infra.redis_conn import connect
from scripts.bench_stack import SECRET, Stack, bench_stack, emit, pct, spawn, stop

#: ``market`` (the default): every message must reach every client, so the figures count frames.
#: ``leaderboard:daily`` is a snapshot channel: a client that falls behind gets only the newest
#: snapshot (api/ws_connection.py), so there "delivered" counts what reached clients, not a loss.
CHANNELS = ("market", "leaderboard:daily")
#: Connections opened at once; the rest wait (keeps the listen backlog and handshakes sane).
CONNECT_CONCURRENCY = 100


@dataclass
class _Client:
    received: dict[int, float] = field(default_factory=dict)


def _leaderboard_payload(i: int) -> dict[str, Any]:
    """Shaped like the worker's leaderboard push (streams/serving.py): the top 10 of a bucket."""
    return {
        "period": "daily",
        "bucket": "2026-11-22",
        "seq": i,
        "entries": [
            {"rank": r + 1, "user_id": f"u-{(i + r) % 997}", "score": 5000 - r * 37} for r in range(10)
        ],
    }


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


async def _connect(
    url: str, client: _Client, ready: asyncio.Queue[Any], compress: bool, channel: str
) -> None:
    """One client: connect, subscribe, then record the arrival time of every channel message."""
    import websockets

    for attempt in range(20):
        try:
            async with websockets.connect(
                url,
                max_size=None,
                ping_interval=None,
                open_timeout=30,
                # Browsers negotiate permessage-deflate, so by default the clients do too.
                compression="deflate" if compress else None,
            ) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
                reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("op") != "subscribed":
                    # The hub may not be connected yet right after start-up: retry.
                    raise RuntimeError(f"subscribe failed: {reply}")
                await ready.put(ws)
                async for raw in ws:
                    now = time.perf_counter()
                    msg = orjson.loads(raw)
                    if msg.get("channel") == channel and "id" in msg:
                        client.received[int(msg["id"])] = now
                return
        except (OSError, RuntimeError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            if attempt == 19:
                await ready.put(exc)
                return
            await asyncio.sleep(0.5)


async def _run_once(
    st: Stack,
    api_url: str,
    api: psutil.Process,
    connections: int,
    messages: int,
    rate: float,
    compress: bool,
    channel: str,
) -> dict[str, Any]:
    # One user per connection, as in production: a user may hold only a few sockets per process.
    base = api_url.replace("http", "ws") + "/v1/ws?token="
    urls = [base + issue_token(SECRET, f"bench-fanout-{i}", "user", 3600) for i in range(connections)]
    rss_idle = api.memory_info().rss
    clients = [_Client() for _ in range(connections)]
    ready: asyncio.Queue[Any] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []
    t_connect = time.perf_counter()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def start_one(c: _Client, url: str) -> None:
        async with sem:
            tasks.append(asyncio.create_task(_connect(url, c, ready, compress, channel)))
            got = await ready.get()
            if isinstance(got, BaseException):
                raise RuntimeError(f"a client could not connect: {got!r}")

    await asyncio.gather(*(start_one(c, url) for c, url in zip(clients, urls, strict=True)))
    connect_s = time.perf_counter() - t_connect
    await asyncio.sleep(1.0)
    rss_connected = api.memory_info().rss

    redis = connect(st.redis)
    log = ChannelLog(redis)
    sent_at: dict[int, float] = {}
    rss_peak = rss_connected
    me = psutil.Process()
    cpu_api0, cpu_me0 = sum(api.cpu_times()[:2]), sum(me.cpu_times()[:2])
    start = time.perf_counter()
    try:
        for i in range(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.perf_counter()
            msg_id = await log.publish(channel, "leaderboard", _leaderboard_payload(i))
            sent_at[msg_id] = t
            if i % 20 == 0:
                rss_peak = max(rss_peak, api.memory_info().rss)
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline:
            if all(len(c.received) >= messages for c in clients):
                break
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - start
        cpu_api = sum(api.cpu_times()[:2]) - cpu_api0
        cpu_me = sum(me.cpu_times()[:2]) - cpu_me0
        rss_peak = max(rss_peak, api.memory_info().rss)
    finally:
        await redis.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    to_all: list[float] = []
    delivered = 0
    for msg_id, t in sent_at.items():
        arrivals = [c.received.get(msg_id) for c in clients]
        got = [a for a in arrivals if a is not None]
        delivered += len(got)
        if len(got) == connections:
            to_all.append(max(got) - t)
    to_all.sort()
    return {
        "connections": connections,
        "messages": messages,
        "rate": rate,
        "compression": compress,
        "delivered": delivered,
        "expected": messages * connections,
        "messages_to_all": len(to_all),
        "p50_ms": round(statistics.median(to_all) * 1000, 2) if to_all else float("nan"),
        "p99_ms": round(pct(to_all, 0.99) * 1000, 2),
        "max_ms": round(to_all[-1] * 1000, 2) if to_all else float("nan"),
        "connect_s": round(connect_s, 2),
        "api_rss_idle_mb": round(rss_idle / 2**20, 1),
        "api_rss_connected_mb": round(rss_connected / 2**20, 1),
        "api_rss_peak_mb": round(rss_peak / 2**20, 1),
        "api_kb_per_connection": round((rss_connected - rss_idle) / 1024 / max(connections, 1), 1),
        "api_cpu_pct": round(100 * cpu_api / wall, 1),
        "clients_cpu_pct": round(100 * cpu_me / wall, 1),
        # Frames the API got out per second, publish start to last arrival (its fan-out ceiling
        # when the publish rate asks for more).
        "frames_per_s": round(delivered / wall),
    }


def _wait_ready(api_url: str, timeout: float = 60) -> None:
    """Until the API answers HTTP (the hub connects to Redis at start-up; subscribes retry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("the API did not answer")


def run(
    connections: list[int], messages: int, rate: float, compress: bool = True, channel: str = CHANNELS[0]
) -> dict[str, Any]:
    _raise_fd_limit(max(connections) * 2 + 1024)
    with bench_stack() as st:
        port = free_port()
        env = {**st.env, "ELIMU_API_PORT": str(port)}
        proc = spawn(["api"], env, st.data_dir / "api.log")
        try:
            wait_for_port(port, 60, proc)
            api_url = f"http://127.0.0.1:{port}"
            with contextlib.suppress(TimeoutError):
                _wait_ready(api_url)
            api = psutil.Process(proc.pid)
            runs = []
            for n in [1, *connections]:
                r = asyncio.run(_run_once(st, api_url, api, n, messages, rate, compress, channel))
                print(
                    f"  {n:>6} connections: to-all p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms,"
                    f" max {r['max_ms']} ms; {r['delivered']:,}/{r['expected']:,} delivered;"
                    f" API RSS {r['api_rss_connected_mb']} MB, API CPU {r['api_cpu_pct']}%,"
                    f" clients CPU {r['clients_cpu_pct']}%",
                    flush=True,
                )
                runs.append(r)
                time.sleep(2)  # let the API drop the closed connections before the next size
        finally:
            stop(proc)
    base = runs[0]
    for r in runs:
        r["p99_vs_1_connection"] = round(r["p99_ms"] / base["p99_ms"], 2)
    return {"channel": channel, "baseline": base, "runs": runs[1:]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench fanout")
    p.add_argument("--connections", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="messages published per second")
    p.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients offer permessage-deflate (as browsers do)",
    )
    p.add_argument("--channel", choices=CHANNELS, default=CHANNELS[0])
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = run(args.connections, args.messages, args.rate, args.compression, args.channel)
    emit(r, args.json)
    return 0
