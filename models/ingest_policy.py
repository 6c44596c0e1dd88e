"""What a signed-in user may assert about themselves through ``POST /v1/events`` (docs/security.md).

A user's token proves *who* posts, not *what happened*. So a user may post only the actions their
own client witnesses (opening a lesson, finishing a practice session, viewing a job, opening a
notification): forging one of those gains at most what the rules' daily XP cap allows. Everything
else comes from trusted producers only, an admin token or Kafka:

* outcomes the platform decides: a course completed, a certificate earned, a referral accepted,
  an application made (``job_apply`` is derived from ``application-status``), a profile judged
  complete;
* what the engine derives itself and would otherwise count twice: a daily challenge or a goal
  completed, a goal set (``streams/growth.py`` emits these);
* notification clicks and conversions: they choose the A/B winner, so a user who could post them
  could steer what everyone is sent;
* any type not on the list. Unknown types are kept for analytics when a trusted producer sends
  them, but a user could otherwise fill their state with counters of arbitrary names.

Event time is bounded too. Each UTC day has its own XP cap and each local day can be a streak day,
so an event dated in the past buys a fresh cap and a made-up streak day: a user's event must lie
within ``MAX_USER_EVENT_AGE_MS`` before ingest time (a day, enough for an offline client to sync)
and no further ahead than ``models.events.FUTURE_TOLERANCE_MS`` (the bound every producer has).
Admin tokens post any type at any past time (imports, replays); the future bound holds for them
as for everyone.
"""

from __future__ import annotations

from models.events import InvalidEvent
from models.time_units import HOUR_MS

#: The event types a user may post for themselves: what the user's own client witnesses.
USER_EVENT_TYPES = frozenset(
    {
        # sessions and navigation
        "login",
        "logout",
        "app_open",
        "session_start",
        "session_end",
        "page_view",
        # learning
        "lesson_start",
        "lesson_complete",
        "video_lesson_complete",
        "video_watch",
        "article_read",
        "flashcard_review_complete",
        "quiz_complete",
        "assessment_complete",
        "course_enroll",
        "webinar_attend",
        # practice
        "interview_session_start",
        "interview_session_complete",
        "coding_exercise_complete",
        "portfolio_project_submit",
        # career
        "career_research",
        "job_view",
        "job_save",
        "resume_upload",
        "resume_update",
        "profile_update",
        "skill_add",
        # community
        "mentor_connect",
        "mentor_session_complete",
        "forum_post",
        "forum_reply",
        "peer_review_submit",
        # notification feedback the client sees (clicks and conversions are tracked server-side)
        "notification_opened",
    }
)

#: Types in use that only trusted producers assert (listed so a test can prove the two lists
#: never overlap; any type missing from ``USER_EVENT_TYPES`` is refused from users all the same).
PLATFORM_EVENT_TYPES = frozenset(
    {
        "course_complete",
        "certificate_earned",
        "referral_accepted",
        "referral_completed",
        "notification_clicked",
        "notification_converted",
        "daily_challenge_complete",
        "goal_set",
        "goal_achieved",
        "job_apply",
        "job_application",
        "application_submitted",
        "profile_complete",
        "reward_redeemed",
        "streak_freeze_bought",
    }
)

#: How far back a user's event may be dated, relative to ingest time.
MAX_USER_EVENT_AGE_MS = 24 * 3600 * 1000

#: Reasons this module refuses an item with (per-item ``reason`` of a 422, and a metric label).
TYPE_NOT_ALLOWED = "type_not_allowed"
TS_TOO_OLD = "ts_too_old"


def check_user_event(event_type: str, ts_ms: int, now_ms: int) -> None:
    """Raise ``InvalidEvent`` unless a user may post an event of ``event_type`` dated ``ts_ms``.

    The future bound is not checked here: ``models.events`` applies it to every producer.
    """
    if event_type not in USER_EVENT_TYPES:
        raise InvalidEvent(
            TYPE_NOT_ALLOWED,
            f"type {event_type[:64]!r} is not one users may post; it comes from trusted producers only",
        )
    if ts_ms < now_ms - MAX_USER_EVENT_AGE_MS:
        hours = MAX_USER_EVENT_AGE_MS // HOUR_MS
        raise InvalidEvent(TS_TOO_OLD, f"ts is more than {hours} hours before ingest time")
