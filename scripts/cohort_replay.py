"""`elimu bench cohort`: an independent cohort replayed through a running stack, as a producer would.

Issue 15 measured the served at-risk score on a cohort generated outside this repository (500
students over 42 days, labelled by whether they went silent the week after) and found days since
last activity alone ranked the silent students better. This script repeats that check on demand.

The cohort is NOT `scripts.bench_risk`'s simulator (whose populations the risk model's candidates
were chosen on) nor `scripts.simulator`: other code and another behaviour model, so a score tuned
to the project's own synthetic students has no head start here.
- A **weekly habit**: each student studies on their own set of weekdays (school-day students,
  weekend students, three-evenings-a-week students...), with a per-student attendance rate, and
  rarely off-habit.
- A **decaying engagement**: engagement falls exponentially at a per-student rate (half-life 2 to
  20 weeks); attendance and session length follow it, and the daily hazard of leaving for good
  grows as it falls.
- **Exam periods**: two (days 18-22 and 36-40 of the cohort) in which attendance and quizzes
  rise for everyone, followed by a slump (a higher hazard for three days).
- **Sudden dropouts**: some students stop on a fixed day with no warning in their behaviour.
- **Breaks**: some take one holiday of 4-12 days and come back.
Each student's label is what they do in the week after the 42 days (generated, never sent):
1 = no activity at all that week (went silent), 0 = seen.

Replay. Events are dated so the 42 days end at the last UTC midnight, produced to
`behavior-events` in event-time order, keyed by user id, like any importer (docs/security.md: a
writer on the public input topics is trusted for event time; no rule is bent). Then the script
waits for the engine (scores stop changing), reads every page of `GET /v1/at-risk?threshold=0`
with the admin token, and reports the ROC AUC (exact, `models.risk.roc_auc`) of the served score
and of days since last activity against the labels, over every student scored and over the
students still "live" (seen in the last 7 days), the ones an at-risk list is for, and over those
quiet for longer. Then it moves stream time on by two re-score intervals with a few "clock"
users and reads the list again, re-scored by the final scorer (see `replay` for why).

  elimu bench cohort [--students 500] [--days 42] [--seed 1]... [--start-stack] [--out F]

With `--start-stack` it starts a fresh `elimu up --no-demo` of its own (a temporary data dir and a
free port), and stops it (SIGINT to that process only) at the end, removing its data dir unless
`--keep-data`; otherwise it uses the stack in `ELIMU_DATA_DIR` (its `stack.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from models.risk import roc_auc
from models.time_units import DAY_MS, HOUR_MS, MINUTE_MS

TOPIC = "behavior-events"
#: The clock tick (see `replay`): this many users, a re-score interval (60 min) and a minute
#: after the cohort's end, once the trainer has had time to publish its final model.
CLOCK_USERS = 128
CLOCK_AFTER_MS = 61 * MINUTE_MS
CLOCK_WAIT_S = 20.0
FOLLOW_UP_DAYS = 7
EXAMS: tuple[tuple[int, int], ...] = ((18, 23), (36, 41))  # [first, end) days of the cohort
SLUMP_DAYS = 3


@dataclass
class Student:
    uid: str
    join_day: int
    habit: frozenset[int]  # weekdays, 0 = Monday
    attend: float
    off_habit: float
    half_life_d: float
    base_hazard: float
    hour: float
    stop_day: int | None  # a sudden dropout's last day
    break_from: int | None
    break_days: int
    quiz_skill: float


_HABITS: tuple[tuple[float, tuple[int, ...]], ...] = (
    (0.30, (0, 1, 2, 3, 4)),  # school days
    (0.20, (0, 2, 4)),  # three evenings
    (0.15, (1, 3)),  # twice a week
    (0.15, (5, 6)),  # weekends
    (0.10, (0, 1, 2, 3, 4, 5, 6)),  # daily
    (0.10, (6,)),  # Sunday only
)


def _habit(rng: random.Random) -> frozenset[int]:
    r = rng.random()
    for share, days in _HABITS:
        if r < share:
            return frozenset(days)
        r -= share
    return frozenset(_HABITS[-1][1])


def new_student(rng: random.Random, prefix: str, i: int, days: int) -> Student:
    sudden = rng.random() < 0.12
    takes_break = rng.random() < 0.12
    return Student(
        uid=f"{prefix}-{i:04d}",
        join_day=0 if rng.random() < 0.7 else rng.randrange(0, days // 2),
        habit=_habit(rng),
        attend=rng.betavariate(6, 2),
        off_habit=rng.uniform(0.0, 0.08),
        half_life_d=rng.uniform(14.0, 140.0),
        base_hazard=rng.uniform(0.001, 0.006),
        hour=rng.choice((6.5, 13.0, 17.5, 19.0, 20.5, 22.0)),
        stop_day=rng.randrange(0, days + FOLLOW_UP_DAYS) if sudden else None,
        break_from=rng.randrange(0, days + FOLLOW_UP_DAYS) if takes_break else None,
        break_days=rng.randint(4, 12),
        quiz_skill=rng.uniform(45.0, 92.0),
    )


def _session(
    rng: random.Random, s: Student, start_ms: int, engagement: float, exam: bool
) -> list[dict[str, Any]]:
    """One study session: a start, a few learning actions spaced by minutes, an end."""
    sid = f"{s.uid}-{start_ms // MINUTE_MS}"
    out: list[dict[str, Any]] = [{"type": "session_start", "ts": start_ms, "session_id": sid}]
    t = start_ms
    steps = 1 + int(rng.expovariate(1.0 / (1.0 + 4.0 * engagement)))
    for _ in range(min(steps, 20)):
        t += int(rng.uniform(2, 14) * MINUTE_MS)
        r = rng.random()
        if (exam and r < 0.45) or r < 0.15:
            score = round(min(100.0, max(0.0, rng.gauss(s.quiz_skill, 10.0))))
            out.append({"type": "quiz_complete", "ts": t, "session_id": sid, "props": {"score": score}})
        elif r < 0.55:
            out.append({"type": "lesson_start", "ts": t, "session_id": sid})
            t += int(rng.uniform(5, 25) * engagement * MINUTE_MS) + MINUTE_MS
            duration = round(rng.uniform(120, 1500) * (0.3 + engagement))
            out.append(
                {"type": "lesson_complete", "ts": t, "session_id": sid, "props": {"duration_s": duration}}
            )
        elif r < 0.8:
            out.append({"type": "video_watch", "ts": t, "session_id": sid})
        else:
            out.append({"type": "page_view", "ts": t, "session_id": sid})
    out.append({"type": "session_end", "ts": t + MINUTE_MS, "session_id": sid})
    return out


def generate(
    students: int, days: int, seed: int, start_ms: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(events of the `days` days in event-time order, label per student: 1 = silent the week
    after). Events are JSON objects as a producer would write them; the follow-up week is
    simulated only to label the students."""
    rng = random.Random(f"cohort:{seed}")
    events: list[dict[str, Any]] = []
    labels: dict[str, int] = {}
    for i in range(students):
        s = new_student(rng, f"c{seed}", i, days)
        gone = False
        seen_after = False
        slump_until = -1
        for day in range(s.join_day, days + FOLLOW_UP_DAYS):
            exam = any(a <= day < b for a, b in EXAMS)
            if any(day == b for _, b in EXAMS):
                slump_until = day + SLUMP_DAYS
            engagement = 0.5 ** ((day - s.join_day) / s.half_life_d)
            hazard = s.base_hazard / max(engagement, 0.05) + (0.02 if day < slump_until else 0.0)
            if (s.stop_day is not None and day > s.stop_day) or rng.random() < hazard:
                gone = True
            if gone:
                break
            on_break = s.break_from is not None and s.break_from <= day < s.break_from + s.break_days
            weekday = day % 7  # the cohort starts on a Monday (see `cohort_start`)
            p = (s.attend if weekday in s.habit else s.off_habit) * (0.35 + 0.65 * engagement)
            if exam:
                p = min(1.0, p * 1.6 + 0.1)
            active = day == s.join_day or (not on_break and rng.random() < p)
            if not active:
                continue
            if day >= days:
                seen_after = True
                break
            sessions = 1 + (rng.random() < 0.25 + (0.3 if exam else 0.0))
            for k in range(sessions):
                hour = (s.hour + rng.gauss(0.0, 1.2) + 3.0 * k) % 24
                start = start_ms + day * DAY_MS + int(hour * HOUR_MS)
                for ev in _session(rng, s, start, engagement, exam):
                    ev["ts"] = min(ev["ts"], start_ms + (day + 1) * DAY_MS - 1)
                    events.append({"event_id": f"{s.uid}-{len(events)}", "user_id": s.uid, **ev})
        labels[s.uid] = 0 if seen_after else 1
    events.sort(key=lambda e: (e["ts"], e["event_id"]))
    return events, labels


def cohort_start(now_ms: int, days: int) -> int:
    """A Monday midnight (UTC) such that the cohort's days end at or before the last midnight."""
    last_midnight = now_ms - now_ms % DAY_MS
    start = last_midnight - days * DAY_MS
    # 1970-01-01 was a Thursday: day index 0 is Thursday, Monday is index 4 (mod 7).
    return start - ((start // DAY_MS - 4) % 7) * DAY_MS


async def produce(bootstrap: str, events: list[dict[str, Any]]) -> float:
    """Send every event to `behavior-events` keyed by user id (the contract's key), in order."""
    from aiokafka import AIOKafkaProducer

    from infra.kafka_auth import client_security

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, **client_security())
    await producer.start()
    t0 = time.perf_counter()
    try:
        batch = []
        for ev in events:
            batch.append(await producer.send(TOPIC, orjson.dumps(ev), key=ev["user_id"].encode()))
            if len(batch) >= 2_000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def _get(api: str, path: str, token: str) -> Any:
    req = urllib.request.Request(api + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def at_risk(api: str, token: str) -> dict[str, float]:
    """Every scored student's served score, through every page of `GET /v1/at-risk`."""
    scores: dict[str, float] = {}
    cursor: str | None = None
    while True:
        query = {"threshold": "0", "limit": "500", **({"cursor": cursor} if cursor else {})}
        page = _get(api, "/v1/at-risk?" + urllib.parse.urlencode(query), token)
        for row in page["students"]:
            scores[row["user_id"]] = float(row["score"])
        cursor = page.get("next_cursor")
        if not cursor:
            return scores


def wait_for_scores(
    api: str, token: str, cohort: set[str], timeout_s: float, changed_from: dict[str, float] | None = None
) -> dict[str, float]:
    """The served scores once the engine has caught up: every cohort student that has an event is
    scored, and the list has not changed over three reads 10 s apart (the sweep re-scores users
    behind stream time; a replay ends with a burst of looks). Polling, not a sleep: this is a
    script against a live stack, and it returns as soon as the scores settle."""
    deadline = time.monotonic() + timeout_s
    previous: dict[str, float] | None = None
    stable = polls = 0
    scores: dict[str, float] = {}
    while time.monotonic() < deadline:
        scores = {u: v for u, v in at_risk(api, token).items() if u in cohort}
        polls += 1
        # After a clock tick, unchanged from before it is not settled yet (the sweep has not
        # started), unless a minute of reads says nothing moves by a point.
        moved = changed_from is None or scores != changed_from or polls > 6
        settled = scores == previous and len(scores) == len(cohort) and moved
        stable = stable + 1 if settled else 0
        print(f"  scored {len(scores)}/{len(cohort)} students; unchanged reads {stable}", flush=True)
        if stable >= 2:
            return scores
        previous = scores
        time.sleep(10.0)
    print("  timed out waiting for the scores to settle; using the last read", flush=True)
    return scores


def _auc(values: dict[str, float], labels: dict[str, int], users: list[str]) -> float | None:
    auc = roc_auc((values[u], labels[u]) for u in users)
    return None if auc is None else round(auc, 4)


def _last_seen(events: list[dict[str, Any]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for ev in events:
        last[ev["user_id"]] = max(last.get(ev["user_id"], 0), ev["ts"])
    return last


def evaluate(
    scores: dict[str, float], events: list[dict[str, Any]], labels: dict[str, int], end_ms: int
) -> dict[str, Any]:
    days_quiet = {u: (end_ms - ts) / DAY_MS for u, ts in _last_seen(events).items()}
    scored = sorted(u for u in scores if u in labels)
    live = [u for u in scored if days_quiet[u] <= 7.0]
    gone = [u for u in scored if days_quiet[u] > 7.0]
    return {
        "students": len(labels),
        "scored": len(scored),
        "silent_rate": round(sum(labels[u] for u in scored) / max(len(scored), 1), 4),
        "all": {
            "n": len(scored),
            "positives": sum(labels[u] for u in scored),
            "served_score_auc": _auc(scores, labels, scored),
            "days_since_last_activity_auc": _auc(days_quiet, labels, scored),
        },
        "live_7d": {
            "n": len(live),
            "positives": sum(labels[u] for u in live),
            "served_score_auc": _auc(scores, labels, live),
            "days_since_last_activity_auc": _auc(days_quiet, labels, live),
        },
        # Quiet for more than the horizon: no label is ever snapshotted for them, so the model
        # never learnt to rank them among themselves; and their scores crowd near 100.
        "quiet_over_7d": {
            "n": len(gone),
            "positives": sum(labels[u] for u in gone),
            "served_score_auc": _auc(scores, labels, gone),
            "days_since_last_activity_auc": _auc(days_quiet, labels, gone),
            "distinct_scores": len({scores[u] for u in gone}),
            "median_score": sorted(scores[u] for u in gone)[len(gone) // 2] if gone else None,
        },
    }


# ---------------------------------------------------------------------------------------------
# A fresh stack of the script's own


def _free_port() -> int:
    from infra.net import free_port

    return int(free_port())


def start_stack(
    data_dir: Path, port: int, timeout_s: float = 300.0
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = dict(os.environ, ELIMU_DATA_DIR=str(data_dir), ELIMU_API_PORT=str(port))
    log = open(data_dir / "up.log", "wb")  # noqa: SIM115 (kept open for the child's life)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.cli", "up", "--no-demo"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    stack_path = data_dir / "stack.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"elimu up exited with {proc.returncode}; see {data_dir / 'up.log'}")
        if stack_path.exists():
            stack: dict[str, str] = json.loads(stack_path.read_text())
            return proc, stack
        time.sleep(1.0)
    stop_stack(proc)
    raise TimeoutError(f"elimu up was not ready within {timeout_s}s; see {data_dir / 'up.log'}")


def stop_stack(proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # this process only: it stops its own children
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # a second ^C hurries it
            proc.wait(timeout_s)


def replay(students: int, days: int, seed: int, stack: dict[str, str], timeout_s: float) -> dict[str, Any]:
    now = int(time.time() * 1000)
    start = cohort_start(now, days)
    events, labels = generate(students, days, seed, start)
    active = {e["user_id"] for e in events}
    labels = {u: y for u, y in labels.items() if u in active}
    print(
        f"cohort seed {seed}: {len(labels)} students, {len(events):,} events over {days} days,"
        f" {sum(labels.values())} silent the week after; producing...",
        flush=True,
    )
    seconds = asyncio.run(produce(stack["kafka"], events))
    print(f"  produced in {seconds:.1f} s; waiting for the engine", flush=True)
    cohort = set(labels)
    end = start + days * DAY_MS
    scores = wait_for_scores(stack["api"], stack["admin_token"], cohort, timeout_s)
    result = evaluate(scores, events, labels, end)
    result["engine"] = _engine_report(stack)
    # What the list shows when the replay stops is a mix of model versions: a replay races
    # through 42 days in minutes while the trainer publishes every few seconds, so each student
    # keeps the score of their last look, made by whichever scorer their worker had then, and
    # stream time (the newest event) stops with the replay, so nobody is looked at again. Live,
    # stream time keeps moving and everyone is re-scored hourly by the current model. To read
    # that too: once the final model is out, one event per clock user (spread over the
    # partitions by their keys) a re-score interval after the cohort's end moves every
    # partition's stream time on, and the sweep re-scores every student with the final scorer.
    # Twice: the first tick starts a new day of stream time, so the trainer selects once more
    # and publishes that scorer a few seconds later, after the sweep has re-scored everyone with
    # the previous one; the second tick re-scores everyone with the final scorer.
    for k in (1, 2):
        time.sleep(CLOCK_WAIT_S)  # the trainer's publish interval (5 s), with room; a script, not a test
        ticks = clock_tick(f"c{seed}-{k}", end + k * CLOCK_AFTER_MS)
        asyncio.run(produce(stack["kafka"], ticks))
    print("  clock moved on two re-score intervals; waiting for the re-scores", flush=True)
    rescored = wait_for_scores(stack["api"], stack["admin_token"], cohort, timeout_s, changed_from=scores)
    result["rescored"] = evaluate(rescored, events, labels, end)
    result["rescored"]["engine"] = _engine_report(stack)
    result["rows"] = [
        {
            "user_id": u,
            "score": scores.get(u),
            "rescored": rescored.get(u),
            "label": labels[u],
            "last_ts": last,
        }
        for u, last in sorted(_last_seen(events).items())
    ]
    return {"seed": seed, "days": days, "events": len(events), "produce_s": round(seconds, 1), **result}


def _engine_report(stack: dict[str, str]) -> dict[str, Any]:
    try:
        model = _get(stack["api"], "/v1/ops/risk-model", stack["admin_token"])
    except OSError as exc:  # the report is a bonus; the AUCs stand without it
        return {"error": str(exc)}
    candidates = model.get("candidates") or {}
    return {
        "served_candidate": model.get("served"),
        "tied": model.get("tied"),
        "labels_learnt": model.get("n"),
        "candidates_same_day_auc": candidates.get("roc_auc"),
        "window_labels": candidates.get("window"),
        "window_positives": candidates.get("positives"),
    }


def clock_tick(prefix: str, at_ms: int, users: int = CLOCK_USERS) -> list[dict[str, Any]]:
    """One `page_view` per clock user at `at_ms`: enough users that every partition gets one."""
    return [
        {
            "event_id": f"{prefix}-clock-{k:03d}",
            "user_id": f"{prefix}-clock-{k:03d}",
            "type": "page_view",
            "ts": at_ms,
        }
        for k in range(users)
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="elimu bench cohort")
    p.add_argument("--students", type=int, default=500)
    p.add_argument("--days", type=int, default=42)
    p.add_argument("--seed", type=int, action="append", help="repeat for several cohorts (default 1)")
    p.add_argument("--start-stack", action="store_true", help="a fresh `elimu up --no-demo` per seed")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the scores")
    p.add_argument("--keep-data", action="store_true", help="keep each started stack's data dir and logs")
    p.add_argument("--out", type=Path, help="also write each student's score, silence and label here")
    args = p.parse_args(argv)
    results = []
    for seed in args.seed or [1]:
        if args.start_stack:
            data_dir = Path(tempfile.mkdtemp(prefix=f"elimu-cohort-{seed}-"))
            proc, stack = start_stack(data_dir, _free_port())
            try:
                results.append(replay(args.students, args.days, seed, stack, args.timeout))
            finally:
                stop_stack(proc)
            if not args.keep_data:  # ~80 MB a seed (the broker's logs); kept on a failure
                shutil.rmtree(data_dir, ignore_errors=True)
        else:
            from infra.settings import Settings
            from scripts.stack import stack_file

            stack = stack_file(Settings.from_env())
            if not stack:
                print("no running stack (start `elimu up` or pass --start-stack)", file=sys.stderr)
                return 2
            results.append(replay(args.students, args.days, seed, stack, args.timeout))
        r = results[-1]
        print(
            f"seed {seed}: served score AUC {r['all']['served_score_auc']} vs days since last activity"
            f" {r['all']['days_since_last_activity_auc']} ({r['scored']} students);"
            f" live in the last 7 days: {r['live_7d']['served_score_auc']} vs"
            f" {r['live_7d']['days_since_last_activity_auc']} ({r['live_7d']['n']});"
            f" quiet over 7 days: {r['quiet_over_7d']['served_score_auc']} vs"
            f" {r['quiet_over_7d']['days_since_last_activity_auc']} ({r['quiet_over_7d']['n']})",
            flush=True,
        )
        q = r["rescored"]
        print(
            f"  re-scored by the final model: served {q['all']['served_score_auc']}; live"
            f" {q['live_7d']['served_score_auc']};"
            f" quiet over 7 days {q['quiet_over_7d']['served_score_auc']}",
            flush=True,
        )
    if args.out:
        args.out.write_bytes(orjson.dumps(results))
    for r in results:
        del r["rows"]  # in --out only: 500 rows a seed
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
