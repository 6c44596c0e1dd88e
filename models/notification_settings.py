"""A user's notification settings as they see and set them (CONTRACT §7, notification-settings).

They are the profile's ``notification_prefs``: the workers read them with ``checked_prefs``
(models/career.py), which drops what it does not know, since a producer's profile may carry
anything. A person setting their own preferences is told instead: ``validated_settings`` refuses
an unknown channel, a malformed quiet window or an unknown digest with the field at fault, and
its result is exactly what ``checked_prefs`` would keep. ``settings_view`` shows stored
preferences with every default filled in, so a reader never has to know the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.career import DEFAULT_CHANNELS, DIGESTS, checked_prefs
from models.interventions.policy import CHANNELS, NOTIFICATION_TYPES
from models.interventions.quiet_hours import parse_quiet_hours

#: The settings' fields, in the order they are shown.
FIELDS = ("channels", "quiet_hours", "opt_out", "job_alerts", "digest")


class InvalidSettings(ValueError):
    """Settings a user cannot have; ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def settings_view(prefs: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``prefs`` amount to, defaults filled in: in-app only, no quiet hours, no
    opt-outs, job alerts on, no digest."""
    checked = checked_prefs(prefs)
    return {
        "channels": checked.get("channels") or list(DEFAULT_CHANNELS),
        "quiet_hours": checked.get("quiet_hours"),
        "opt_out": checked.get("opt_out") or [],
        "job_alerts": checked.get("job_alerts", True),
        "digest": checked.get("digest", "off"),
    }


def validated_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``notification_prefs`` a settings document asks for; InvalidSettings if any field
    holds what the engine would not honour. A field left out, or null, takes its default."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidSettings(unknown[0], "not a notification setting")
    channels = _names(body, "channels", CHANNELS, str.upper)
    if body.get("channels") is not None and not channels:
        raise InvalidSettings("channels", "at least one channel; IN_APP is the quietest")
    opt_out = _names(body, "opt_out", NOTIFICATION_TYPES, str.lower)
    quiet = body.get("quiet_hours")
    if quiet is not None and parse_quiet_hours(quiet) is None:
        raise InvalidSettings("quiet_hours", 'two different "HH:MM" times, start and end, or null')
    job_alerts = True if body.get("job_alerts") is None else body["job_alerts"]
    if not isinstance(job_alerts, bool):
        raise InvalidSettings("job_alerts", "true or false")
    digest = "off" if body.get("digest") is None else body["digest"]
    if isinstance(digest, str):
        digest = digest.strip().lower()
    if not isinstance(digest, str) or digest not in DIGESTS:
        raise InvalidSettings("digest", f"one of {', '.join(DIGESTS)}")
    prefs: dict[str, Any] = {"job_alerts": job_alerts, "digest": digest, "opt_out": opt_out}
    if channels:
        prefs["channels"] = channels
    if quiet is not None:
        prefs["quiet_hours"] = quiet
    # Normalised the way the workers read it ("7:00" is kept as "07:00"), so the view shows
    # what was set.
    return checked_prefs(prefs)


def _names(body: Mapping[str, Any], field: str, vocabulary: tuple[str, ...], case: Any) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > len(vocabulary) * 2:
        raise InvalidSettings(field, f"a list of {', '.join(vocabulary)}")
    names: list[str] = []
    for item in value:
        name = case(item.strip()) if isinstance(item, str) else None
        if name not in vocabulary:
            raise InvalidSettings(field, f"{str(item)[:40]!r} is not one of {', '.join(vocabulary)}")
        if name not in names:
            names.append(name)
    return names
