"""Notification wording: one template per intervention type, A/B variants, safe rendering."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from models.boards import STANDING_UNKNOWN
from models.interventions.policy import check_type

# ---------------------------------------------------------------------------------------------
# Templates and rendering


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    subject: str
    body: str
    cta: str
    #: The mail's HTML body (values are HTML-escaped into it); empty: built from the text.
    html: str = ""
    #: Its share of the traffic when the template splits it by weight.
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "body": self.body, "cta": self.cta, "html": self.html,
                "weight": self.weight}  # fmt: skip


def _variant_from_dict(v: Mapping[str, Any]) -> Variant:
    return Variant(
        id=str(v["id"]),
        subject=str(v["subject"]),
        body=str(v["body"]),
        cta=str(v["cta"]),
        html=str(v.get("html") or ""),
        weight=float(v.get("weight", 1.0)),
    )


#: How a template picks a variant: by results (Thompson sampling on clicks and conversions per
#: send, models/interventions/bandit.py) or by the weights an admin set (a fixed split).
ALLOCATIONS = ("auto", "split")


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    type: str
    variants: tuple[Variant, ...]
    allocation: str = "auto"
    #: Shipped with the engine (read-only), or an admin's (models/interventions/template_admin.py).
    builtin: bool = True
    #: An admin's template that replaces the built-in one of its type everywhere.
    default: bool = False
    name: str = ""
    updated_ms: int = 0

    def variant(self, variant_id: str) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name or self.id,
            "allocation": self.allocation,
            "builtin": self.builtin,
            "default": self.default,
            "updated_ms": self.updated_ms,
            "variants": [v.to_dict() for v in self.variants],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            variants=tuple(map(_variant_from_dict, data["variants"])),
            allocation=str(data.get("allocation") or "auto"),
            builtin=bool(data.get("builtin", False)),
            default=bool(data.get("default", False)),
            name=str(data.get("name") or ""),
            updated_ms=int(data.get("updated_ms") or 0),
        )


def _template(type: str, *variants: tuple[str, str, str]) -> Template:
    return Template(
        id=type,
        type=type,
        variants=tuple(Variant(chr(ord("a") + i), *texts) for i, texts in enumerate(variants)),
    )


# The texts use the variables that `decide` fills from the context (display_name, streak, level,
# days_quiet) or that the caller passes; each reads correctly with the defaults of DEFAULT_VARIABLES.
_TEMPLATE_LIST: tuple[Template, ...] = (
    _template(
        "gentle_reminder",
        (
            "We saved your place",
            "Hi {display_name}, it's been {days_quiet} days since your last session."
            " Ten minutes today keeps your progress moving.",
            "Resume learning",
        ),
        (
            "Your next lesson is waiting",
            "Hi {display_name}, pick up where you left off: a short session is enough to keep the habit.",
            "Continue",
        ),
    ),
    _template(
        "streak_warning",
        (
            "Your streak ends at midnight",
            "Hi {display_name}, {streak} days in a row so far: one activity today keeps your streak alive.",
            "Save my streak",
        ),
        (
            "Don't lose {streak} days of progress",
            "Complete any lesson or challenge before the day ends to keep your streak going.",
            "Keep it going",
        ),
    ),
    _template(
        "achievement_notification",
        (
            "Achievement unlocked: {badge}",
            "Nice work, {display_name}! Keep going to unlock the next one.",
            "See my badges",
        ),
        (
            "You earned {badge}",
            "Hi {display_name}, your effort is paying off. Share it or aim for the next badge.",
            "View achievement",
        ),
    ),
    _template(
        "milestone_celebration",
        (
            "You reached {milestone}!",
            "Congratulations, {display_name}! Set your next goal while the momentum is yours.",
            "Set my next goal",
        ),
        (
            "Milestone: {milestone}",
            "Hi {display_name}, few learners get this far. Celebrate, then keep climbing.",
            "Celebrate",
        ),
    ),
    _template(
        "personalized_content",
        (
            "Recommended for you: {topic}",
            "Hi {display_name}, based on your recent practice this is what will help you most right now.",
            "Start now",
        ),
        (
            "A quick win for today",
            "Hi {display_name}, try {topic}: about 10 minutes, tailored to where you are.",
            "Try it",
        ),
    ),
    _template(
        "discount_offer",
        (
            "Save {discount_pct} on Premium",
            "Hi {display_name}, unlock mock interviews and unlimited practice to get back on track.",
            "Claim offer",
        ),
        (
            "A gift to get you back on track",
            "Hi {display_name}, take {discount_pct} off Premium and continue your preparation.",
            "Use my discount",
        ),
    ),
    _template(
        "peer_comparison",
        # {standing}: the user's real percentile on the weekly boards, or a true sentence
        # without a number (models/boards.py standing_sentence).
        (
            "See where you stand this week",
            "{standing} A 10-minute session is a good next step.",
            "Practise now",
        ),
        (
            "Your weekly standing",
            "Hi {display_name}. {standing}",
            "Catch up",
        ),
    ),
    # The user's own career news (models/career_notices.py fills the job's words).
    _template(
        "application_update",
        (
            "{job_title}: {status_headline}",
            "Hi {display_name}, your application for {about} {status_text}.{note}",
            "View application",
        ),
    ),
    _template(
        "job_match",
        (
            "A {match_pct} match: {job_title}",
            "Hi {display_name}, {job_title} at {company}{place} fits your profile.{deadline}",
            "View job",
        ),
    ),
    _template(
        "match_digest",
        (
            "{count} new job matches{place}",
            "Hi {display_name}, {count} new jobs fit your profile{place}, {job_title} at {company} first.",
            "See your matches",
        ),
    ),
    _template(
        "deadline_reminder",
        (
            "{job_title} closes {closing}",
            "Hi {display_name}, {job_title} at {company} matched your profile and closes {closing}."
            " You have not applied yet.",
            "Apply now",
        ),
    ),
    # Staff-facing: the body is read by a coach in the outreach queue, not by the student.
    _template(
        "human_outreach",
        (
            "Reach out to student {user_id}",
            "Risk score {score} ({risk_level}); top signals: {signals}. Last active {days_quiet} days ago.",
            "Open student profile",
        ),
    ),
)
TEMPLATES: Mapping[str, Template] = {t.id: t for t in _TEMPLATE_LIST}
_TEMPLATE_BY_TYPE: Mapping[str, str] = {t.type: t.id for t in reversed(_TEMPLATE_LIST)}


def template_for(type: str) -> Template:
    """The default template of an intervention type (the first registered for it)."""
    check_type(type)
    return TEMPLATES[_TEMPLATE_BY_TYPE[type]]


#: What a placeholder reads when the caller has no value for it: neutral words, never invented
#: numbers (a made-up discount or percentage would be a promise nobody made).
DEFAULT_VARIABLES: Mapping[str, str] = {
    "display_name": "there",
    "days_quiet": "a few",
    "streak": "several",
    "level": "your level",
    "badge": "a new badge",
    "milestone": "a new milestone",
    "topic": "a short lesson chosen for your goals",
    "discount_pct": "extra",
    "peer_pct": "Many",
    "standing": STANDING_UNKNOWN,
    "score": "n/a",
    "risk_level": "unknown level",
    "signals": "none reported",
    "user_id": "unknown",
    "job_title": "Your application",
    "about": "the role",
    "company": "the employer",
    "status_headline": "an update",
    "status_text": "has news",
    "note": "",
    "match_pct": "strong",
    "place": "",
    "deadline": "",
    "count": "Several",
    "closing": "soon",
}


def _display(name: str, value: object) -> str:
    """A variable as text: whole floats without decimals, `*_pct` numbers with their % sign."""
    if isinstance(value, bool) or value is None:
        text = "" if value is None else str(value).lower()
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float: shown as it is
            return str(value)
        text = str(int(number)) if number.is_integer() else f"{number:.1f}"
        if name.endswith("_pct"):
            text += "%"
    elif isinstance(value, list | tuple):
        text = ", ".join(_display(name, item) for item in value)
    else:
        text = str(value)
    return text


class _Defaulting(Mapping[str, str]):
    """Variables as display text; any missing name reads as its default (or nothing)."""

    def __init__(self, variables: Mapping[str, object]) -> None:
        self._values = {str(k): _display(str(k), v) for k, v in variables.items() if v is not None}

    def __getitem__(self, key: str) -> str:
        value = self._values.get(key)
        return value if value else DEFAULT_VARIABLES.get(key, "")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class _SafeFormatter(string.Formatter):
    """str.format that cannot fail on its fields: positional, dotted or indexed fields and bad
    format specs render as defaults instead of raising (templates may come from operators)."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        return kwargs[root], root

    def format_field(self, value: Any, format_spec: str) -> Any:
        # Format specs are ignored: "{name:>999999999}" must not make a gigabyte of padding.
        return str(value)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value  # !r / !s on display text would only add quotes


_FORMATTER = _SafeFormatter()


def render_text(text: str, variables: Mapping[str, object]) -> str:
    try:
        return _FORMATTER.vformat(text, (), _Defaulting(variables))
    except (ValueError, IndexError, KeyError):
        return text  # unbalanced braces: show the text as written rather than nothing


def render(variant: Variant, variables: Mapping[str, object]) -> dict[str, str]:
    """{"subject", "body", "cta", "html"} with the placeholders filled (HTML-escaped into the
    html); never raises."""
    html = ""
    if variant.html:
        filled = _Defaulting(variables)
        escaped = {name: escape(filled[name]) for name in placeholders(variant.html)}
        html = render_text(variant.html, escaped)
    return {
        "subject": render_text(variant.subject, variables),
        "body": render_text(variant.body, variables),
        "cta": render_text(variant.cta, variables),
        "html": html,
    }


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def placeholders(text: str) -> set[str]:
    """The names a text's ``{placeholders}`` use (escaped ``{{``/``}}`` are not placeholders)."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text.replace("{{", "").replace("}}", ""))}


class TemplateLibrary:
    """The built-in templates and the admins' (from the broadcast topic): what ``decide`` picks
    a template from, by the id a campaign names or by the notification's type."""

    def __init__(self, custom: Mapping[str, Template] | None = None) -> None:
        self.custom = dict(custom or {})
        self._defaults = {t.type: t for t in sorted(self.custom.values(), key=lambda t: t.id) if t.default}

    def get(self, template_id: str) -> Template | None:
        return self.custom.get(template_id) or TEMPLATES.get(template_id)

    def for_type(self, type: str) -> Template:
        return self._defaults.get(type) or template_for(type)

    def resolve(self, type: str, template_id: str | None) -> Template:
        """The template named (when it exists and is for this type), else the type's default."""
        named = self.get(template_id) if template_id else None
        return named if named is not None and named.type == type else self.for_type(type)

    def all(self) -> list[Template]:
        return [*TEMPLATES.values(), *sorted(self.custom.values(), key=lambda t: t.id)]


BUILTIN_LIBRARY = TemplateLibrary()
