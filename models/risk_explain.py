"""Risk signals in words, for staff (``GET /v1/at-risk/{user_id}``).

A score's signals are the model features that moved it most (``models.risk.RiskScore``
``top_signals``; their contributions, weight × standardised value, are the risk document's
``contributions``). A positive contribution raises the drop-off risk, a negative one lowers it.
Each feature has one sentence per direction: what a career officer would say about the student.
Feature definitions: models/risk_features.py and docs/risk.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: feature (``models.risk_features.FEATURE_NAMES``) -> (when it raises the risk, when it lowers it)
SIGNAL_WORDS: dict[str, tuple[str, str]] = {
    "recency_log_h": ("Has not been active for a while.", "Was active very recently."),
    "recency_d": ("Several days have passed since the last activity.", "Active within the last day or two."),
    "events_1d": ("Little or no activity today.", "Active today."),
    "events_7d": ("Few activities this week.", "Many activities this week."),
    "events_28d": ("Few activities over the last four weeks.", "Steady activity over the last four weeks."),
    "active_days_7d": ("Active on few days this week.", "Active on most days this week."),
    "active_days_28d": ("Active on few days this month.", "Active on many days this month."),
    "freq_trend_7d": (
        "Less active this week than the week before.",
        "More active this week than the week before.",
    ),
    "session_mean_min": ("Short practice sessions.", "Long, focused practice sessions."),
    "score_mean": ("Low average scores.", "Good average scores."),
    "score_trend": ("Scores are falling.", "Scores are improving."),
    "streak": ("No current streak.", "Keeping a streak going."),
    "xp_7d": ("Little XP earned this week.", "Earning plenty of XP this week."),
    "tenure_log_d": (
        "New to the platform: new students drop out more often.",
        "A settled, long-time student.",
    ),
    "applications_28d": ("No recent job applications.", "Actively applying for jobs."),
    "notif_opens_28d": ("Does not open notifications.", "Opens notifications."),
    "notif_clicks_28d": ("Does not follow notification links.", "Follows notification links."),
    "hour_concentration": ("No regular study time.", "Studies at a regular time of day."),
    "missed_days": (
        "Has missed several of their usual study days.",
        "Not missing their usual study days.",
    ),
}


def explain(contributions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per signal, strongest first: ``signal``, ``effect`` ("raises" or "lowers" the
    risk), ``weight`` (its share of the score's logit) and ``text``. A signal this version does
    not know (a newer model's) is listed with its name as text rather than dropped."""
    out: list[dict[str, Any]] = []
    for name, raw in contributions.items():
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            continue
        raises = raw > 0
        words = SIGNAL_WORDS.get(name)
        text = (words[0] if raises else words[1]) if words else name.replace("_", " ")
        out.append({"signal": name, "effect": "raises" if raises else "lowers", "weight": raw, "text": text})
    return sorted(out, key=lambda e: -abs(e["weight"]))
