"""Durations in milliseconds: the engine's clocks are Unix milliseconds (event ``ts``), so every
module that does date arithmetic takes its units from here."""

from __future__ import annotations

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
