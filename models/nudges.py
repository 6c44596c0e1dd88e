"""What the retention sweep sends a user at stream time `now`: the one place that turns a risk
score, a streak about to break, campaign occurrences and deferred notifications into decisions.

Every decision passes `models.interventions.decide` (dedup by key, opt-out, returners, throttle,
channels, quiet hours), so the rules in that module hold whatever the trigger. Sources:

- risk: a user scored medium or worse gets the first recommended type, keyed per user, type and
  UTC day (a user stays at risk for days; the per-type gaps decide how often they hear of it);
- streak: a user whose streak is alive, active on local day L and not yet on L + 1, gets a
  `streak_warning` at `STREAK_WARNING_AT` (19:00) local time on L + 1, once (keyed by that day);
- campaigns: every occurrence between the user's last look and `now` (`models.campaigns.occurrences.due`),
  if the user is in the audience then, keyed by the occurrence, with the occurrence's type and
  template (a drip step's own); and an admin's manual sends (`sends_due`) to this user or to a
  filtered audience;
- deferred: notifications held by quiet hours whose time has come (`interventions.due`).
All instants are stream time, so a replay decides what live decided.

`next_look` says when the user next needs the sweep: the earliest of the risk re-score, a
deferred delivery, the streak warning and the next campaign occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

from models.campaigns import occurrences as camp_occurrences
from models.campaigns import records as camp
from models.campaigns import targeting as camp_targeting
from models.campaigns.looks import CampaignLooks
from models.career_notices import Notice, deadline_notices, next_reminder
from models.gamification import Effects
from models.interventions import (
    DEFERRED,
    QUEUED,
    STAFF_TYPES,
    Decision,
    Notification,
    UserContext,
    allowed_channels,
    decide,
    deliver,
    due,
    recommend_for,
    risk_key,
    withdraw,
)
from models.interventions.templates import BUILTIN_LIBRARY, TemplateLibrary
from models.match_digests import HELD_KINDS, due_at, hold, the_digest
from models.match_digests import frequency as digest_frequency
from models.risk import RiskScore
from models.risk_state import RiskSettings, RiskState, next_due
from models.streaks import local_day
from models.time_units import DAY_MS
from models.tz import local_instant_ms, zone

STREAK_WARNING_AT = time(19, 0)
CAMPAIGN_SOURCE = "campaign:"
#: Risk levels that get a nudge (low does not).
NUDGE_LEVELS = frozenset({"medium", "high", "critical"})

#: template id -> variant counts (`InterventionStats.variant_stats`), for the bandit.
VariantCounts = Callable[[str], Mapping[str, Mapping[str, int]]]


@dataclass
class NudgeOutcome:
    #: Notifications to deliver now (already marked sent in the book).
    delivered: list[Notification] = field(default_factory=list)
    #: Every decision with its source, delivered or not (for analytics and logs).
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    #: (campaign id, occurrence key, outcome) for the campaigns' execution logs
    #: (`CampaignRun.record`); the occurrence key makes each countable once.
    campaign_outcomes: list[tuple[str, str, str]] = field(default_factory=list)


def _ordinal_date(day: int) -> date:
    return date.fromordinal(day)


def streak_warning_instant(state: RiskState, ctx: UserContext) -> tuple[int, int] | None:
    """(local day, instant) of the streak warning this user would get next, or None."""
    last = state.activity.last_event_ms
    if last is None or ctx.streak <= 0:
        return None
    day = local_day(last, ctx.timezone) + 1
    if state.streak_warned_day is not None and state.streak_warned_day >= day:
        return None
    return day, local_instant_ms(_ordinal_date(day), STREAK_WARNING_AT, zone(ctx.timezone))


def _record(out: NudgeOutcome, book_owner: RiskState, source: str, decision: Decision, now_ms: int) -> None:
    out.decisions.append((source, decision))
    if decision.reason == QUEUED and decision.notification is not None:
        deliver(book_owner.notifications, decision.notification, now_ms)
        out.delivered.append(decision.notification)


def _campaign_outcome(decision: Decision) -> str:
    if decision.reason == QUEUED:
        return "sent"
    if decision.reason == DEFERRED:
        return "deferred"
    return f"suppressed:{decision.reason}"


def plan(
    state: RiskState,
    ctx: UserContext,
    score: RiskScore | None,
    now_ms: int,
    *,
    campaigns: Sequence[camp.Campaign],
    facts: camp.UserFacts,
    variant_counts: VariantCounts,
    templates: TemplateLibrary = BUILTIN_LIBRARY,
) -> NudgeOutcome:
    """Every nudge due for this user at stream time `now_ms` (see the module docstring)."""
    out = NudgeOutcome()
    book = state.notifications
    for decision in due(book, now_ms, ctx):
        _record(out, state, "deferred", decision, now_ms)
        n = decision.notification
        if n is not None and n.source.startswith(CAMPAIGN_SOURCE):
            # The campaign's log counted it "deferred"; now it is sent or cancelled.
            campaign_id = n.source[len(CAMPAIGN_SOURCE) :]
            occurrence_key = n.key[len(f"campaign:{campaign_id}:") :]
            out.campaign_outcomes.append((campaign_id, occurrence_key, _campaign_outcome(decision)))

    if score is not None and score.level in NUDGE_LEVELS:
        recommended = recommend_for(score, ctx)
        # The first recommendation; when that is a staff task (critical risk), the student still
        # hears from us too: the first recommendation addressed to them, on the channels the
        # policy picks for the level.
        kinds = recommended[:1]
        if kinds and kinds[0] in STAFF_TYPES:
            kinds += [k for k in recommended[1:] if k not in STAFF_TYPES][:1]
        for kind in kinds:
            key = risk_key(ctx.user_id, kind, now_ms // DAY_MS)
            variables: dict[str, Any] = {"score": round(score.score)}
            if kind in STAFF_TYPES:
                variables.update(risk_level=score.level, signals=[s.name for s in score.top_signals[:3]])
            decision = decide(
                book, ctx, kind, key, now_ms, source="risk", variables=variables,
                stats=variant_counts(templates.for_type(kind).id), urgency=score.level, templates=templates,
            )  # fmt: skip
            _record(out, state, "risk", decision, now_ms)

    warning = streak_warning_instant(state, ctx)
    if warning is not None and warning[1] <= now_ms:
        day, _ = warning
        state.streak_warned_day = day
        if local_day(now_ms, ctx.timezone) == day:  # still that day: not too late to save it
            decision = decide(
                book, ctx, "streak_warning", f"streak:{ctx.user_id}:{day}", now_ms, source="streak",
                variables={}, stats=variant_counts(templates.for_type("streak_warning").id), urgency="high",
                templates=templates,
            )  # fmt: skip
            held = decision.notification
            too_late = held is not None and local_day(held.deliver_at_ms, ctx.timezone) != day
            if decision.reason == DEFERRED and held is not None and too_late:
                # Quiet hours last past midnight: the warning would arrive after the streak it
                # warns about has ended. Better none than a wrong one.
                withdraw(book, held)
                decision = Decision(None, "too_late")
            _record(out, state, "streak", decision, now_ms)

    # Matched jobs about to close (models/career_notices.py): news, through the same gate.
    reminders = deadline_notices(ctx.closing_jobs, ctx.timezone, now_ms)
    if reminders:
        news = notify(state, ctx, reminders, variant_counts, templates)
        out.delivered.extend(news.delivered)
        out.decisions.extend(news.decisions)
    # The daily or weekly digest of the matches held for it (models/match_digests.py).
    digest = send_digest(state, ctx, now_ms, variant_counts, templates)
    out.delivered.extend(digest.delivered)
    out.decisions.extend(digest.decisions)

    looks, checked = _campaign_looks(state), state.campaigns_checked_ms
    since = ctx.signup_ms if checked is None else looks.since(checked)

    def looked_at(campaign_id: str, occurrence: camp.Occurrence) -> bool:
        """Within the lookback, and looked at then. One after the last look is new to this look
        (the same key at a new instant is an edited campaign: its key says duplicate, logged)."""
        return (
            checked is not None and occurrence.at_ms <= checked and looks.looked_at(campaign_id, occurrence)
        )

    for campaign in campaigns:
        occurrences = [
            o
            for o in camp_occurrences.due(campaign, ctx.timezone, ctx.signup_ms, since, now_ms)
            if not looked_at(campaign.id, o)
        ]
        looks.remember(campaign.id, occurrences)
        # Only the latest occurrence fires: a user looked at late (a slow sweep, a rebalance)
        # gets one nudge, not a burst of stale ones.
        for stale in occurrences[:-1]:
            out.campaign_outcomes.append((campaign.id, stale.key, "suppressed:superseded"))
        for occurrence in occurrences[-1:]:
            _fire_campaign(
                out,
                state,
                ctx,
                facts,
                campaign,
                occurrence,
                campaign.target,
                now_ms,
                variant_counts,
                templates,
            )
        # An admin's manual sends (models/campaigns/sends.py): each fires, to the user it names
        # (no targeting) or to the users its filter (else the campaign's target) selects.
        for send, occurrence in camp_occurrences.sends_due(campaign, ctx.user_id, since, now_ms):
            if looked_at(campaign.id, occurrence):
                continue
            looks.remember(campaign.id, [occurrence])
            audience = None if send.user_id is not None else (send.target or campaign.target)
            _fire_campaign(
                out, state, ctx, facts, campaign, occurrence, audience, now_ms, variant_counts, templates
            )
    state.campaigns_checked_ms = now_ms
    looks.prune(now_ms)
    return out


def _campaign_looks(state: RiskState) -> CampaignLooks:
    """The user's memory of campaign looks; a state from before it existed starts it with the
    lookback floored at its last look (those earlier looks were not remembered). A user never
    looked at (signup-based) needs no floor."""
    if state.campaign_looks is None:
        floor = state.campaigns_checked_ms if state.campaigns_checked_ms is not None else -1
        state.campaign_looks = CampaignLooks(floor)
    return state.campaign_looks


def _missed_campaign(state: RiskState, ctx: UserContext, campaigns: Sequence[camp.Campaign]) -> bool:
    """Whether a campaign that arrived after the user's last look has an occurrence (or a send)
    within the lookback they were not looked at for: they are due at once."""
    checked, looks = state.campaigns_checked_ms, state.campaign_looks
    if checked is None or looks is None:
        return False
    since = looks.since(checked)
    for campaign in campaigns:
        missed = camp_occurrences.due(campaign, ctx.timezone, ctx.signup_ms, since, checked)
        missed += [o for _, o in camp_occurrences.sends_due(campaign, ctx.user_id, since, checked)]
        if any(not looks.looked_at(campaign.id, o) for o in missed):
            return True
    return False


def _fire_campaign(
    out: NudgeOutcome,
    state: RiskState,
    ctx: UserContext,
    facts: camp.UserFacts,
    campaign: camp.Campaign,
    occurrence: camp.Occurrence,
    audience: camp.Target | None,
    now_ms: int,
    variant_counts: VariantCounts,
    templates: TemplateLibrary,
) -> None:
    """One occurrence of a campaign for this user, if `audience` (None: the user was chosen)
    targets them: the occurrence's type and template (a drip step's own, else the campaign's),
    keyed by the occurrence, through `decide`; every outcome logged for the campaign's run."""
    key = occurrence.key
    out.campaign_outcomes.append((campaign.id, key, "evaluated"))
    if audience is not None and not camp_targeting.targets(audience, facts, now_ms):
        out.campaign_outcomes.append((campaign.id, key, "not_targeted"))
        return
    out.campaign_outcomes.append((campaign.id, key, "targeted"))
    kind = occurrence.intervention or campaign.intervention
    # A step of another type than the campaign's does not inherit the campaign's template.
    template_id = occurrence.template or (campaign.template if kind == campaign.intervention else None)
    # The bandit's counts are the chosen template's variants' (an admin's template has its own).
    template = templates.resolve(kind, template_id)
    decision = decide(
        state.notifications, ctx, kind, occurrence.idempotency_key, now_ms,
        source=f"{CAMPAIGN_SOURCE}{campaign.id}", variables={}, stats=variant_counts(template.id),
        templates=templates, template_id=template_id,
    )  # fmt: skip
    out.campaign_outcomes.append((campaign.id, key, _campaign_outcome(decision)))
    _record(out, state, f"campaign:{campaign.id}", decision, now_ms)


@dataclass(frozen=True, slots=True)
class Celebration:
    """Something the user just achieved, worth telling them: a badge, a streak milestone, a
    level. Event-driven (the engagement fold reports it), keyed by what was achieved, so a
    redelivered event celebrates once."""

    type: str  # achievement_notification | milestone_celebration
    key: str
    variables: Mapping[str, object]


def celebrations_for(user_id: str, effects: Effects, milestones: Collection[int]) -> list[Celebration]:
    """What one applied event achieved: new badges, a streak milestone reached (keyed by the day
    it was reached, as a streak can reach 7 again after breaking), a new level."""
    out = [
        Celebration("achievement_notification", f"badge:{user_id}:{badge.id}", {"badge": badge.name})
        for badge in effects.new_badges
    ]
    before, after = effects.streak_before.current, effects.streak_after.current
    for days in sorted(milestones):
        if before < days <= after:
            key = f"streak:{user_id}:{days}:{effects.streak_after.last_active_day}"
            out.append(Celebration("milestone_celebration", key, {"milestone": f"a {days}-day streak"}))
    if effects.level_after > effects.level_before:
        level = effects.level_after
        out.append(
            Celebration("milestone_celebration", f"level:{user_id}:{level}", {"milestone": f"level {level}"})
        )
    return out


def celebrate(
    state: RiskState, ctx: UserContext, celebrations: Sequence[Celebration], now_ms: int,
    variant_counts: VariantCounts,
    templates: TemplateLibrary = BUILTIN_LIBRARY,
) -> NudgeOutcome:  # fmt: skip
    """Celebrations pass the same gate as every nudge (dedup, opt-out, daily cap, quiet hours);
    they are not re-engagement, so a user who is active right now gets them."""
    out = NudgeOutcome()
    for c in celebrations:
        decision = decide(
            state.notifications, ctx, c.type, c.key, now_ms, source="achievement",
            variables=c.variables, stats=variant_counts(templates.for_type(c.type).id), urgency="medium",
            templates=templates,
        )  # fmt: skip
        _record(out, state, "achievement", decision, now_ms)
    return out


def notify(
    state: RiskState,
    ctx: UserContext,
    notices: Sequence[Notice],
    variant_counts: VariantCounts,
    templates: TemplateLibrary = BUILTIN_LIBRARY,
) -> NudgeOutcome:
    """The user's career news (models/career_notices.py) through the same gate as every nudge:
    dedup by key, opt-out, quiet hours for the interrupting channels. Not capped (they are news,
    not nudges), and sent on every channel the user allows, in-app always."""
    out = NudgeOutcome()
    how_often = digest_frequency(ctx.prefs)
    for n in notices:
        held = how_often is not None and n.type in HELD_KINDS and bool(n.matches)
        # A digest reader: the inbox has it now, their other channels in the digest.
        decision = decide(
            state.notifications, ctx, n.type, n.key, n.at_ms, source="career",
            variables=n.variables, stats=variant_counts(templates.for_type(n.type).id), urgency=n.urgency,
            channels=["IN_APP"] if held else None, templates=templates,
        )  # fmt: skip
        if held and decision.notification is not None:
            # Held only when it is news: a repeat the inbox refused (duplicate, opted out) is
            # not announced again in the next digest.
            state.digest = hold(state.digest, [n])
        _record(out, state, "career", decision, n.at_ms)
    return out


def digest_due(state: RiskState, ctx: UserContext) -> int | None:
    """When the matches held for the user's digest go out (at once if they turned digests off
    since: what was held is not lost)."""
    if not state.digest:
        return None
    how_often = digest_frequency(ctx.prefs)
    if how_often is None:
        return max(m.at_ms for m in state.digest)
    return due_at(state.digest, ctx.timezone, how_often)


def send_digest(
    state: RiskState, ctx: UserContext, now_ms: int, variant_counts: VariantCounts, templates: TemplateLibrary
) -> NudgeOutcome:
    """The held matches as one digest on every channel the user allows, once it is due."""
    due = digest_due(state, ctx)
    if due is None or due > now_ms:
        return NudgeOutcome()
    notice = the_digest(ctx.user_id, state.digest, due)
    state.digest = []
    out = NudgeOutcome()
    # The inbox already has every match: the digest is for the user's other channels.
    channels = [c for c in allowed_channels(ctx) if c != "IN_APP"]
    if not channels:
        return out
    decision = decide(
        state.notifications, ctx, notice.type, notice.key, now_ms, source="career",
        variables=notice.variables, stats=variant_counts(templates.for_type(notice.type).id),
        urgency=notice.urgency, channels=channels, templates=templates,
    )  # fmt: skip
    _record(out, state, "career", decision, now_ms)
    return out


def next_look(
    state: RiskState, ctx: UserContext, settings: RiskSettings, campaigns: Sequence[camp.Campaign]
) -> int | None:
    """When the sweep should next look at this user (None: nothing scheduled)."""
    candidates: list[int] = []
    risk_due = next_due(state, settings)
    if risk_due is not None:
        candidates.append(risk_due)
    candidates.extend(n.deliver_at_ms for n in state.notifications.pending)
    warning = streak_warning_instant(state, ctx)
    if warning is not None:
        candidates.append(warning[1])
    reminder = next_reminder(ctx.closing_jobs, ctx.timezone, state.campaigns_checked_ms or 0)
    if reminder is not None:
        candidates.append(reminder)
    digest = digest_due(state, ctx)
    if digest is not None:
        candidates.append(digest)
    if _missed_campaign(state, ctx, campaigns):
        candidates.append(state.campaigns_checked_ms or 0)
    # Never looked at: the first occurrence after the campaign's activation (next_due's gate).
    after = state.campaigns_checked_ms if state.campaigns_checked_ms is not None else 0
    for campaign in campaigns:
        at = camp_occurrences.next_due(campaign, ctx.timezone, ctx.signup_ms, after)
        if at is not None:
            candidates.append(at)
        sent_at = camp_occurrences.next_send(campaign, ctx.user_id, after)
        if sent_at is not None:
            candidates.append(sent_at)
    return min(candidates) if candidates else None
