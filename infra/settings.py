"""Runtime configuration, read once from the environment (see CONTRACT.md §3).

Every setting is optional. ``kafka`` / ``redis`` left as ``None`` mean "use the embedded
broker / Redis"; the launcher (``scripts/stack.py``) resolves them to real addresses and
passes them down to the worker and API processes through the same variables.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "models" / "default_rules.toml"


@dataclass(frozen=True)
class Settings:
    kafka: str | None = None
    redis: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".elimu"))
    api_port: int = 8000
    rules_path: Path = DEFAULT_RULES
    secret_override: str | None = None
    #: Partitions for topics the engine creates itself. Partitions are the unit of parallelism:
    #: more workers than partitions leaves workers idle.
    partitions: int = 8
    #: Events older than the user's newest event by more than this are refused (dead-letter
    #: ``too_late``): the dedup memory only reaches this far back, and accepting them could double.
    dedup_window_days: int = 7
    #: How long the group waits for a silent worker before moving its partitions. Lower means
    #: faster failover after a crash and more false alarms during long GC pauses.
    session_timeout_s: float = 30.0
    #: Drop-off risk (docs/risk.md): a user is "dropped" after this many days without activity.
    risk_horizon_days: float = 7.0
    #: How often (in stream time) the sweep re-scores a user who sends nothing.
    risk_rescore_minutes: float = 60.0
    #: Allowed lateness before a label resolves as dropped.
    risk_grace_minutes: float = 60.0
    #: How often the risk trainer checkpoints its model: at most this much of the labels topic
    #: is replayed by a worker that takes the trainer over; more often writes more to Kafka.
    risk_checkpoint_s: float = 30.0
    #: Benchmarks only: run just these slices (``ELIMU_SLICES=engagement``: gamification alone),
    #: as a separate application (its own consumer group and state tables), so it can never
    #: take partitions from, or commit offsets for, the full workers. None: every slice.
    slices: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        return cls(
            kafka=e.get("ELIMU_KAFKA") or None,
            redis=e.get("ELIMU_REDIS") or None,
            data_dir=Path(e.get("ELIMU_DATA_DIR") or ".elimu"),
            api_port=int(e.get("ELIMU_API_PORT") or 8000),
            rules_path=Path(e["ELIMU_RULES"]) if e.get("ELIMU_RULES") else DEFAULT_RULES,
            secret_override=e.get("ELIMU_SECRET") or None,
            partitions=int(e.get("ELIMU_PARTITIONS") or 8),
            dedup_window_days=int(e.get("ELIMU_DEDUP_WINDOW_DAYS") or 7),
            session_timeout_s=float(e.get("ELIMU_SESSION_TIMEOUT") or 30.0),
            risk_horizon_days=float(e.get("ELIMU_RISK_HORIZON_DAYS") or 7.0),
            risk_rescore_minutes=float(e.get("ELIMU_RISK_RESCORE_MINUTES") or 60.0),
            risk_grace_minutes=float(e.get("ELIMU_RISK_GRACE_MINUTES") or 60.0),
            risk_checkpoint_s=float(e.get("ELIMU_RISK_CHECKPOINT_S") or 30.0),
            slices=tuple(sorted(n.strip() for n in e["ELIMU_SLICES"].split(",") if n.strip()))
            if e.get("ELIMU_SLICES")
            else None,
        )

    @property
    def kafka_bootstrap(self) -> str:
        if not self.kafka:
            raise RuntimeError("ELIMU_KAFKA is not set; start the stack with `elimu up` or set it")
        return self.kafka

    @property
    def redis_url(self) -> str:
        if not self.redis:
            raise RuntimeError("ELIMU_REDIS is not set; start the stack with `elimu up` or set it")
        return self.redis

    def secret(self) -> str:
        """The token-signing secret: ``ELIMU_SECRET``, else one generated once and kept on disk."""
        if self.secret_override:
            return self.secret_override
        path = self.data_dir / "secret"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        os.chmod(tmp, 0o600)
        try:
            # Two processes racing to create it must agree on one secret: first link wins.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()
