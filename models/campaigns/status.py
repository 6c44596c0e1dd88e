"""Campaign status: an admin's status changes (`with_status`), the derived status
(`effective_status`) and the API's view of a campaign (`public_campaign`).

Status
  Stored statuses are draft, active and paused (created as draft unless the body says
  otherwise). "completed" is derived, never stored (`effective_status`): an active campaign that
  can never fire again (its one_time instant or its end has passed). Activating a campaign that
  could never fire is refused, so an admin learns at once that the instant is already past.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models.campaigns.errors import CampaignConflict, choice, fail
from models.campaigns.occurrences import next_run
from models.campaigns.records import STATUSES, WEEKDAY_NAMES, Campaign, DripStep, ManualSend, Target
from models.events import MAX_TS_MS, format_ts


def _last_possible_ms(c: Campaign) -> int:
    """No occurrence of `c` can come after this instant."""
    last = MAX_TS_MS if c.end_ms is None else c.end_ms
    if c.schedule.kind == "one_time" and c.schedule.at_ms is not None:
        last = min(last, c.schedule.at_ms)
    return last


def check_can_fire(c: Campaign, now_ms: int) -> None:
    # Activation gates on occurrences after activated_ms, so such a campaign would never fire.
    if c.schedule.kind == "one_time" and c.schedule.at_ms is not None and c.schedule.at_ms <= now_ms:
        fail("schedule.at", "has already passed: an active one_time campaign would never fire")
    if c.end_ms is not None and c.end_ms <= now_ms:
        fail("end", "has already passed: an active campaign would never fire")


def with_status(c: Campaign, status: str, now_ms: int) -> Campaign:
    """The campaign after an admin's status change at `now_ms` (the API's clock).

    draft -> active, active <-> paused; asking for the current status is a no-op that returns `c`
    unchanged (a retried request changes nothing). Going back to draft, pausing a draft, an
    unknown status and "completed" (derived, see `effective_status`) are refused. Activating
    stamps `activated_ms`, so what fell due while the campaign was draft or paused never fires.
    """
    # Strictly after the version it changes, even within one millisecond (or a clock step back):
    # the campaigns view keeps the newest definition by updated_ms (infra/campaign_view.py).
    updated = max(now_ms, c.updated_ms + 1)
    if status == "completed":
        fail("status", "'completed' is derived from the schedule and cannot be set")
    choice(status, STATUSES, "status")
    if status == c.status:
        return c
    if status == "draft":
        raise CampaignConflict("status", f"status cannot go back to draft from {c.status}")
    if status == "paused" and c.status != "active":
        raise CampaignConflict(
            "status", f"status: only an active campaign can be paused; this one is {c.status}"
        )
    if status == "active":
        check_can_fire(c, now_ms)
        return dataclasses.replace(c, status=status, updated_ms=updated, activated_ms=now_ms)
    return dataclasses.replace(c, status=status, updated_ms=updated)


def effective_status(c: Campaign, now_ms: int) -> str:
    """The stored status, or "completed" for an active campaign that can never fire after `now_ms`
    (its one_time instant or its end has passed). Draft and paused campaigns keep their status."""
    if c.status == "active" and _last_possible_ms(c) <= now_ms:
        return "completed"
    return c.status


def public_campaign(c: Campaign, now_ms: int) -> dict[str, Any]:
    """A campaign as the API shows it: RFC 3339 times, the derived status, only relevant fields,
    its `next_run` (`models.campaigns.occurrences.next_run`: an instant, "per user" or null) and
    its recent manual sends, newest first."""

    def when(ms: int | None) -> str | None:
        return None if ms is None else format_ts(ms)

    s = c.schedule
    schedule: dict[str, Any] = {"kind": s.kind}
    if s.kind == "one_time":
        schedule["at"] = when(s.at_ms)
    elif s.kind == "recurring":
        schedule.update(every=s.every, local_time=s.local_time)
        if s.every == "weekly" and s.weekdays:
            schedule["days"] = [WEEKDAY_NAMES[day] for day in s.weekdays]
        elif s.every == "weekly":
            schedule["weekday"] = s.weekday
        if s.every == "monthly":
            schedule["day_of_month"] = s.day_of_month
    elif s.steps:
        schedule.update(steps=[_public_step(step) for step in s.steps], local_time=s.local_time)
    else:
        schedule.update(offsets_days=list(s.offsets_days), local_time=s.local_time)
    upcoming = next_run(c, now_ms)
    return {
        "id": c.id,
        "name": c.name,
        "status": effective_status(c, now_ms),
        "schedule": schedule,
        "target": public_target(c.target),
        "intervention": c.intervention,
        "template": c.template,
        "start": when(c.start_ms),
        "end": when(c.end_ms),
        "created_at": when(c.created_ms),
        "updated_at": when(c.updated_ms),
        "activated_at": when(c.activated_ms),
        "next_run": when(upcoming) if isinstance(upcoming, int) else upcoming,
        "sends": [public_send(send) for send in reversed(c.sends)],
    }


def _public_step(step: DripStep) -> dict[str, Any]:
    return {name: value for name, value in step.to_dict().items() if value is not None}


def public_target(t: Target) -> dict[str, Any]:
    """A target as the API shows it: its kind and only the fields that apply to it."""
    target: dict[str, Any] = {"kind": t.kind}
    if t.kind == "at_risk":
        target["threshold"] = t.threshold
    elif t.kind == "inactive":
        target["inactive_days"] = t.inactive_days
    elif t.kind == "filter":
        target.update(field=t.field, op=t.op, value=list(t.value) if isinstance(t.value, tuple) else t.value)
    return target


def public_send(send: ManualSend) -> dict[str, Any]:
    """A manual send as the API shows it: its audience is `user_id`, `filter`, or (both null) the
    campaign's own target."""
    return {
        "id": send.id,
        "at": format_ts(send.at_ms),
        "user_id": send.user_id,
        "filter": None if send.target is None else public_target(send.target),
    }
