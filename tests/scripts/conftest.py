from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka import ensure_topics
from scripts.embedded import Service, start_broker


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (Tansu starts in milliseconds), with the engine's topics."""
    svc: Service = start_broker(log_path=tmp_path / "kafka.log")
    asyncio.run(ensure_topics(svc.address, 4))
    yield svc.address
    svc.stop()
