"""Writing a user's profile from the API (the profile, settings, unsubscribe and contact
verification routes all change it this way).

The workers are the profile view's only writer (streams/career_pipeline.py), as for every view:
a change builds the new profile on the one the view holds, stamps it with ``updated_at``,
produces it keyed by the user to ``user-profiles``, and waits briefly until the view shows that
version (200); past the wait the answer is 202 with what was written. The API's own last write
is kept beside the view for a while, so a change answered 202 and the next change build on the
first, not on a view that does not show it yet.
"""

from __future__ import annotations

from typing import Any

import orjson

from api.commands import now_ms
from api.errors import ApiError
from api.responses import OrjsonResponse
from api.state import AppState
from infra import keys
from infra.commands import await_key
from infra.producer import ProducerUnavailable
from models.career import checked_prefs
from models.events import InvalidEvent, UserProfile, format_ts, validate_profile

#: The fields a profile PUT sets: those of ``user-profiles`` (CONTRACT §4) and the contact.
PROFILE_FIELDS = (
    "display_name",
    "timezone",
    "location",
    "skills",
    "experience_years",
    "education",
    "interests",
    "salary_expectation",
    "currency",
    "email",
    "phone",
    "school",
    "cohort",
    "leaderboard_visible",
)
#: How long the API's own last write of a profile is kept beside the worker's view: far past
#: any worker lag a PUT could still build on.
WRITTEN_TTL_MS = 15 * 60 * 1000
#: How long a PUT waits for the worker's view to show it (see the module docstring).
APPLIED_WAIT_S = 3.0


def profile_fields(held: dict[str, Any]) -> dict[str, Any]:
    """The profile fields ``held`` sets (its settings and stamps left out)."""
    return {name: held[name] for name in PROFILE_FIELDS if held.get(name) is not None}


async def held_profile(state: AppState, user_id: str) -> dict[str, Any] | None:
    """The newer of the worker's view and the API's own last write (kept while the worker may
    not have applied it): a PUT answered 202 and the next PUT must build on the first, not on a
    view that does not show it yet, or the first would be written back away."""
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.user_profile(user_id))
        pipe.get(keys.user_profile_written(user_id))
        raw_view, raw_written = await pipe.execute()
    held = [dict(orjson.loads(raw)) for raw in (raw_view, raw_written) if raw is not None]
    return max(held, key=lambda doc: int(doc.get("updated_at") or 0), default=None)


def check_profile(user_id: str, fields: dict[str, Any], stamp: int) -> UserProfile:
    """``fields`` as the worker will read them (``validate_profile``), or 422 with its reason."""
    try:
        return validate_profile({**fields, "user_id": user_id, "updated_at": format_ts(stamp)}, stamp)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_profile", exc.message, extra={"reason": exc.reason}) from exc


async def write_profile(
    state: AppState, user_id: str, held: dict[str, Any], fields: dict[str, Any]
) -> OrjsonResponse:
    """Produce ``fields`` as the user's whole profile, stamped newer than ``held``, and answer
    with the view once it shows it (200), else with what was written (202)."""
    stamp = max(now_ms(), int(held.get("updated_at") or 0) + 1)
    record = {**fields, "user_id": user_id, "updated_at": format_ts(stamp)}
    profile = check_profile(user_id, fields, stamp)
    # Sent as normalised (the address's domain lower-cased, the number in E.164), which is what
    # the view will show.
    record.update(email=profile.email, phone=profile.phone)
    try:
        await state.producer.send_all(
            state.config.profiles_topic, [(user_id, record)], state.config.produce_timeout_s
        )
    except ProducerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    # Checked by the same rules as the worker's; kept in the view's shape (times in epoch ms).
    written = {**record, "notification_prefs": checked_prefs(profile.notification_prefs), "updated_at": stamp}
    await state.redis.set(keys.user_profile_written(user_id), orjson.dumps(written), px=WRITTEN_TTL_MS)

    def applied(raw: bytes | str) -> dict[str, Any] | None:
        view = dict(orjson.loads(raw))
        return view if int(view.get("updated_at") or 0) >= stamp else None

    view = await await_key(state.redis, keys.user_profile(user_id), applied, APPLIED_WAIT_S)
    if view is None:
        return OrjsonResponse(record, status_code=202)
    return OrjsonResponse(shown(view))


def shown(view: dict[str, Any]) -> dict[str, Any]:
    """The view with ``updated_at`` as RFC 3339, the way every other time is shown."""
    stamp = view.get("updated_at")
    return {**view, "updated_at": None if stamp is None else format_ts(int(stamp))}
