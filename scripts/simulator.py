"""Synthetic but plausible traffic for the demo, the tests and the benchmarks.

``TrafficModel`` is deterministic for a seed and knows nothing of Kafka; ``run`` paces its
output onto the input topics at a target rate.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

TIMEZONES = (
    "Africa/Nairobi",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "UTC",
)
CITIES = ("Nairobi", "Mombasa", "Kisumu", "Lagos", "Accra", "Kampala", "Remote")
SKILLS = (
    "sql",
    "excel",
    "python",
    "communication",
    "sales",
    "marketing",
    "java",
    "design",
    "accounting",
    "customer service",
    "data analysis",
    "project management",
)
CATEGORIES = ("behavioral", "technical", "situational", "case")
INDUSTRIES = ("technology", "finance", "health", "education", "retail", "agriculture")
# (event type, relative weight): practice dominates, as on a real platform.
EVENT_MIX = (
    ("login", 12),
    ("lesson_start", 10),
    ("lesson_complete", 9),
    ("interview_session_start", 6),
    ("interview_session_complete", 6),
    ("quiz_complete", 5),
    ("assessment_complete", 2),
    ("daily_challenge_complete", 3),
    ("career_research", 3),
    ("job_view", 8),
    ("job_save", 2),
    ("job_apply", 2),
    ("video_watch", 4),
    ("article_read", 3),
    ("forum_post", 1),
    ("mentor_connect", 1),
    ("resume_update", 1),
    ("profile_update", 1),
)
STATUSES = ("submitted", "viewed", "screening", "interview_scheduled", "interviewed", "offer", "hired")


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: dict[str, Any]

    def encode(self) -> tuple[bytes, bytes]:
        return self.key.encode(), orjson.dumps(self.value)


def _iso(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z"


class TrafficModel:
    def __init__(self, users: int, seed: int = 7, user_prefix: str = "u-") -> None:
        self.rng = random.Random(seed)
        self.users = [f"{user_prefix}{i}" for i in range(users)]
        # A few heavy users and a long tail, like real engagement.
        self.weights = [self.rng.paretovariate(1.5) for _ in self.users]
        self.types = [t for t, _ in EVENT_MIX]
        self.type_weights = [w for _, w in EVENT_MIX]
        self.seq = 0
        self.run_id = uuid.uuid4().hex[:8]

    def profiles(self) -> Iterator[Message]:
        for uid in self.users:
            r = self.rng
            yield Message(
                "user-profiles",
                uid,
                {
                    "user_id": uid,
                    "display_name": uid.title(),
                    "timezone": r.choice(TIMEZONES),
                    "location": r.choice(CITIES),
                    "skills": r.sample(SKILLS, r.randint(1, 4)),
                    "experience_years": r.choice((0, 0, 1, 2, 3, 5)),
                    "education": r.choice(("diploma", "bachelor")),
                    "interests": r.sample(INDUSTRIES, 2),
                    "salary_expectation": r.randrange(30000, 150000, 5000),
                    "currency": "KES",
                    "notification_prefs": {"channels": ["IN_APP", "PUSH"], "quiet_hours": ["21:00", "07:00"]},
                },
            )

    def behavior(self, ts_ms: int, user_id: str | None = None) -> Message:
        r = self.rng
        uid = user_id or r.choices(self.users, self.weights)[0]
        etype = r.choices(self.types, self.type_weights)[0]
        self.seq += 1
        props: dict[str, Any] = {}
        if etype in ("lesson_complete", "interview_session_complete", "quiz_complete", "assessment_complete"):
            props = {
                "duration_s": r.randint(120, 2400),
                "score": min(100, int(r.gauss(78, 14))),
                "category": r.choice(CATEGORIES),
                "lesson_id": f"L{r.randint(1, 60)}",
            }
        elif etype in ("job_view", "job_save", "job_apply"):
            props = {"job_id": f"j-{r.randint(1, 500)}"}
        elif etype == "career_research":
            props = {"career_id": f"c-{r.randint(1, 40)}"}
        return Message(
            "behavior-events",
            uid,
            {
                "event_id": f"sim-{self.run_id}-{self.seq}",
                "user_id": uid,
                "type": etype,
                "ts": _iso(ts_ms),
                "session_id": f"s-{uid}-{ts_ms // 1_800_000}",
                "device": r.choice(("mobile", "desktop")),
                "platform": r.choice(("android", "ios", "web")),
                "props": props,
            },
        )

    def job_posting(self, ts_ms: int) -> Message:
        r = self.rng
        self.seq += 1
        job_id = f"j-{self.run_id}-{self.seq}"
        low = r.randrange(30000, 120000, 5000)
        return Message(
            "job-postings",
            job_id,
            {
                "job_id": job_id,
                "title": r.choice(
                    (
                        "Junior Data Analyst",
                        "Sales Associate",
                        "Support Agent",
                        "Graduate Accountant",
                        "Backend Developer",
                    )
                ),
                "company": r.choice(("Acme", "Safari Tech", "Jua Bank", "Mkulima Ltd")),
                "location": r.choice(CITIES),
                "industry": r.choice(INDUSTRIES),
                "skills": r.sample(SKILLS, r.randint(2, 5)),
                "experience_years": r.choice((0, 1, 2, 3)),
                "education": r.choice(("diploma", "bachelor")),
                "salary_min": low,
                "salary_max": low + r.randrange(10000, 60000, 5000),
                "currency": "KES",
                "posted_at": _iso(ts_ms),
                "deadline": _iso(ts_ms + r.randint(2, 30) * 86_400_000),
                "source": "simulator",
            },
        )

    def application_status(self, ts_ms: int) -> Message:
        r = self.rng
        self.seq += 1
        uid = r.choices(self.users, self.weights)[0]
        return Message(
            "application-status",
            uid,
            {
                "event_id": f"sim-{self.run_id}-{self.seq}",
                "application_id": f"app-{uid}-{r.randint(1, 5)}",
                "user_id": uid,
                "job_id": f"j-{r.randint(1, 500)}",
                "status": r.choice(STATUSES),
                "ts": _iso(ts_ms),
            },
        )

    def next(self, ts_ms: int) -> Message:
        roll = self.rng.random()
        if roll < 0.02:
            return self.job_posting(ts_ms)
        if roll < 0.03:
            return self.application_status(ts_ms)
        return self.behavior(ts_ms)


async def run(bootstrap: str, users: int, rate: float, duration: float | None, seed: int = 7) -> int:
    """Publish profiles, then paced traffic until ``duration`` passes (forever if None)."""
    from aiokafka import AIOKafkaProducer

    from infra.kafka_auth import client_security

    model = TrafficModel(users, seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **client_security())
    await producer.start()
    sent = 0
    try:
        for msg in model.profiles():
            k, v = msg.encode()
            await producer.send(msg.topic, v, key=k)
            sent += 1
        start = time.monotonic()
        while duration is None or time.monotonic() - start < duration:
            # Pace by schedule, not by sleeping a fixed interval, so the rate holds under load.
            due = int((time.monotonic() - start) * rate) + 1
            while sent - users < due:
                msg = model.next(int(time.time() * 1000))
                k, v = msg.encode()
                await producer.send(msg.topic, v, key=k)
                sent += 1
            await asyncio.sleep(min(0.05, 1 / max(rate, 1)))
        await producer.flush()
    finally:
        await producer.stop()
    return sent
