"""Applies API commands, referral messages and applied behaviour events to per-user growth state.

Pure orchestration over ``models/`` (no I/O), like ``streams.engagement``. Inputs:

* ``user-commands`` (key = user): redemptions, grants, referral codes and claims, reviews, goals;
  each answered once per command id (``GrowthState.answers``), see docs/growth.md;
* ``elimu-referrals`` (key = referrer): a claim or a completion sent by the referred user's side;
* the events the engagement processor applied in the same batch (duplicates already removed), which
  advance the daily challenge and goals and complete referrals.

XP for growth milestones is not added here: a completed challenge, goal or referral becomes a
behaviour event with a derived id (``challenge:{date}``, ``goal:{id}``, ``referral:{user}``) for the
gamification fold, whose dedup makes it count once however often this is replayed.

Everything read from a command or a referral message is bounded before it can reach state or an
outgoing record (ids by ``check_id``, signals by ``bounded_text``), and every command or event of
a user first settles their goals (expiry, pruning): the worker owns that state, so a lapsed goal
stops counting toward the cap on active goals without waiting for a reader.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import orjson

from infra import topics
from infra.commands import PRIVACY_COMMANDS, RISK_COMMANDS
from models.challenges import (
    MAX_ACTIVE_GOALS,
    apply_to_challenge,
    apply_to_goal,
    can_add_goal,
    challenge_for,
    completion_props,
    new_goal,
    public_challenge,
    public_goal,
    settle_goals,
)
from models.digests import id_digest
from models.events import FUTURE_TOLERANCE_MS, MAX_ID_LEN, BehaviorEvent, InvalidEvent, check_id
from models.gamification import FREEZE_BOUGHT, UserState
from models.growth import GrowthState, ReferredBy
from models.referrals import (
    MAX_DEVICE_BYTES,
    MAX_EMAIL_BYTES,
    MAX_IP_BYTES,
    REFERRAL_CREDITS,
    REFERRER_VELOCITY_MAX,
    ClaimSignals,
    Referral,
    ReferrerBook,
    bounded_text,
    new_referral,
)
from models.rewards import (
    CATALOGUE,
    FREEZE_PERK_KIND,
    GRANT_TOO_LARGE,
    MAX_GRANT,
    GrantRefused,
    balance,
    grant,
    redeem,
)
from models.rules import Rules
from models.streaks import local_day
from models.time_units import DAY_MS
from streams.records import DeadLetter, Record, apply_guarded, misrouted_owner

#: Referral credits expire this long after they are granted.
CREDIT_TTL_MS = 90 * DAY_MS
#: A command id is "{user_id}:…" (a goal's is "{user_id}:goal:{request_id}"), so it may be longer
#: than one id; it is only ever remembered as a digest.
MAX_COMMAND_ID_BYTES = 2 * MAX_ID_LEN


class GrowthStore(Protocol):
    def get(self, key: str) -> GrowthState | None: ...

    def put(self, key: str, state: GrowthState) -> None: ...


@dataclass(frozen=True, slots=True)
class Push:
    user_id: str
    type: str
    data: dict[str, Any]
    dedup_key: str


@dataclass
class GrowthOutcome:
    touched: dict[str, GrowthState] = field(default_factory=dict)
    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: (referrer id, message) for ``topics.REFERRALS``.
    referral_messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Behaviour events for the gamification fold (XP for milestones).
    actions: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    #: Redeemed perks, for ``notifications`` (the platform fulfils them, once per
    #: ``redemption_id``): sent durably before the state that records the redemption.
    redemptions: list[dict[str, Any]] = field(default_factory=list)
    changed_books: set[str] = field(default_factory=set)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    misrouted: list[tuple[Record, bytes, int]] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _action(user_id: str, event_id: str, type_: str, ts_ms: int, **props: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user_id, "type": type_, "ts": ts_ms, "props": props}


class GrowthProcessor:
    """``code_of`` derives a user's referral code (``models.referrals.referral_code`` with the
    deployment's secret): the worker then records the code itself rather than trusting the one a
    command carries, which is what lets the serving view's code -> user map be rebuilt from the
    table (``streams.growth_pipeline``). Without it (unit tests) the command's code is taken."""

    def __init__(
        self,
        rules: Rules,
        partitions_for: Callable[[str], int],
        clock_ms: Callable[[], int] = _now_ms,
        code_of: Callable[[str], str] | None = None,
    ):
        self.rules = rules
        self.partitions_for = partitions_for
        self.clock_ms = clock_ms
        self.code_of = code_of

    def process(
        self,
        records: Iterable[Record],
        applied: Iterable[tuple[BehaviorEvent, UserState]],
        store: GrowthStore,
    ) -> GrowthOutcome:
        out = GrowthOutcome()
        dirty: set[str] = set()
        for rec in records:
            apply = self._command if rec.topic == topics.USER_COMMANDS else self._referral_message
            apply_guarded(rec, lambda r: apply(r, store, out, dirty), out.dead_letters)  # noqa: B023
        for event, user_state in applied:
            self._event(event, user_state, store, out, dirty)
        for user_id in dirty:
            state = out.touched[user_id]
            state.fit_budget()  # the backstop: the caps keep states under budget on their own
            store.put(user_id, state)
        return out

    def _state(self, user_id: str, store: GrowthStore, out: GrowthOutcome) -> GrowthState:
        state = out.touched.get(user_id)
        if state is None:
            state = store.get(user_id) or GrowthState(user_id=user_id)
            out.touched[user_id] = state
        return state

    # -- behaviour events -----------------------------------------------------------------------

    def _event(
        self, event: BehaviorEvent, user: UserState, store: GrowthStore, out: GrowthOutcome, dirty: set[str]
    ) -> None:
        practice = event.type in self.rules.streak_qualifying
        existing = out.touched.get(event.user_id) or store.get(event.user_id)
        if not practice and (existing is None or not (existing.goals or existing.referred_by)):
            return  # nothing this event could advance: skip the state write
        state = self._state(event.user_id, store, out)
        if state.goals and settle_goals(state.goals, event.ts_ms):
            dirty.add(state.user_id)
        if practice:
            self._advance_challenge(state, event, user, out, dirty)
        for goal in state.goals.values():
            if goal.status == "completed":
                continue
            change = apply_to_goal(goal, event, self.rules, user.streak.current)
            if change.advanced:
                dirty.add(state.user_id)
                out.pushes.append(
                    Push(
                        state.user_id,
                        "goal_progress",
                        public_goal(goal),
                        f"goal:{goal.goal_id}:{event.event_id}",
                    )
                )
            if change.completed_now:
                out.actions.append(
                    _action(
                        state.user_id,
                        f"goal:{goal.goal_id}",
                        "goal_achieved",
                        event.ts_ms,
                        goal_id=goal.goal_id,
                    )
                )
        ref = state.referred_by
        if (
            ref is not None
            and not ref.completion_sent
            and event.type == "lesson_complete"
            and ref.claimed_at_ms <= event.ts_ms
        ):
            ref.completion_sent = True
            dirty.add(state.user_id)
            out.referral_messages.append(
                (
                    ref.referrer_id,
                    {
                        "type": "complete",
                        "referrer_id": ref.referrer_id,
                        "referred_id": state.user_id,
                        "at_ms": event.ts_ms,
                    },
                )
            )

    def _advance_challenge(
        self, state: GrowthState, event: BehaviorEvent, user: UserState, out: GrowthOutcome, dirty: set[str]
    ) -> None:
        day = date.fromordinal(local_day(event.ts_ms, user.timezone))
        challenge = challenge_for(day)
        # Each day's challenge is tracked on its own, so the outcome is a function of the day's
        # events, not of the order they arrive in.
        progress, change = apply_to_challenge(
            state.challenge_progress(challenge.id), challenge, event, self.rules, user.timezone
        )
        if not change.advanced or not state.keep_challenge(progress):
            return  # nothing counted, or a day older than every day kept
        dirty.add(state.user_id)
        view = public_challenge(challenge, progress)
        out.pushes.append(
            Push(state.user_id, "challenge_progress", view, f"challenge:{challenge.id}:{progress.progress}")
        )
        if change.completed_now:
            out.actions.append(
                _action(
                    state.user_id,
                    f"challenge:{challenge.id}",
                    "daily_challenge_complete",
                    event.ts_ms,
                    **completion_props(challenge),
                )
            )

    # -- commands --------------------------------------------------------------------------------

    def _command(self, rec: Record, store: GrowthStore, out: GrowthOutcome, dirty: set[str]) -> None:
        cmd = _decode(rec)
        if cmd.get("type") in RISK_COMMANDS:
            return  # the risk slice's (streams/risk_pipeline.py), which takes this topic too
        user_id, kind = _str(cmd, "user_id"), _str(cmd, "type")
        command_id = _str(cmd, "command_id", MAX_COMMAND_ID_BYTES)
        owner = misrouted_owner(rec, user_id, self.partitions_for(rec.topic))
        if owner is not None:
            out.misrouted.append((rec, user_id.encode(), owner))  # every type, privacy's too
            return
        if kind in PRIVACY_COMMANDS:
            return  # the privacy slice's (streams/privacy.py): it spans every table, not growth's
        ts = cmd.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
            raise InvalidEvent("bad_type", "command ts must be epoch milliseconds")
        if ts > self.clock_ms() + FUTURE_TOLERANCE_MS:
            # The API stamps commands when it accepts them; a time ahead of ours would expire
            # goals and credit early.
            raise InvalidEvent("ts_in_future", "command ts is in the future")
        state = self._state(user_id, store, out)
        if settle_goals(state.goals, ts):
            dirty.add(user_id)
        previous = state.answer_to(command_id)
        if previous is not None:
            out.answers.append((command_id, {**previous, "duplicate": True}))
            return
        handler = _COMMANDS.get(kind)
        if handler is None:
            raise InvalidEvent("bad_type", f"unknown command type {kind[:64]!r}")
        answer = handler(self, state, cmd, ts, out)
        state.remember_answer(command_id, answer)
        dirty.add(user_id)
        out.answers.append((command_id, answer))

    def _redeem(self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome) -> dict[str, Any]:
        result = redeem(state.ledger, _str(cmd, "command_id"), _str(cmd, "perk_id"), ts)
        answer = {
            "ok": result.ok,
            "code": result.code,
            "perk_id": result.perk_id,
            "cost": result.cost,
            "balance": result.balance,
            "duplicate": result.duplicate,
        }
        if result.ok and not result.duplicate:
            # redemption_id is the command id: the same on every replay of this command, so the
            # fulfilment's consumer can apply each redemption once (docs/growth.md).
            data = {
                "redemption_id": result.request_id,
                "user_id": state.user_id,
                "perk_id": result.perk_id,
                "cost": result.cost,
                "at_ms": ts,
            }
            if CATALOGUE[result.perk_id].kind == FREEZE_PERK_KIND:
                # The engine fulfils this one itself: a freeze added to the streak on the stream,
                # once (the event's id is the redemption's; models/gamification.py).
                event_id = f"freeze:{id_digest(result.request_id)}"
                out.actions.append(
                    _action(state.user_id, event_id, FREEZE_BOUGHT, ts, perk_id=result.perk_id)
                )
            else:
                out.redemptions.append(data)
            out.pushes.append(Push(state.user_id, "reward_redeemed", data, f"redeem:{result.request_id}"))
        return answer

    def _grant(self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome) -> dict[str, Any]:
        """An admin's grant (the API route checks the role; the topic's signature, that the API
        sent it). Bounded anyway: at most MAX_GRANT per grant and MAX_BALANCE in all."""
        amount = cmd.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidEvent("bad_type", "amount must be an integer")
        if amount > MAX_GRANT:
            return {
                "ok": False,
                "code": GRANT_TOO_LARGE,
                "message": f"a grant is at most {MAX_GRANT} credits",
            }
        expires = cmd.get("expires_at_ms")
        try:
            applied = grant(state.ledger, _str(cmd, "grant_id"), amount, _text(cmd, "reason"), ts, expires)
        except GrantRefused as exc:
            return {"ok": False, "code": exc.code, "message": str(exc)}
        return {"ok": True, "balance": balance(state.ledger, ts), "duplicate": not applied}

    def _generate(
        self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome
    ) -> dict[str, Any]:
        code = _str(cmd, "code")
        if self.code_of is not None and code != self.code_of(state.user_id):
            # Not this user's code: recording it would map someone else's code to this user
            # when the serving view is rebuilt.
            return {"ok": False, "code": "bad_code", "message": "not this user's referral code"}
        if state.book is None:
            state.book = ReferrerBook(state.user_id, code)
        state.book.code = code
        state.book.observe(cmd.get("device_id"), cmd.get("ip"))
        out.changed_books.add(state.user_id)
        return {"ok": True, "code": code}

    def _claim(self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome) -> dict[str, Any]:
        referrer = _str(cmd, "referrer_id")
        if referrer == state.user_id:
            return {"ok": False, "code": "self_referral"}
        if state.referred_by is not None:
            return {"ok": False, "code": "already_referred", "referrer_id": state.referred_by.referrer_id}
        state.referred_by = ReferredBy(referrer, ts)
        message = {
            "type": "claim",
            "referrer_id": referrer,
            "referred_id": state.user_id,
            "at_ms": ts,
            # Bounded here too: the message is a record of its own, and forwards what it carries.
            "device_id": bounded_text(cmd.get("device_id"), MAX_DEVICE_BYTES),
            "ip": bounded_text(cmd.get("ip"), MAX_IP_BYTES),
            "email": bounded_text(cmd.get("email"), MAX_EMAIL_BYTES),
            "ip_claims_24h": _count(cmd.get("ip_claims_24h")),
            # A direct loop: this user already referred the one now referring them.
            "loop": state.book is not None and referrer in state.book.referrals,
        }
        out.referral_messages.append((referrer, message))
        return {"ok": True, "code": "claimed", "referrer_id": referrer}

    def _review(self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome) -> dict[str, Any]:
        referred = _str(cmd, "referred_id")
        if state.book is None or referred not in state.book.referrals:
            return {"ok": False, "code": "unknown_referral"}
        try:
            ref = state.book.review(referred, bool(cmd.get("approve")), ts)
        except ValueError as exc:
            return {"ok": False, "code": "not_held", "message": str(exc)}
        out.changed_books.add(state.user_id)
        if ref.status == "completed":
            self._credit(state, ref, ts, out)
        return {"ok": True, "status": ref.status}

    def _goal(self, state: GrowthState, cmd: dict[str, Any], ts: int, out: GrowthOutcome) -> dict[str, Any]:
        goal_id = _str(cmd, "command_id", MAX_COMMAND_ID_BYTES).rsplit(":", 1)[-1]
        existing = state.goals.get(goal_id)
        if existing is not None:
            # A retry whose answer was forgotten (answers are a short memory): the goal it made,
            # not a second one over it that would reset its progress.
            return {"ok": True, "goal": public_goal(existing)}
        # _command settled the goals at ``ts`` first: lapsed ones are expired and do not count.
        if not can_add_goal(state.goals.values()):
            return {
                "ok": False,
                "code": "too_many_goals",
                "message": f"at most {MAX_ACTIVE_GOALS} active goals",
            }
        try:
            goal = new_goal(
                goal_id,
                _str(cmd, "kind"),
                cmd.get("target"),  # type: ignore[arg-type]  # validated by new_goal
                cmd.get("deadline_ms"),  # type: ignore[arg-type]
                ts,
                cmd.get("params") or {},
            )
        except (ValueError, TypeError) as exc:
            return {"ok": False, "code": "invalid_goal", "message": str(exc)}
        state.goals[goal.goal_id] = goal
        out.actions.append(
            _action(state.user_id, f"goal-set:{goal.goal_id}", "goal_set", ts, goal_id=goal.goal_id)
        )
        return {"ok": True, "goal": public_goal(goal)}

    # -- referral messages (on the referrer's partition) ------------------------------------------

    def _referral_message(self, rec: Record, store: GrowthStore, out: GrowthOutcome, dirty: set[str]) -> None:
        msg = _decode(rec)
        referrer, referred = _str(msg, "referrer_id"), _str(msg, "referred_id")
        owner = misrouted_owner(rec, referrer, self.partitions_for(rec.topic))
        if owner is not None:
            out.misrouted.append((rec, referrer.encode(), owner))
            return
        at = msg.get("at_ms")
        if not isinstance(at, int):
            raise InvalidEvent("bad_type", "at_ms must be epoch milliseconds")
        state = self._state(referrer, store, out)
        if state.book is None:
            state.book = ReferrerBook(referrer, self.code_of(referrer) if self.code_of else "")
        book = state.book
        if msg.get("type") == "claim":
            claim = ClaimSignals(
                referrer,
                referred,
                bounded_text(msg.get("device_id"), MAX_DEVICE_BYTES),
                bounded_text(msg.get("ip"), MAX_IP_BYTES),
                bounded_text(msg.get("email"), MAX_EMAIL_BYTES),
                _count(msg.get("ip_claims_24h")),
            )
            facts = book.facts(
                at,
                referred_by=state.referred_by.referrer_id if state.referred_by else None,
                referrals_of_referred=frozenset({referrer}) if msg.get("loop") else frozenset(),
            )
            if not book.record_claim(new_referral(claim, facts, at)):
                return  # a redelivered claim
        elif msg.get("type") == "complete":
            ref = book.complete(referred, at)
            if ref is None:
                return  # not pending, outside the window, or redelivered
            if book.facts(at).completed_last_24h > REFERRER_VELOCITY_MAX:
                book.hold(referred, ["referrer_velocity"])
            else:
                self._credit(state, ref, at, out)
        else:
            raise InvalidEvent("bad_type", "referral message type must be claim or complete")
        out.changed_books.add(referrer)
        dirty.add(referrer)

    def _credit(self, state: GrowthState, ref: Referral, at: int, out: GrowthOutcome) -> None:
        """Pay the referrer for a completed referral, once (ids derived from the referred user).

        A referrer at the balance cap is not paid (the referral still completes and earns its XP).
        """
        try:
            paid = grant(
                state.ledger,
                f"referral:{ref.referred_id}",
                REFERRAL_CREDITS,
                "referral",
                at,
                at + CREDIT_TTL_MS,
            )
        except GrantRefused:
            paid = False
        if paid:
            out.pushes.append(
                Push(
                    state.user_id,
                    "referral_completed",
                    {"referred_id": ref.referred_id, "credits": REFERRAL_CREDITS},
                    f"referral:{ref.referred_id}",
                )
            )
        out.actions.append(
            _action(
                state.user_id,
                f"referral:{ref.referred_id}",
                "referral_accepted",
                at,
                referred_id=ref.referred_id,
            )
        )


_COMMANDS: dict[
    str, Callable[[GrowthProcessor, GrowthState, dict[str, Any], int, GrowthOutcome], dict[str, Any]]
] = {
    "redeem": GrowthProcessor._redeem,
    "grant": GrowthProcessor._grant,
    "referral_generate": GrowthProcessor._generate,
    "referral_claim": GrowthProcessor._claim,
    "referral_review": GrowthProcessor._review,
    "goal_create": GrowthProcessor._goal,
}


def _decode(rec: Record) -> dict[str, Any]:
    try:
        obj = orjson.loads(rec.value or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"value is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", "value must be a JSON object")
    return obj


def _str(obj: dict[str, Any], name: str, max_bytes: int = MAX_ID_LEN) -> str:
    """A required id: printable, at most ``max_bytes`` of UTF-8 (``models.events.check_id``)."""
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent("missing_field", f"{name} is required")
    if max_bytes > MAX_ID_LEN:
        if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
            raise InvalidEvent("id_too_long", f"{name} is longer than {max_bytes} bytes")
        if not value.isprintable():
            raise InvalidEvent("bad_id", f"{name} holds control or non-printable characters")
        return value
    return check_id(value, name)


def _text(obj: dict[str, Any], name: str) -> str:
    """A required string, left for the model to bound (e.g. a grant's reason)."""
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent("missing_field", f"{name} is required")
    return value


def _count(value: object) -> int:
    """A non-negative count from a message, 0 when absent or not an integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
