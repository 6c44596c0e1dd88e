"""Small builders shared by the models tests (no I/O beyond reading the shipped rules once)."""

from __future__ import annotations

import itertools
from functools import cache
from importlib import resources
from typing import Any

from models.events import BehaviorEvent, parse_ts
from models.rules import DEFAULT_RULES_FILE, Rules

_ids = itertools.count()


@cache
def default_rules_text() -> str:
    return resources.files("models").joinpath(DEFAULT_RULES_FILE).read_text("utf-8")


@cache
def default_rules() -> Rules:
    return Rules.from_toml(default_rules_text())


def ms(text: str) -> int:
    return parse_ts(text)


def event(
    type_: str,
    ts: str | int,
    *,
    user_id: str = "u-1",
    event_id: str | None = None,
    **props: Any,
) -> BehaviorEvent:
    return BehaviorEvent(
        event_id=event_id if event_id is not None else f"e-{next(_ids)}",
        user_id=user_id,
        type=type_,
        ts_ms=ts if isinstance(ts, int) else ms(ts),
        session_id=None,
        device=None,
        platform=None,
        props=dict(props),
    )
