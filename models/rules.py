"""The gamification rule book: what earns XP, the level table, streak milestones and badges.

Rules are data that operators change (`ELIMU_RULES`), so loading is strict: an unknown key, a
misspelt rarity or an unsorted level table is a ValueError naming the offending entry, raised
when the worker starts rather than a silent zero-XP surprise in production.

The shipped rule book is the package data file `models/default_rules.toml`; reading it is the
caller's job (this package does no I/O), e.g.
`Rules.from_toml(importlib.resources.files("models").joinpath(DEFAULT_RULES_FILE).read_text("utf-8"))`.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_RULES_FILE = "default_rules.toml"

RARITIES = ("common", "uncommon", "rare", "epic", "legendary")
#: What a badge is for, to group the achievement catalogue (``[[badges]] category``). "general"
#: is what a badge without one gets, so operators' rule files from before categories still load.
BADGE_CATEGORIES = ("practice", "streaks", "mastery", "learning", "career", "community", "general")
DEFAULT_BADGE_CATEGORY = "general"
#: The XP of a badge that sets none (``[xp] badge_default``): CONTRACT §6's "badge earned +30".
DEFAULT_BADGE_XP = 30
#: Benefits a level may list, and their length in characters: they are display strings.
MAX_LEVEL_BENEFITS = 8
MAX_BENEFIT_LEN = 80
BonusOp = Literal["eq", "gte"]
BonusValue = int | float | str

# Badge metrics the engine knows how to measure (see models.gamification.metric_value).
_METRIC = re.compile(
    r"count:[^\s:]+|category_high_scores:[^\s:]+|longest_streak|perfect_scores|max_daily_practice_minutes"
    r"|high_score_categories"
)
_METRIC_NAMES = (
    "count:<type>, longest_streak, perfect_scores, category_high_scores:<category>, "
    "max_daily_practice_minutes, high_score_categories"
)


@dataclass(frozen=True, slots=True)
class Bonus:
    """Extra XP when a prop of the event matches, e.g. +100 when props.score == 100."""

    prop: str
    op: BonusOp
    value: BonusValue
    xp: int

    def applies(self, props: Mapping[str, Any]) -> bool:
        actual = props.get(self.prop)
        if isinstance(actual, bool) or actual is None:
            return False
        if isinstance(self.value, str):
            return self.op == "eq" and actual == self.value
        if not isinstance(actual, int | float):
            return False
        return actual == self.value if self.op == "eq" else actual >= self.value


@dataclass(frozen=True, slots=True)
class XpRule:
    action: str
    xp: int
    once: bool = False
    bonuses: tuple[Bonus, ...] = ()
    #: A prop that carries this occurrence's own XP (``xp_prop``), up to ``xp_prop_max``: how a
    #: platform event says what it is worth, e.g. a daily challenge variant's reward
    #: (models/challenges.py). Absent or not a whole number in range: ``xp`` is paid.
    xp_prop: str | None = None
    xp_prop_max: int = 0

    def base_xp(self, props: Mapping[str, Any]) -> int:
        """The XP this occurrence earns before bonuses."""
        if self.xp_prop is None:
            return self.xp
        value = props.get(self.xp_prop)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self.xp_prop_max:
            return self.xp
        return value


@dataclass(frozen=True, slots=True)
class Level:
    level: int
    title: str
    min_xp: int
    #: What reaching the level brings, as shown to users (``[[levels]] benefits``). Display
    #: strings: the platform fulfils them; the engine enforces none.
    benefits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BadgeDef:
    id: str
    name: str
    description: str
    rarity: str
    xp: int
    metric: str
    threshold: int
    category: str = DEFAULT_BADGE_CATEGORY


@dataclass(frozen=True, slots=True)
class RecurringReward:
    """XP paid each time a metric reaches another multiple of ``every`` (``[[recurring]]``), e.g.
    75 XP for every full week of the longest streak. Unlike a badge it pays again; what it has
    paid is remembered per user (``UserState.recurring``), so a metric that dips and recovers
    never pays the same multiple twice."""

    id: str
    description: str
    xp: int
    metric: str
    every: int


@dataclass(frozen=True, kw_only=True)
class Rules:
    """One loaded rule book.

    Keyword-only because most fields have sensible defaults while the tables do not. The
    derived fields are precomputed so the per-event path is dictionary lookups only.
    """

    actions: dict[str, XpRule]
    streak_qualifying: frozenset[str]
    daily_first_event_xp: int = 15
    level_up_xp_per_level: int = 25
    levels: tuple[Level, ...]
    streak_milestones: tuple[int, ...] = (7, 14, 30, 60, 100, 365)
    max_freezes: int = 2
    #: The most freezes a user may hold, bought ones included (``[streaks] max_held``).
    max_held_freezes: int = 5
    badges: tuple[BadgeDef, ...]
    # Anti-cheat: repeatable action XP (bonuses included) a user can earn per UTC day.
    daily_xp_cap: int = 3000
    # Which scored sessions feed category_high_scores:<category>, and what counts as "high".
    category_types: frozenset[str] = frozenset({"interview_session_complete"})
    high_score: int = 90
    #: The discount a ``discount_offer`` names (``[interventions] discount_pct``); None: the
    #: message offers "extra" without a number, since a made-up discount is a promise.
    discount_pct: int | None = None
    recurring: tuple[RecurringReward, ...] = ()

    counted_types: frozenset[str] = field(init=False, repr=False, compare=False)
    known_types: frozenset[str] = field(init=False, repr=False, compare=False)
    badge_by_id: dict[str, BadgeDef] = field(init=False, repr=False, compare=False)
    #: The badges an event of a type can possibly earn: a ``count:<type>`` badge moves only with
    #: its own type; every other metric is re-checked after any event.
    badges_by_type: dict[str, tuple[BadgeDef, ...]] = field(init=False, repr=False, compare=False)

    #: Every metric a badge or recurring reward reads, once each, in rule-book order: what the
    #: serving view publishes (``metrics``) so progress is read, not recomputed from history.
    metrics: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        metrics = tuple(dict.fromkeys([b.metric for b in self.badges] + [r.metric for r in self.recurring]))
        object.__setattr__(self, "metrics", metrics)
        counted = set(self.actions)
        counted.update(m.partition(":")[2] for m in metrics if m.startswith("count:"))
        # Counters exist only for types the rules mention, so unknown types cannot grow state.
        object.__setattr__(self, "counted_types", frozenset(counted))
        object.__setattr__(
            self, "known_types", frozenset(counted | self.streak_qualifying | self.category_types)
        )
        object.__setattr__(self, "badge_by_id", {badge.id: badge for badge in self.badges})
        object.__setattr__(
            self,
            "badges_by_type",
            {
                t: tuple(
                    b for b in self.badges if not b.metric.startswith("count:") or b.metric == f"count:{t}"
                )
                for t in self.known_types
            },
        )

    @classmethod
    def from_toml(cls, text: str) -> Rules:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"rules: not valid TOML: {exc}") from exc
        return _build(doc)


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _check_keys(table: Mapping[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"rules: {where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(table)
    if missing:
        raise ValueError(f"rules: {where}: missing key(s) {sorted(missing)}")


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"rules: {where} must be a table")
    return value


def _int(value: object, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"rules: {where} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"rules: {where} must be a non-empty string, got {value!r}")
    return value


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"rules: {where} must be a list of strings")
    return [_str(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _build(doc: dict[str, Any]) -> Rules:
    _check_keys(
        doc,
        "top level",
        {"xp", "streaks", "scoring", "interventions", "actions", "levels", "badges", "recurring"},
        {"actions"},
    )
    interventions = _table(doc.get("interventions", {}), "[interventions]")
    _check_keys(interventions, "[interventions]", {"discount_pct"}, set())
    discount = interventions.get("discount_pct")
    if discount is not None:
        discount = _int(discount, "interventions.discount_pct", minimum=1)
        if discount > 100:
            raise ValueError("rules: interventions.discount_pct must be at most 100")
    xp = _table(doc.get("xp", {}), "[xp]")
    _check_keys(xp, "[xp]", {"daily_first_event", "level_up_per_level", "daily_cap", "badge_default"}, set())
    streaks = _table(doc.get("streaks", {}), "[streaks]")
    _check_keys(streaks, "[streaks]", {"milestones", "max_freezes", "max_held"}, set())
    max_freezes = _int(streaks.get("max_freezes", 2), "streaks.max_freezes")
    max_held = _int(streaks.get("max_held", max(5, max_freezes)), "streaks.max_held")
    if max_held < max_freezes:
        raise ValueError("rules: streaks.max_held must be at least streaks.max_freezes")
    scoring = _table(doc.get("scoring", {}), "[scoring]")
    _check_keys(scoring, "[scoring]", {"high_score", "category_types"}, set())

    actions, qualifying = _build_actions(_table(doc["actions"], "[actions]"))
    levels = _build_levels(doc.get("levels"))
    badges = _build_badges(
        doc.get("badges", []), _int(xp.get("badge_default", DEFAULT_BADGE_XP), "xp.badge_default")
    )
    milestones = _build_milestones(streaks.get("milestones", [7, 14, 30, 60, 100, 365]))
    category_types = frozenset(
        _str_list(scoring.get("category_types", ["interview_session_complete"]), "scoring.category_types")
    )
    return Rules(
        actions=actions,
        streak_qualifying=qualifying,
        daily_first_event_xp=_int(xp.get("daily_first_event", 15), "xp.daily_first_event"),
        level_up_xp_per_level=_int(xp.get("level_up_per_level", 25), "xp.level_up_per_level"),
        levels=levels,
        streak_milestones=milestones,
        max_freezes=max_freezes,
        max_held_freezes=max_held,
        badges=badges,
        daily_xp_cap=_int(xp.get("daily_cap", 3000), "xp.daily_cap", minimum=1),
        category_types=category_types,
        high_score=_int(scoring.get("high_score", 90), "scoring.high_score"),
        discount_pct=discount,
        recurring=_build_recurring(doc.get("recurring", [])),
    )


def _build_actions(table: dict[str, Any]) -> tuple[dict[str, XpRule], frozenset[str]]:
    actions: dict[str, XpRule] = {}
    qualifying: set[str] = set()
    for name, spec in table.items():
        where = f"actions.{name}"
        spec = _table(spec, where)
        _check_keys(spec, where, {"xp", "once", "streak", "bonuses", "xp_prop", "xp_prop_max"}, {"xp"})
        once = spec.get("once", False)
        streak = spec.get("streak", False)
        if not isinstance(once, bool) or not isinstance(streak, bool):
            raise ValueError(f"rules: {where}: once and streak must be true or false")
        bonuses = tuple(
            _build_bonus(_table(b, f"{where}.bonuses[{i}]"), f"{where}.bonuses[{i}]")
            for i, b in enumerate(spec.get("bonuses", []))
        )
        if once and bonuses:
            # Which of several occurrences counts would then depend on arrival order.
            raise ValueError(f"rules: {where}: a once-only action cannot have bonuses")
        xp_prop = spec.get("xp_prop")
        if (xp_prop is None) != ("xp_prop_max" not in spec):
            raise ValueError(f"rules: {where}: xp_prop and xp_prop_max go together")
        actions[name] = XpRule(
            action=name,
            xp=_int(spec["xp"], f"{where}.xp"),
            once=once,
            bonuses=bonuses,
            xp_prop=None if xp_prop is None else _str(xp_prop, f"{where}.xp_prop"),
            xp_prop_max=_int(spec.get("xp_prop_max", 0), f"{where}.xp_prop_max"),
        )
        if streak:
            qualifying.add(name)
    if not actions:
        raise ValueError("rules: [actions] must define at least one action")
    return actions, frozenset(qualifying)


def _build_bonus(spec: dict[str, Any], where: str) -> Bonus:
    _check_keys(spec, where, {"prop", "op", "value", "xp"}, {"prop", "op", "value", "xp"})
    op = spec["op"]
    value = spec["value"]
    if op not in ("eq", "gte"):
        raise ValueError(f"rules: {where}.op must be 'eq' or 'gte', got {op!r}")
    numeric = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (numeric or (isinstance(value, str) and op == "eq")):
        raise ValueError(f"rules: {where}.value must be a number (or a string with op 'eq'), got {value!r}")
    return Bonus(
        prop=_str(spec["prop"], f"{where}.prop"), op=op, value=value, xp=_int(spec["xp"], f"{where}.xp")
    )


def _build_levels(raw: object) -> tuple[Level, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("rules: [[levels]] must list at least one level")
    levels: list[Level] = []
    for i, spec in enumerate(raw):
        where = f"levels[{i}]"
        spec = _table(spec, where)
        _check_keys(spec, where, {"level", "title", "min_xp", "benefits"}, {"level", "title", "min_xp"})
        level = Level(
            level=_int(spec["level"], f"{where}.level", minimum=1),
            title=_str(spec["title"], f"{where}.title"),
            min_xp=_int(spec["min_xp"], f"{where}.min_xp"),
            benefits=_build_benefits(spec.get("benefits", []), f"{where}.benefits"),
        )
        if level.level != i + 1:
            raise ValueError(
                f"rules: {where}: levels must be numbered 1, 2, 3, … in order; got {level.level}"
            )
        if i == 0 and level.min_xp != 0:
            raise ValueError("rules: level 1 must start at min_xp = 0")
        if levels and level.min_xp <= levels[-1].min_xp:
            raise ValueError(f"rules: {where}: min_xp must increase strictly ({level.min_xp})")
        levels.append(level)
    return tuple(levels)


def _build_benefits(raw: object, where: str) -> tuple[str, ...]:
    benefits = _str_list(raw, where)
    if len(benefits) > MAX_LEVEL_BENEFITS:
        raise ValueError(f"rules: {where}: at most {MAX_LEVEL_BENEFITS} benefits, got {len(benefits)}")
    for i, text in enumerate(benefits):
        if len(text) > MAX_BENEFIT_LEN or not text.isprintable():
            raise ValueError(
                f"rules: {where}[{i}] must be printable text of at most {MAX_BENEFIT_LEN} characters"
            )
    return tuple(benefits)


def _check_metric(metric: str, where: str) -> str:
    if not _METRIC.fullmatch(metric):
        raise ValueError(f"rules: {where} {metric!r} is not one of {_METRIC_NAMES}")
    return metric


def _build_badges(raw: object, default_xp: int) -> tuple[BadgeDef, ...]:
    if not isinstance(raw, list):
        raise ValueError("rules: [[badges]] must be an array of tables")
    badges: list[BadgeDef] = []
    seen: set[str] = set()
    required = {"id", "name", "description", "rarity", "metric", "threshold"}
    for i, spec in enumerate(raw):
        where = f"badges[{i}]"
        spec = _table(spec, where)
        _check_keys(spec, where, required | {"xp", "category"}, required)
        badge = BadgeDef(
            id=_str(spec["id"], f"{where}.id"),
            name=_str(spec["name"], f"{where}.name"),
            description=_str(spec["description"], f"{where}.description"),
            rarity=_str(spec["rarity"], f"{where}.rarity"),
            xp=_int(spec.get("xp", default_xp), f"{where}.xp"),
            metric=_check_metric(_str(spec["metric"], f"{where}.metric"), f"{where}.metric"),
            threshold=_int(spec["threshold"], f"{where}.threshold", minimum=1),
            category=_str(spec.get("category", DEFAULT_BADGE_CATEGORY), f"{where}.category"),
        )
        if badge.id in seen:
            raise ValueError(f"rules: {where}: duplicate badge id {badge.id!r}")
        if badge.rarity not in RARITIES:
            raise ValueError(
                f"rules: {where}.rarity must be one of {', '.join(RARITIES)}; got {badge.rarity!r}"
            )
        if badge.category not in BADGE_CATEGORIES:
            raise ValueError(
                f"rules: {where}.category must be one of {', '.join(BADGE_CATEGORIES)}; "
                f"got {badge.category!r}"
            )
        seen.add(badge.id)
        badges.append(badge)
    return tuple(badges)


def _build_recurring(raw: object) -> tuple[RecurringReward, ...]:
    if not isinstance(raw, list):
        raise ValueError("rules: [[recurring]] must be an array of tables")
    rewards: list[RecurringReward] = []
    keys = {"id", "description", "xp", "metric", "every"}
    for i, spec in enumerate(raw):
        where = f"recurring[{i}]"
        spec = _table(spec, where)
        _check_keys(spec, where, keys, keys)
        reward = RecurringReward(
            id=_str(spec["id"], f"{where}.id"),
            description=_str(spec["description"], f"{where}.description"),
            xp=_int(spec["xp"], f"{where}.xp"),
            metric=_check_metric(_str(spec["metric"], f"{where}.metric"), f"{where}.metric"),
            every=_int(spec["every"], f"{where}.every", minimum=1),
        )
        if any(r.id == reward.id for r in rewards):
            raise ValueError(f"rules: {where}: duplicate recurring id {reward.id!r}")
        rewards.append(reward)
    return tuple(rewards)


def _build_milestones(raw: object) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise ValueError("rules: streaks.milestones must be a list of integers")
    values = [_int(v, f"streaks.milestones[{i}]", minimum=1) for i, v in enumerate(raw)]
    if values != sorted(set(values)):
        raise ValueError(f"rules: streaks.milestones must increase strictly, got {values}")
    return tuple(values)
