"""Telling a person's open or click from a machine's, without I/O.

Mail security gateways (Microsoft Safe Links, Proofpoint, Mimecast, Barracuda…) follow every
link of a mail before the reader sees it, and Apple Mail's privacy protection loads every image
when the mail arrives. Counted as they come, every mail would look opened and clicked, and the
A/B choice would learn from machines. What gives a machine away here:
- **the trap**: a link in the mail no reader can see (hidden, unlabelled); whatever follows it
  follows every link, and the notification's opens and clicks are set aside for a while after;
- **speed**: a mail opened or clicked within seconds of being sent was read by a gateway on its
  way in (``MIN_HUMAN_DELAY_MS``); a push is tapped that fast by people, so this is for mail;
- **the user agent**: what declares itself a bot, a link previewer or an HTTP library.
None of this is certain, so a tracked open or click is also never taken for the user's activity
(models/risk_features.py ``feedback_only``): at worst a machine's click is counted in a funnel.
"""

from __future__ import annotations

import re

from models.time_units import MINUTE_MS, SECOND_MS

#: An email open or click this soon after the send is a gateway's.
MIN_HUMAN_DELAY_MS = 30 * SECOND_MS
#: After a trap is followed, the notification's opens and clicks are a machine's for this long
#: (a scanner follows all of a mail's links within seconds, in any order).
TRAPPED_FOR_MS = 10 * MINUTE_MS
#: Channels whose links pass through mail gateways.
SCANNED_CHANNELS = frozenset({"EMAIL"})

# Named crawlers and scanners, and HTTP libraries; not a bare "bot" (CUBOT is a phone brand).
_MACHINE_AGENT = re.compile(
    r"(?i)googlebot|bingbot|yandexbot|duckduckbot|baiduspider|applebot|slackbot|twitterbot"
    r"|linkedinbot|discordbot|telegrambot|facebookexternalhit|whatsapp/|skypeuripreview"
    r"|linkpreview|[a-z]*crawler|spider|slurp|scanner|safelinks|proofpoint|mimecast|barracuda"
    r"|\(compatible;[^)]*\bbot\b|python-|curl/|wget/|go-http|okhttp|java/|headless|phantomjs"
    r"|libwww|httpclient|axios/"
)


def machine_reason(*, channel: str, sent_ms: int, now_ms: int, user_agent: str, trapped: bool) -> str | None:
    """Why an open or click looks like a machine's (a metric label), or None for a person."""
    if trapped:
        return "trap"
    if channel in SCANNED_CHANNELS and now_ms - sent_ms < MIN_HUMAN_DELAY_MS:
        return "too_soon"
    if not user_agent.strip() or _MACHINE_AGENT.search(user_agent[:512]):
        return "agent"
    return None
