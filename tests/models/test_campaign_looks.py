"""The memory of campaign looks (models/campaigns/looks.py): kept by time, capped, never
looking back past its floor."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.campaigns.looks import LOOKBACK_MS, MAX_SEEN, CampaignLooks
from models.campaigns.records import Occurrence

T0 = 1_790_000_000_000


def occ(key: str, at: int) -> Occurrence:
    return Occurrence("c1", key, at)


def test_an_occurrence_is_remembered_until_it_falls_out_of_the_lookback() -> None:
    looks = CampaignLooks(floor_ms=-1)
    looks.remember("c1", [occ("a", T0)])
    looks.prune(T0 + LOOKBACK_MS - 1)
    assert looks.looked_at("c1", occ("a", T0)) and not looks.looked_at("c2", occ("a", T0))
    looks.prune(T0 + LOOKBACK_MS)  # the next look starts at T0: it cannot reach it any more
    assert looks.seen == {}


def test_past_the_cap_the_oldest_go_and_the_floor_rises_over_them() -> None:
    looks = CampaignLooks(floor_ms=-1)
    looks.remember("c1", [occ(str(i), T0 + i) for i in range(MAX_SEEN + 10)])
    looks.prune(T0)
    assert len(looks.seen) == MAX_SEEN and looks.floor_ms == T0 + 9
    assert looks.since(T0 + 20) == T0 + 9  # never back to what was forgotten
    assert CampaignLooks.from_dict(looks.to_dict()) == looks


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(max_size=3), st.integers())))
def test_anything_else_reads_as_no_memory_or_a_bounded_one(data: object) -> None:
    looks = CampaignLooks.from_dict(data)
    assert looks is None or len(looks.seen) <= MAX_SEEN
