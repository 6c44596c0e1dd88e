"""`elimu bench risk`: the drop-off model, prequentially, against a recency-only rule and hindsight.

Synthetic history. Each user joins on some day, has a latent motivation that drifts (down for
most, flat or up for some) with daily noise, a weekly rhythm (weekends lighter or heavier), a
habitual study hour (tight for regular users, loose for others), a skill level and a taste for
notifications and job hunting. Motivation drives what the platform can observe: the chance of
being active on a day, events per active day, session length and quiz scores. Every day a live
user may drop out; the hazard rises as motivation falls, on the day a streak of 3+ days breaks,
and in the first week, and falls for users who open notifications or apply to jobs. A quarter of
those who drop come back 8-30 days later (often through a notification). Users quiet for two
days get a nudge they may open and click. So dropping out depends on signals a model can see,
but only through noise, as on a real platform.

Replay. All events in event-time order through `observe` and `RiskModel.on_activity`; every
simulated hour a sweep calls `advance(hour)` and scores the live users whose slot is that hour
(one score per user per day; "live" = seen within the horizon). Labels still open when the
history ends are censored and not counted.

Three models on the same resolved labels:
1. online: `RiskModel` (StandardScaler + LogisticRegression), prediction made before its label
   was learnt (prequential);
2. recency-only: P(drop) per bucket of hours since the last event, Laplace-smoothed rates
   learnt online on the same resolutions (also prequential);
3. offline: the same River pipeline with hindsight: the scaler fitted on every resolved example,
   then LogisticRegression trained for several shuffled epochs, evaluated in-sample (an optimistic
   ceiling; sklearn is not a dependency, so River it is).
ROC AUC is exact (`models.risk.roc_auc`), Brier is the mean squared error of probabilities.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from river import linear_model, optim, preprocessing

from models.events import BehaviorEvent
from models.risk import (
    CANDIDATES,
    Resolution,
    RiskModel,
    brier_score,
    calibration_bins,
    roc_auc,
    same_day_auc,
)
from models.risk_features import ActivityProfile, features, observe
from models.time_units import DAY_MS, HOUR_MS

START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday
RECENCY_EDGES_H = (1, 3, 6, 12, 24, 36, 48, 72, 96, 120, 144)
WARMUP_DAYS = 14


@dataclass
class _User:
    uid: str
    join_day: int
    base_rate: float
    p_active: float
    peak_hour: float
    hour_spread: float
    weekend: float
    skill: float
    motivation: float
    drift: float
    notif_taste: float
    job_hunter: bool


def _new_user(rng: random.Random, i: int, days: int) -> _User:
    return _User(
        uid=f"u-{i}",
        join_day=int(rng.random() ** 1.5 * days * 0.6),
        base_rate=math.exp(rng.gauss(math.log(3.0), 0.5)),
        p_active=rng.uniform(0.45, 0.95),
        peak_hour=rng.choice((7.0, 12.0, 18.0, 19.0, 20.0, 21.0)),
        hour_spread=rng.choice((0.7, 1.5, 3.0, 6.0)),
        weekend=rng.uniform(0.4, 1.2),
        skill=rng.gauss(74.0, 9.0),
        motivation=rng.uniform(0.55, 1.0),
        drift=rng.gauss(-0.012, 0.015),
        notif_taste=rng.random(),
        job_hunter=rng.random() < 0.3,
    )


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def _event(seq: list[int], uid: str, etype: str, ts_ms: int, props: dict[str, Any]) -> BehaviorEvent:
    seq[0] += 1
    return BehaviorEvent(f"e-{seq[0]}", uid, etype, ts_ms, None, None, None, props)


def _day_events(
    rng: random.Random, u: _User, day: int, seq: list[int], first_event: str | None
) -> list[BehaviorEvent]:
    m = u.motivation
    n = 1 + _poisson(rng, u.base_rate * (0.4 + m))
    hour = (u.peak_hour + rng.gauss(0.0, u.hour_spread)) % 24
    ts = START_MS + day * DAY_MS + int(hour * HOUR_MS)
    out: list[BehaviorEvent] = []
    if first_event is not None:
        out.append(_event(seq, u.uid, first_event, ts, {"notification_id": f"n-{seq[0]}"}))
        ts += 60_000
    for _ in range(n):
        ts = min(ts + rng.randint(60_000, 900_000), START_MS + (day + 1) * DAY_MS - 1)
        r = rng.random()
        if r < 0.3:
            out.append(_event(seq, u.uid, "login", ts, {}))
        elif r < 0.75:
            etype = rng.choice(("lesson_complete", "quiz_complete", "interview_session_complete"))
            score = max(0.0, min(100.0, rng.gauss(u.skill - 25.0 * (1.0 - m), 8.0)))
            duration = max(60.0, rng.gauss(300.0 + 1200.0 * m, 250.0))
            out.append(_event(seq, u.uid, etype, ts, {"score": round(score), "duration_s": round(duration)}))
        elif r < 0.85 and u.job_hunter:
            out.append(_event(seq, u.uid, "job_apply", ts, {"job_id": f"j-{rng.randint(1, 500)}"}))
        else:
            out.append(_event(seq, u.uid, rng.choice(("job_view", "video_watch", "article_read")), ts, {}))
    return out


def simulate(users: int, days: int, seed: int) -> list[BehaviorEvent]:
    """The whole synthetic history, in event-time order."""
    rng = random.Random(seed)
    seq = [0]
    events: list[BehaviorEvent] = []
    for i in range(users):
        u = _new_user(rng, i, days)
        streak = quiet = 0
        back_on: int | None = None
        gone = False
        for day in range(u.join_day, days):
            if gone:
                if back_on != day:
                    continue
                gone, u.motivation, streak, quiet = False, rng.uniform(0.4, 0.75), 0, 0
            u.motivation = min(1.0, max(0.03, u.motivation + u.drift + rng.gauss(0.0, 0.04)))
            m = u.motivation
            weekday = (day % 7) < 5
            p = u.p_active * (0.25 + 0.75 * m) * (1.0 if weekday else u.weekend)
            first: str | None = None
            opened = False
            if quiet >= 2 and rng.random() < 0.5 * u.notif_taste:
                opened = True
                clicked = rng.random() < 0.6
                first = "notification_clicked" if clicked else "notification_opened"
                p = min(1.0, p + (0.5 if clicked else 0.2))
            if day == back_on:
                p, first = 1.0, "notification_opened" if rng.random() < 0.6 else first
            active = rng.random() < min(p, 1.0)
            broke = False
            if active:
                events.extend(_day_events(rng, u, day, seq, first))
                streak, quiet = streak + 1, 0
            else:
                if first is not None:  # opened the nudge but did nothing else
                    ts = START_MS + day * DAY_MS + int(((u.peak_hour + 1) % 24) * HOUR_MS)
                    events.append(_event(seq, u.uid, first, ts, {"notification_id": f"n-{seq[0]}"}))
                broke = streak >= 3
                streak, quiet = 0, quiet + 1
            hazard = 0.004 + 0.22 * (1.0 - m) ** 3
            hazard += 0.06 if broke else 0.0
            hazard += 0.03 if day - u.join_day < 7 else 0.0
            hazard *= 0.6 if opened else 1.0
            hazard *= 0.7 if u.job_hunter else 1.0
            if rng.random() < hazard:
                gone = True
                back_on = day + rng.randint(8, 30) if rng.random() < 0.25 else None
    events.sort(key=lambda e: (e.ts_ms, e.event_id))
    return events


class RecencyBaseline:
    """P(drop) per bucket of hours since the last event, Laplace-smoothed, learnt online."""

    def __init__(self) -> None:
        self.n = [0] * (len(RECENCY_EDGES_H) + 1)
        self.pos = [0] * (len(RECENCY_EDGES_H) + 1)

    @staticmethod
    def bucket(hours: float) -> int:
        return bisect_right(RECENCY_EDGES_H, hours)

    def predict(self, hours: float) -> float:
        b = self.bucket(hours)
        return (self.pos[b] + 1) / (self.n[b] + 2)

    def learn(self, hours: float, label: int) -> None:
        b = self.bucket(hours)
        self.n[b] += 1
        self.pos[b] += label


def _offline(examples: list[tuple[dict[str, float], int]], epochs: int, seed: int) -> list[float]:
    """Hindsight: scaler over everything, LogisticRegression over shuffled epochs; in-sample."""
    scaler: Any = preprocessing.StandardScaler()
    for x, _ in examples:
        scaler.learn_one(x)
    data = [(scaler.transform_one(x), y) for x, y in examples]
    model: Any = linear_model.LogisticRegression(optimizer=optim.SGD(0.01), intercept_lr=0.01)
    rng = random.Random(seed)
    order = list(range(len(data)))
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            model.learn_one(data[i][0], bool(data[i][1]))
    return [float(model.predict_proba_one(z)[True]) for z, _ in data]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _metrics(pairs: list[tuple[float, int]]) -> dict[str, Any]:
    auc, brier = roc_auc(pairs), brier_score(pairs)
    return {
        "roc_auc": None if auc is None else round(auc, 4),
        "brier": None if brier is None else round(brier, 4),
    }


def _replay(
    events: list[BehaviorEvent],
    days: int,
    model: RiskModel,
    profiles: dict[str, ActivityProfile],
    slot: dict[str, int],
    sweep: Callable[[int], None],
    settle: Callable[[list[Resolution]], None],
) -> None:
    """The engine's order: the hourly sweep up to each event's time, then the event (resolving
    what it proves retained, then folding it into its user's profile); then the sweeps to the end.
    Each user is swept in the hour ``slot`` gives them (the engine spreads users over the hour)."""
    next_sweep = START_MS + HOUR_MS
    for ev in events:
        while next_sweep <= ev.ts_ms:
            sweep(next_sweep)
            next_sweep += HOUR_MS
        settle(model.on_activity(ev.user_id, ev.ts_ms))
        profile = profiles.get(ev.user_id)
        if profile is None:
            profile = profiles[ev.user_id] = ActivityProfile()
            slot[ev.user_id] = int(ev.user_id.split("-")[1]) % 24
        observe(profile, ev)
    end = START_MS + days * DAY_MS
    while next_sweep <= end:
        sweep(next_sweep)
        next_sweep += HOUR_MS


def run(users: int, days: int, seed: int, epochs: int = 5) -> dict[str, Any]:
    t0 = time.perf_counter()
    events = simulate(users, days, seed)
    t_sim = time.perf_counter() - t0

    model = RiskModel()
    baseline = RecencyBaseline()
    profiles: dict[str, ActivityProfile] = {}
    slot: dict[str, int] = {}
    waiting: dict[tuple[str, int], float] = {}  # (user, scored_at) -> baseline prediction
    # scored_at, online p, baseline p, label, features
    rows: list[tuple[int, float, float, int, dict[str, float]]] = []

    # scoring day, served p, each candidate's score, label: the candidates side by side
    candidate_rows: list[tuple[int, float, tuple[float, ...], int]] = []

    def settle(resolved: list[Any]) -> None:
        for r in resolved:
            pending = r.pending
            b = waiting.pop((pending.user_id, pending.scored_at_ms))
            baseline.learn(math.expm1(pending.features["recency_log_h"]), r.label)
            rows.append((pending.scored_at_ms, pending.probability, b, r.label, pending.features))
            day = pending.scored_at_ms // DAY_MS
            candidate_rows.append((day, pending.probability, pending.candidate_scores(), r.label))

    def sweep(now: int) -> None:
        settle(model.advance(now))
        hour = (now // HOUR_MS) % 24
        for uid, profile in profiles.items():
            last = profile.last_event_ms
            if slot[uid] != hour or last is None or now - last > model.horizon_ms:
                continue
            x = features(profile, now)
            model.score(uid, x, now)
            if any(p.scored_at_ms == now for p in model.pending(uid)):
                waiting[(uid, now)] = baseline.predict(math.expm1(x["recency_log_h"]))

    t1 = time.perf_counter()
    _replay(events, days, model, profiles, slot, sweep, settle)
    t_replay = time.perf_counter() - t1

    t2 = time.perf_counter()
    offline_p = _offline([(x, y) for _, _, _, y, x in rows], epochs, seed)
    t_offline = time.perf_counter() - t2

    warm = START_MS + WARMUP_DAYS * DAY_MS
    online = [(p, y) for _, p, _, y, _ in rows]
    recency = [(b, y) for _, _, b, y, _ in rows]
    offline = [(p, row[3]) for p, row in zip(offline_p, rows, strict=True)]
    late = [i for i, row in enumerate(rows) if row[0] >= warm]
    result: dict[str, Any] = {
        "users": users,
        "days": days,
        "seed": seed,
        "events": len(events),
        "labels": len(rows),
        "dropped_rate": round(sum(r[3] for r in rows) / max(len(rows), 1), 4),
        "censored_pending": model.pending_count,
        "online": _metrics(online),
        "recency_only": _metrics(recency),
        "offline_hindsight": {**_metrics(offline), "epochs": epochs, "in_sample": True},
        "after_warmup": {
            "scored_from_day": WARMUP_DAYS,
            "labels": len(late),
            "online": _metrics([online[i] for i in late]),
            "recency_only": _metrics([recency[i] for i in late]),
            "offline_hindsight": _metrics([offline[i] for i in late]),
        },
        "same_day_roc_auc": {
            **{
                name: same_day_auc((d, sc[i], y) for d, _, sc, y in candidate_rows)
                for i, name in enumerate(CANDIDATES)
            },
            "served": same_day_auc((d, p, y) for d, p, _, y in candidate_rows),
            "served_at_end": served_label(model),
        },
        # Each candidate's own probability, pooled like `online` (the served one): what serving
        # one candidate alone would have scored on the same labels.
        "pooled_candidates_roc_auc": {
            name: {
                "all": _round(roc_auc((sc[i], y) for _, _, sc, y in candidate_rows)),
                "from_day_14": _round(roc_auc((candidate_rows[j][2][i], candidate_rows[j][3]) for j in late)),
            }
            for i, name in enumerate(CANDIDATES)
        },
        "online_calibration": [
            {
                "bin": f"{b.lower:.1f}-{b.upper:.1f}",
                "n": b.count,
                "pred": round(b.mean_predicted, 3),
                "obs": round(b.observed_rate, 3),
            }
            for b in calibration_bins(online)
        ],
        "online_weights": {
            k: round(v, 3) for k, v in sorted(model.model.steps["LogisticRegression"].weights.items())
        },
        "auc_method": "exact (Mann-Whitney, average ranks for ties)",
        "seconds": {
            "simulate": round(t_sim, 1),
            "replay": round(t_replay, 1),
            "offline": round(t_offline, 1),
        },
    }
    return result


# ---------------------------------------------------------------------------------------------
# Populations that differ in how dropping out shows: the served score against each candidate


#: How dropping out shows, one population each (`simulate_population`).
POPULATIONS: dict[str, str] = {
    "sudden_stop": "regular users who stop at a random day, with no warning in their behaviour",
    "slow_fade": "most users fade for 1-3 weeks (fewer days, shorter sessions, lower scores), then stop",
    "loyal_sparse": "half come 1-2 days a week and stay; half come daily and stop at random",
    "weekend_only": "most come on Saturdays and Sundays only; the rest on weekdays; both stop at random",
    "returners": "users take breaks of 2-12 days and come back; a few stop for good",
}


def _population_day(
    kind: str, rng: random.Random, u: _User, day: int, state: dict[str, float]
) -> tuple[float, bool]:
    """(P(active today), gone for good after today) for a user of population `kind`; `state`
    holds what the population remembers per user (a fade's start, a break's end)."""
    weekend = (day % 7) >= 5  # START_MS is a Monday
    if kind == "sudden_stop":
        return u.p_active, rng.random() < 0.03
    if kind == "slow_fade":
        if day >= state["fade_from"]:
            u.motivation = max(0.0, u.motivation - state["fade_rate"])
        p = u.p_active * (0.1 + 0.9 * u.motivation)
        return p, u.motivation < 0.08 or rng.random() < 0.004
    if kind == "loyal_sparse":
        return u.p_active, rng.random() < state["hazard"]
    if kind == "weekend_only":
        if state["weekender"]:
            return (0.85 if weekend else 0.03), rng.random() < 0.015
        return (0.15 if weekend else u.p_active), rng.random() < 0.015
    if kind == "returners":
        if day < state["break_until"]:
            return 0.0, rng.random() < 0.01
        if rng.random() < 0.05:
            state["break_until"] = day + rng.randint(2, 12)
            return 0.0, False
        return u.p_active, rng.random() < 0.01
    raise ValueError(f"unknown population {kind!r}; known: {', '.join(POPULATIONS)}")


def simulate_population(kind: str, users: int, days: int, seed: int) -> list[BehaviorEvent]:
    """A history of `users` students of one population over `days` days, in event-time order.
    What a user does on an active day (events, sessions, scores) follows `_day_events`, driven by
    the user's motivation, which only fades in `slow_fade`."""
    if kind not in POPULATIONS:
        raise ValueError(f"unknown population {kind!r}; known: {', '.join(POPULATIONS)}")
    rng = random.Random(f"{kind}:{seed}")
    seq = [0]
    events: list[BehaviorEvent] = []
    for i in range(users):
        u = _new_user(rng, i, days)
        u.motivation = rng.uniform(0.6, 1.0)
        state: dict[str, float] = {"break_until": -1.0}
        if kind == "slow_fade":
            fades = rng.random() < 0.7
            state["fade_from"] = u.join_day + rng.uniform(3, days) if fades else math.inf
            state["fade_rate"] = rng.uniform(0.04, 0.1)
        elif kind == "loyal_sparse":
            sparse = rng.random() < 0.5
            u.p_active = rng.uniform(0.12, 0.3) if sparse else rng.uniform(0.7, 0.95)
            state["hazard"] = 0.004 if sparse else 0.035
        elif kind == "weekend_only":
            state["weekender"] = float(rng.random() < 0.6)
        for day in range(u.join_day, days):
            p, gone = _population_day(kind, rng, u, day, state)
            if day == u.join_day or rng.random() < p:
                events.extend(_day_events(rng, u, day, seq, None))
            if gone:
                break
    events.sort(key=lambda e: (e.ts_ms, e.event_id))
    return events


def served_label(model: RiskModel) -> str:
    """What is served: the best candidate, with the weights of those blended with it, e.g.
    `logistic (blend 0.62)`."""
    tied = ", ".join(f"{name} {model.tied[name]:.2f}" for name in CANDIDATES if name in model.tied)
    return f"{model.served} ({tied})" if tied else model.served


def run_population(kind: str, users: int, days: int, seed: int) -> dict[str, Any]:
    """Replay one population through `RiskModel` (as `run` does) and rank its resolved labels
    by each candidate's score at scoring time and by the served score: every one prequential."""
    t0 = time.perf_counter()
    events = simulate_population(kind, users, days, seed)
    model = RiskModel()
    profiles: dict[str, ActivityProfile] = {}
    slot: dict[str, int] = {}
    # (scoring day, served probability, each candidate's score, label) of every resolution
    rows: list[tuple[int, float, tuple[float, ...], int]] = []
    # The best candidate over time (the candidates tied with it change every day or so).
    timeline: list[str] = [model.served]

    def settle(resolved: list[Any]) -> None:
        for r in resolved:
            p = r.pending
            rows.append((p.scored_at_ms // DAY_MS, p.probability, p.candidate_scores(), r.label))
        if model.served != timeline[-1]:
            timeline.append(model.served)

    def sweep(now: int) -> None:
        settle(model.advance(now))
        hour = (now // HOUR_MS) % 24
        for uid, profile in profiles.items():
            last = profile.last_event_ms
            if slot[uid] != hour or last is None or now - last > model.horizon_ms:
                continue
            model.score(uid, features(profile, now), now)

    _replay(events, days, model, profiles, slot, sweep, settle)

    def same_day(i: int | None) -> float | None:  # None: the served score; else candidate i
        auc = same_day_auc((d, p if i is None else s[i], y) for d, p, s, y in rows)
        return None if auc is None else round(auc, 4)

    def pooled(i: int | None) -> float | None:
        auc = roc_auc((p if i is None else s[i], y) for _, p, s, y in rows)
        return None if auc is None else round(auc, 4)

    aucs = {name: same_day(i) for i, name in enumerate(CANDIDATES)}
    known = [auc for auc in aucs.values() if auc is not None]
    return {
        "population": kind,
        "users": users,
        "days": days,
        "seed": seed,
        "events": len(events),
        "labels": len(rows),
        "dropped_rate": round(sum(y for *_, y in rows) / max(len(rows), 1), 4),
        "auc_method": "same-day (models.risk.same_day_auc), every label of the run",
        "candidates_roc_auc": aucs,
        "served_roc_auc": same_day(None),
        "best_candidate_roc_auc": max(known) if known else None,
        "pooled_roc_auc": {**{name: pooled(i) for i, name in enumerate(CANDIDATES)}, "served": pooled(None)},
        "served_timeline": timeline,
        "served_at_end": served_label(model),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _print_populations(users: int, days: int, seed: int) -> int:
    results = [run_population(kind, users, days, seed) for kind in POPULATIONS]
    names = list(CANDIDATES)
    print(
        f"same-day ROC AUC per population ({users} users x {days} days, seed {seed});"
        " served vs best candidate:"
    )
    print(
        f"{'population':<14}"
        + "".join(f"{n:>10}" for n in names)
        + f"{'served':>10}{'gap':>9}  best candidate over time; served at the end"
    )
    for r in results:
        aucs, served, best = r["candidates_roc_auc"], r["served_roc_auc"], r["best_candidate_roc_auc"]
        gap = "" if served is None or best is None else f"{served - best:+.4f}"
        cells = "".join(f"{aucs[n] if aucs[n] is not None else '-':>10}" for n in names)
        print(
            f"{r['population']:<14}{cells}{served if served is not None else '-':>10}{gap:>9}"
            f"  {' > '.join(r['served_timeline'])}; {r['served_at_end']}"
        )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench risk")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=5, help="passes of the offline hindsight model")
    p.add_argument(
        "--populations",
        action="store_true",
        help="only the simulated populations (POPULATIONS), every candidate beside the served score",
    )
    p.add_argument("--population-users", type=int, default=300)
    p.add_argument("--population-days", type=int, default=63)
    args = p.parse_args(argv)
    if args.populations:
        return _print_populations(args.population_users, args.population_days, args.seed)
    r = run(args.users, args.days, args.seed, args.epochs)
    on, rec, off = r["online"], r["recency_only"], r["offline_hindsight"]
    print(
        f"drop-off risk over {r['users']:,} users x {r['days']} days ({r['events']:,} events,"
        f" {r['labels']:,} resolved labels, {r['dropped_rate']:.1%} dropped):"
        f" online AUC {on['roc_auc']} Brier {on['brier']};"
        f" recency-only AUC {rec['roc_auc']} Brier {rec['brier']};"
        f" offline hindsight AUC {off['roc_auc']} Brier {off['brier']}",
        flush=True,
    )
    same_day = r["same_day_roc_auc"]
    print(
        "same-day ROC AUC: "
        + ", ".join(f"{k} {v:.4f}" for k, v in same_day.items() if isinstance(v, float))
        + f"; served at the end: {same_day['served_at_end']}",
        flush=True,
    )
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
    # Then each population, every candidate beside the served score.
    return _print_populations(args.population_users, args.population_days, args.seed)
