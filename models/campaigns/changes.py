"""An admin's changes to an existing campaign: editing its definition (`edit`), copying it
(`duplicate`) and deleting it (`deleted_marker`). Pure: `now_ms` is the API's clock.

Edit
  A PUT replaces the whole definition (the body `parse_campaign` takes) and keeps the campaign's
  id, `created_ms`, manual sends and activation; `updated_ms` moves strictly past the version it
  replaces (the campaigns view keeps the newest by `updated_ms`). Without a "status" the status
  stays; with one, it changes under `with_status`'s rules (draft -> active, active <-> paused;
  an illegal change is a `CampaignConflict`).

  Editing an active campaign is allowed and takes effect at each user's next look (every worker
  re-plans everyone when a definition changes). It is not a re-activation: an occurrence of the
  new definition between the user's last look and that look fires like any late occurrence (only
  the latest), while what is already sent is never sent again, because the delivery key is the
  occurrence's (`campaign:<id>:<key>`, models/campaigns/occurrences.py): a one_time campaign
  moved to another instant does not reach again whoever it reached ("once"), a daily one moved
  from 09:00 to 18:00 does not send twice on the same local date, a drip step keeps its key
  ("d3") whatever its template. An edit that would leave an active campaign unable to ever fire
  (its instant or end already past) is refused, naming the field, unless it could already not
  (a completed campaign may still be renamed).

Duplicate
  A draft copy under a new id, with no sends, activation or history: its occurrences have keys of
  their own, so a copy can reach again whoever the original reached.

Delete
  A tombstone on the broadcast topic (every worker drops the campaign) and `deleted_marker` in
  the campaigns view, newer than any definition, so a worker whose feed lags cannot mirror the
  definition back. A deleted id is not reused: its delivery keys are still remembered by users.
  Notifications of the campaign already held by quiet hours are still delivered when due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from models.campaigns.errors import fail
from models.campaigns.parsing import MAX_NAME_LEN, check_campaign_id, parse_campaign, parse_name
from models.campaigns.records import Campaign
from models.campaigns.status import check_can_fire, effective_status, with_status

#: What a copy is called when the admin names none: "Copy of <name>", cut to MAX_NAME_LEN.
COPY_PREFIX = "Copy of "
#: The largest stored definition (its JSON) the API writes: well within a broker's default
#: message limit (1 MiB), whatever its filters and manual sends hold.
MAX_DEFINITION_BYTES = 256 * 1024


def edit(old: Campaign, body: object, now_ms: int) -> Campaign:
    """`old` with the definition in `body` (module docstring, Edit). Raises InvalidCampaign for a
    bad body (naming the field) and CampaignConflict for a status `old` cannot go to."""
    wanted = body.get("status") if isinstance(body, Mapping) else None
    definition = {k: v for k, v in body.items() if k != "status"} if isinstance(body, Mapping) else body
    parsed = parse_campaign(definition, old.id, now_ms)
    edited = dataclasses.replace(
        parsed,
        status=old.status,
        created_ms=old.created_ms,
        updated_ms=old.updated_ms,
        activated_ms=old.activated_ms,
        sends=old.sends,
    )
    if wanted is not None:
        # Checks the value, then the change (none: the current status) and, to active, firing.
        edited = with_status(edited, wanted, now_ms)
    if edited.status == "active" and effective_status(old, now_ms) != "completed":
        check_can_fire(edited, now_ms)
    return dataclasses.replace(edited, updated_ms=max(now_ms, old.updated_ms + 1))


def duplicate(old: Campaign, new_id: str, name: object, now_ms: int) -> Campaign:
    """A draft copy of `old` under `new_id` (checked like a created campaign's), named `name` or
    "Copy of <old name>" when it is None; no activation, no sends."""
    check_campaign_id(new_id)
    if new_id == old.id:
        fail("id", "of a copy must differ from the original's")
    copy_name = (COPY_PREFIX + old.name)[:MAX_NAME_LEN] if name is None else parse_name(name)
    return dataclasses.replace(
        old,
        id=new_id,
        name=copy_name,
        status="draft",
        created_ms=now_ms,
        updated_ms=now_ms,
        activated_ms=None,
        sends=(),
    )


def deleted_marker(old: Campaign, now_ms: int) -> dict[str, Any]:
    """What the campaigns view holds for a deleted campaign: newer than any of its definitions."""
    return {"id": old.id, "deleted": True, "updated_ms": max(now_ms, old.updated_ms + 1)}
