"""An admin's "send now": a campaign sent at once to one student or to a filtered set
(`parse_send`, `add_send`). Pure: `now_ms` is the API's clock.

Design
  A send is a one-off occurrence of the campaign, kept in its definition (`Campaign.sends`) and
  broadcast like any change of it, so the worker that owns each user evaluates it there, in
  stream time, through the same gate as every nudge (opt-out, throttle, quiet hours): when the
  user's stream time passes the send's instant (`models.campaigns.occurrences.sends_due`). Its
  occurrence key is "s-<send id>", so each user gets a send at most once, however often the
  definition is replayed or re-broadcast. A send fires whatever the campaign's status (a draft
  can be tried on one student), schedule and window; it sends the campaign's type and template.

Audience
  `{"user_id": "u-42"}`: that user only (the campaign's target is not consulted: the admin chose
  them); `{"filter": {...}}`: the users a target of the campaign's shape selects
  (`{"kind": "filter", "field": "location", "op": "eq", "value": "Nairobi"}`, or all, at_risk,
  inactive); `{}`: the campaign's own target.

Idempotency and bounds
  A request may carry its own `send_id`: a retry with the same one is the same send (the same
  audience again changes nothing; another audience is a conflict). Without one, a request for the
  same audience as a send made in the last SEND_DEDUP_MS is that send, so a retried or
  double-clicked request sends once. A definition keeps the sends of the last SEND_RETENTION_MS
  (a worker whose stream time lags more than that misses them) and at most MAX_SENDS of them: a
  further one is refused (`TooManySends`) until the oldest ages out.
"""

from __future__ import annotations

import dataclasses
import re

from models.campaigns.errors import CampaignConflict, InvalidCampaign, fail, show
from models.campaigns.parsing import parse_target, present_keys
from models.campaigns.records import Campaign, ManualSend
from models.events import InvalidEvent, check_id
from models.time_units import DAY_MS, MINUTE_MS

MAX_SENDS = 50
SEND_RETENTION_MS = 2 * DAY_MS
SEND_DEDUP_MS = 10 * MINUTE_MS
MAX_SEND_ID_LEN = 64
_SEND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}", re.ASCII)
_SEND_FIELDS = frozenset({"user_id", "filter", "send_id"})


class TooManySends(Exception):
    """MAX_SENDS sends are already kept; `retry_after_ms` until the oldest ages out."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(
            f"at most {MAX_SENDS} sends of a campaign in {SEND_RETENTION_MS // DAY_MS} days; "
            f"the next is possible in {max(1, retry_after_ms // 1000)} s"
        )
        self.retry_after_ms = retry_after_ms


def check_send_id(value: object) -> str:
    if not isinstance(value, str) or not _SEND_ID.fullmatch(value):
        fail(
            "send_id",
            f"must be 1..{MAX_SEND_ID_LEN} letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, got {show(value)}",
        )
    return value


def parse_send(obj: object, send_id: str, now_ms: int) -> tuple[ManualSend, bool]:
    """The send an admin's body asks for at `now_ms`, and whether the body named its id (else
    `send_id`, a fresh one, is used). Raises InvalidCampaign naming the field."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        fail("send", f"must be an object, got {type(obj).__name__}")
    body = present_keys(obj)
    unknown = sorted(set(body) - _SEND_FIELDS)
    if unknown:
        fail(unknown[0], f"does not apply to a send; allowed: {', '.join(sorted(_SEND_FIELDS))}")
    named = "send_id" in body
    chosen = check_send_id(body["send_id"]) if named else send_id
    if "user_id" in body and "filter" in body:
        fail("filter", "and user_id are two audiences; give one (or neither for the campaign's own)")
    user_id = None
    if "user_id" in body:
        raw = body["user_id"]
        if not isinstance(raw, str):
            fail("user_id", f"must be a string, got {type(raw).__name__}")
        try:
            user_id = check_id(raw, "user_id")
        except InvalidEvent as exc:
            fail("user_id", f"is not a usable id: {exc.message}")
    target = None
    if "filter" in body:
        try:
            target = parse_target(body["filter"])
        except InvalidCampaign as exc:
            field = "filter" + exc.field.removeprefix("target")
            raise InvalidCampaign(field, exc.message.replace(exc.field, field, 1)) from None
    return ManualSend(chosen, now_ms, user_id=user_id, target=target), named


def _same_audience(a: ManualSend, b: ManualSend) -> bool:
    return (a.user_id, a.target) == (b.user_id, b.target)


def add_send(c: Campaign, send: ManualSend, named: bool, now_ms: int) -> tuple[Campaign, ManualSend, bool]:
    """(`c` with `send`, the send that stands, whether it is one `c` already had): sends older than
    SEND_RETENTION_MS are dropped; a `named` id already kept is that send (CampaignConflict when
    its audience differs), and an unnamed send for the audience of one in the last
    SEND_DEDUP_MS is that one. TooManySends when MAX_SENDS are kept."""
    kept = tuple(s for s in c.sends if s.at_ms > now_ms - SEND_RETENTION_MS)
    for earlier in kept:
        if earlier.id == send.id:
            if named and not _same_audience(earlier, send):
                raise CampaignConflict(
                    "send_id", f"send_id {send.id!r} was used for another audience; use a new send_id"
                )
            return c, earlier, True
    if not named:
        for earlier in reversed(kept):
            if _same_audience(earlier, send) and earlier.at_ms > now_ms - SEND_DEDUP_MS:
                return c, earlier, True
    if len(kept) >= MAX_SENDS:
        oldest = min(s.at_ms for s in kept)
        raise TooManySends(oldest + SEND_RETENTION_MS - now_ms)
    changed = dataclasses.replace(c, sends=(*kept, send), updated_ms=max(now_ms, c.updated_ms + 1))
    return changed, send, False
