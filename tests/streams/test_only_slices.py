"""``ELIMU_SLICES``: a worker that runs only some slices (streams.engine.only_slices)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from infra.settings import Settings
from streams.app import APP_ID, app_id
from streams.engine import only_slices
from streams.records import Record
from streams.runner import Slice, SliceBase, Upstream


class Named(SliceBase):
    def __init__(self, name: str, reads: tuple[str, ...] = ()) -> None:
        self.name = name
        self.reads = reads

    def process(self, records: Sequence[Record], upstream: Upstream) -> Any | None:
        return None

    async def deliver(self, records: Sequence[Record], outcome: Any) -> None:
        return None


def agents() -> list[tuple[str, list[Slice]]]:
    per_user: list[Slice] = [Named("career"), Named("engagement"), Named("risk", ("engagement",))]
    return [("engagement", per_user), ("market", [Named("market")])]


def names(selected: list[tuple[str, list[Slice]]]) -> list[tuple[str, list[str]]]:
    return [(agent, [s.name for s in slices]) for agent, slices in selected]


def test_keeps_only_the_named_slices_and_drops_empty_agents() -> None:
    assert names(only_slices(agents(), {"engagement"})) == [("engagement", ["engagement"])]
    assert names(only_slices(agents(), {"engagement", "risk", "market"})) == [
        ("engagement", ["engagement", "risk"]),
        ("market", ["market"]),
    ]


def test_refuses_unknown_names_and_a_reader_without_what_it_reads() -> None:
    with pytest.raises(ValueError, match="unknown slices"):
        only_slices(agents(), {"gamification"})
    with pytest.raises(ValueError, match="reads"):
        only_slices(agents(), {"risk"})


def test_a_partial_worker_is_an_application_of_its_own() -> None:
    assert app_id(Settings()) == APP_ID
    partial = Settings.from_env({"ELIMU_SLICES": "engagement, risk"})
    assert partial.slices == ("engagement", "risk")
    assert app_id(partial) != APP_ID and app_id(partial).startswith(APP_ID)
