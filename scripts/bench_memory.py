"""`elimu bench memory`: what 100k users of engagement state cost in a worker's memory and on the
changelog, against the same users with one event each.

What is measured and why: the workers keep every user's ``UserState`` in a Faust table with the
``memory://`` store (a Python dict in the worker process) and write each changed user's
``to_dict`` as compact orjson to the table's changelog, which is also what recovery replays. Both
grow with the users a worker owns, so they size a deployment.

The state is built in-process with the worker's fold (``models.gamification.apply_event`` under
the shipped rule book and the default 7-day dedup window) from simulator traffic
(``scripts.simulator.TrafficModel``: its event mix, Pareto-distributed activity per user), spread
over the last 10 days in time order as ``elimu bench throughput`` produces it: on average
``--events-per-user`` events per user. Each variant runs in a fresh process so that freed memory
of one does not hide the growth of the other. Reported per variant:

* ``rss``: the process's resident memory after the build minus before it (what an operator sees;
  it includes the allocator's slack);
* ``live``: the deep ``sys.getsizeof`` of the table dict, its keys and every state (live bytes);
* ``changelog``: the sum of the encoded values (``orjson.dumps(state.to_dict())``) plus keys, i.e.
  one compacted changelog record per user.

The baseline, run the same way on the same users, has exactly one event per user: the ratio is
what a realistic history adds over the bare per-user overhead.
"""

from __future__ import annotations

import argparse
import gc
import importlib.resources
import itertools
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson
import psutil

from models.events import InvalidEvent, validate_behavior
from models.gamification import UserState, apply_event
from models.rules import DEFAULT_RULES_FILE, Rules
from models.time_units import DAY_MS
from scripts.bench_stack import emit
from scripts.simulator import TrafficModel

DEDUP_WINDOW_MS = 7 * DAY_MS  # infra.settings.Settings.dedup_window_days
SPAN_MS = 10 * DAY_MS
PER = 100_000


def _deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of ``obj`` and everything it references (containers, dataclass fields), once each."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    return size


def _build(users: int, events_per_user: float, seed: int) -> dict[str, Any]:
    """One variant, in its own process: returns its measurements."""
    rules = Rules.from_toml(
        importlib.resources.files("models").joinpath(DEFAULT_RULES_FILE).read_text("utf-8")
    )
    model = TrafficModel(users, seed, user_prefix="m-")
    now = int(time.time() * 1000)
    table: dict[str, UserState] = {}
    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    started = time.perf_counter()
    applied = refused = 0
    # A generator, not a list: nothing but the states may stay allocated across the build.
    pairs: Iterator[tuple[str, int]]
    if events_per_user <= 1:
        # The baseline: each user's single event, at the end of the span.
        pairs = ((uid, now - (users - i)) for i, uid in enumerate(model.users))
    else:
        # Users are drawn with the model's own weights, but from cumulative weights built once:
        # ``TrafficModel.behavior`` without a user rebuilds them per call, O(users) per event.
        n = int(users * events_per_user)
        cum = list(itertools.accumulate(model.weights))
        pairs = (
            (model.rng.choices(model.users, cum_weights=cum)[0], now - SPAN_MS + i * (SPAN_MS // n))
            for i in range(n)
        )
    for uid, ts in pairs:
        m = model.behavior(ts, user_id=uid)
        event = validate_behavior(m.value, now)
        state = table.get(event.user_id)
        if state is None:
            state = table[event.user_id] = UserState(user_id=event.user_id)
        try:
            apply_event(state, event, rules, DEDUP_WINDOW_MS)
            applied += 1
        except InvalidEvent:
            refused += 1
    build_s = time.perf_counter() - started
    gc.collect()
    rss = proc.memory_info().rss - rss0
    live = _deep_size(table, set())
    changelog = sum(len(k.encode()) + len(orjson.dumps(s.to_dict())) for k, s in table.items())
    seen_ids = sum(len(s.seen) for s in table.values())
    n_users = len(table)
    return {
        "users_with_state": n_users,
        "events": applied + refused,
        "refused": refused,
        "events_per_user": round((applied + refused) / n_users, 2),
        "ids_in_dedup_window_per_user": round(seen_ids / n_users, 2),
        "build_s": round(build_s, 1),
        "rss_mb_per_100k": round(rss / 2**20 * PER / n_users, 1),
        "live_mb_per_100k": round(live / 2**20 * PER / n_users, 1),
        "changelog_mb_per_100k": round(changelog / 2**20 * PER / n_users, 1),
        "live_bytes_per_user": round(live / n_users),
        "changelog_bytes_per_user": round(changelog / n_users),
    }


def _in_fresh_process(users: int, events_per_user: float, seed: int) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result: dict[str, Any] = pool.submit(_build, users, events_per_user, seed).result()
    return result


def run(users: int, events_per_user: float, seed: int = 17) -> dict[str, Any]:
    base = _in_fresh_process(users, 1, seed)
    full = _in_fresh_process(users, events_per_user, seed)
    ratios = {
        f"{k}_ratio": round(full[k] / base[k], 2)
        for k in ("rss_mb_per_100k", "live_mb_per_100k", "changelog_mb_per_100k")
    }
    return {"users": users, "history": full, "baseline_one_event": base, **ratios}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench memory")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--events-per-user", type=float, default=20.0, help="mean, over the last 10 days")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = run(args.users, args.events_per_user)
    h, b = r["history"], r["baseline_one_event"]
    print(
        f"memory per 100k users ({h['events_per_user']} events each over 10 days):"
        f" RSS {h['rss_mb_per_100k']} MB (live {h['live_mb_per_100k']} MB),"
        f" changelog {h['changelog_mb_per_100k']} MB;"
        f" one event each: RSS {b['rss_mb_per_100k']} MB, changelog {b['changelog_mb_per_100k']} MB"
        f" → ×{r['rss_mb_per_100k_ratio']} RAM, ×{r['changelog_mb_per_100k_ratio']} changelog",
        flush=True,
    )
    emit(r, args.json)
    return 0
