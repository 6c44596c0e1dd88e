"""Notification settings as a user sees and sets them (models/notification_settings.py): every
default shown, every field a user gets wrong named, and nothing set that the workers would read
differently (``checked_prefs``, models/career.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.career import DIGESTS, checked_prefs
from models.interventions.policy import CHANNELS, INTERVENTION_TYPES
from models.notification_settings import FIELDS, InvalidSettings, settings_view, validated_settings

DEFAULTS = {
    "channels": ["IN_APP"],
    "quiet_hours": None,
    "opt_out": [],
    "job_alerts": True,
    "digest": "off",
}


def field_of(body: dict[str, Any]) -> str:
    with pytest.raises(InvalidSettings) as info:
        validated_settings(body)
    assert str(info.value).startswith(f"{info.value.field}: ")
    return info.value.field


def test_no_preferences_show_every_default() -> None:
    assert settings_view({}) == DEFAULTS
    assert list(settings_view({})) == list(FIELDS)


def test_the_view_shows_only_what_the_workers_would_honour() -> None:
    stored = {"channels": ["FAX"], "quiet_hours": ["9:00", "9:00"], "job_alerts": "no", "junk": 1}
    assert settings_view(stored) == DEFAULTS
    stored = {"channels": ["push"], "quiet_hours": ["21:00", "7:00"], "digest": " Weekly "}
    assert settings_view(stored) == {
        **DEFAULTS,
        "channels": ["PUSH"],
        "quiet_hours": ["21:00", "07:00"],
        "digest": "weekly",
    }


def test_an_empty_document_sets_the_defaults() -> None:
    prefs = validated_settings({})
    assert settings_view(prefs) == DEFAULTS
    # Explicit, so a later change of default does not silently change what a user chose.
    assert prefs == {"job_alerts": True, "opt_out": [], "digest": "off"}


def test_a_full_document_round_trips_through_the_view() -> None:
    body = {
        "channels": ["PUSH", "EMAIL", "IN_APP"],
        "quiet_hours": ["21:30", "06:45"],
        "opt_out": ["discount_offer", "peer_comparison"],
        "job_alerts": False,
        "digest": "weekly",
    }
    prefs = validated_settings(body)
    assert settings_view(prefs) == body
    # What a client reads back it may send again unchanged.
    assert validated_settings(settings_view(prefs)) == prefs


def test_names_are_case_normalised_trimmed_and_kept_once() -> None:
    prefs = validated_settings(
        {
            "channels": ["push", " Sms ", "PUSH"],
            "opt_out": ["Discount_Offer", "discount_offer"],
            "quiet_hours": ["7:05", "9:00"],
        }
    )
    assert prefs["channels"] == ["PUSH", "SMS"]
    assert prefs["opt_out"] == ["discount_offer"]
    assert prefs["quiet_hours"] == ["07:05", "09:00"]


def test_null_takes_the_default_for_every_field() -> None:
    prefs = validated_settings(dict.fromkeys(("channels", "quiet_hours", "opt_out", "job_alerts", "digest")))
    assert settings_view(prefs) == DEFAULTS


def test_digest_is_read_whatever_its_case() -> None:
    assert validated_settings({"digest": " Daily "})["digest"] == "daily"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channels": ["FAX"]}, "channels"),
        ({"channels": ["PUSH", "FAX"]}, "channels"),
        ({"channels": ["PUSH", 3]}, "channels"),
        ({"channels": []}, "channels"),
        ({"channels": "PUSH"}, "channels"),
        ({"channels": {"PUSH": True}}, "channels"),
        ({"channels": ["PUSH"] * (2 * len(CHANNELS) + 1)}, "channels"),  # a bounded list
        ({"quiet_hours": ["21:00"]}, "quiet_hours"),
        ({"quiet_hours": ["21:00", "07:00", "08:00"]}, "quiet_hours"),
        ({"quiet_hours": ["25:00", "07:00"]}, "quiet_hours"),
        ({"quiet_hours": ["21:00", "07:60"]}, "quiet_hours"),
        ({"quiet_hours": ["21:00", 700]}, "quiet_hours"),
        ({"quiet_hours": "21:00-07:00"}, "quiet_hours"),
        ({"quiet_hours": ["22:00", "22:00"]}, "quiet_hours"),  # an empty window
        ({"quiet_hours": ["7:00", "07:00"]}, "quiet_hours"),  # the same time written twice
        ({"job_alerts": "no"}, "job_alerts"),
        ({"job_alerts": 0}, "job_alerts"),
        ({"job_alerts": 1}, "job_alerts"),
        ({"digest": "monthly"}, "digest"),
        ({"digest": 1}, "digest"),
        ({"digest": ["daily"]}, "digest"),
        ({"opt_out": ["spam"]}, "opt_out"),
        ({"opt_out": [3]}, "opt_out"),
        ({"opt_out": [None]}, "opt_out"),
        ({"opt_out": "discount_offer"}, "opt_out"),
        ({"colour": "red"}, "colour"),
        ({"notification_prefs": {}}, "notification_prefs"),
    ],
)
def test_each_invalid_field_is_named(body: dict[str, Any], field: str) -> None:
    assert field_of(body) == field


def test_the_field_at_fault_is_named_among_valid_ones() -> None:
    valid = {"channels": ["PUSH"], "quiet_hours": ["21:00", "07:00"], "job_alerts": True}
    assert field_of({**valid, "digest": "hourly"}) == "digest"
    assert field_of({**valid, "opt_out": ["nope"]}) == "opt_out"
    # Of two unknown keys, the first in order is named (deterministic for a client).
    assert field_of({**valid, "zeta": 1, "alpha": 2}) == "alpha"


def test_the_message_names_the_offending_value_briefly() -> None:
    with pytest.raises(InvalidSettings) as info:
        validated_settings({"channels": ["FAX" * 100]})
    message = str(info.value)
    assert "FAX" in message and len(message) < 200


# --- property: what is set is what the workers read -------------------------------------------

_case = st.sampled_from([str.upper, str.lower, str.title, lambda s: f" {s} "])
_hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
settings_bodies = st.fixed_dictionaries(
    {},
    optional={
        "channels": st.lists(
            st.builds(lambda c, f: f(c), st.sampled_from(CHANNELS), _case), min_size=1, max_size=6
        ),
        "quiet_hours": st.one_of(st.none(), st.tuples(_hhmm, _hhmm).filter(lambda w: w[0] != w[1]).map(list)),
        "opt_out": st.lists(
            st.builds(lambda t, f: f(t), st.sampled_from(INTERVENTION_TYPES), _case), max_size=10
        ),
        "job_alerts": st.booleans(),
        "digest": st.sampled_from(DIGESTS),
    },
)


@given(settings_bodies)
def test_valid_settings_are_exactly_what_checked_prefs_keeps(body: dict[str, Any]) -> None:
    prefs = validated_settings(body)
    assert checked_prefs(prefs) == prefs
    view = settings_view(prefs)
    # Sent back as read, the settings are the same (the defaults then stated explicitly).
    assert settings_view(validated_settings(view)) == view
    if "channels" in body:
        assert view["channels"] == list(dict.fromkeys(c.strip().upper() for c in body["channels"]))
    assert view["job_alerts"] is body.get("job_alerts", True)
    assert view["digest"] == body.get("digest", "off")
