"""Templates as data: an admin's notification template, checked (``/v1/admin/templates``), without
I/O.

A template names the notification type it words, and one to five variants, each a subject, a
text body, a call to action and, for mail, an optional HTML body. The language is deliberately
small: text with ``{placeholders}`` from a declared set of variables (``DECLARED_VARIABLES``:
what the engine fills, models/interventions/templates.py ``DEFAULT_VARIABLES``), nothing else.
No attribute access, indexing, format specs or expressions pass the check, so a template can
neither reach into an object nor make a renderer do unbounded work; values are escaped into the
HTML when it is rendered. ``allocation`` says how variants share traffic: ``auto`` (the bandit,
by results) or ``split`` (the weights given). ``default: true`` makes it the wording of its type
everywhere (a campaign may still name another).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from models.interventions.policy import NOTIFICATION_TYPES
from models.interventions.templates import (
    ALLOCATIONS,
    DEFAULT_VARIABLES,
    TEMPLATES,
    Template,
    Variant,
)

#: The variables a template may use: those the engine fills (or has a default for).
DECLARED_VARIABLES = frozenset(DEFAULT_VARIABLES)
MAX_VARIANTS = 5
MAX_NAME_LEN = 120
MAX_SUBJECT_LEN = 200
MAX_BODY_LEN = 2000
MAX_CTA_LEN = 80
MAX_HTML_LEN = 12_000
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_VARIANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PARSER = string.Formatter()
FIELDS = frozenset({"id", "type", "name", "allocation", "default", "variants"})
VARIANT_FIELDS = frozenset({"id", "subject", "body", "cta", "html", "weight"})


class InvalidTemplate(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_template_id(template_id: object) -> str:
    if not isinstance(template_id, str) or not _ID.match(template_id):
        raise InvalidTemplate("id", "1 to 64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit")
    if template_id in TEMPLATES:
        raise InvalidTemplate("id", f"{template_id!r} is a built-in template's id")
    return template_id


def parse_template(body: object, template_id: str, now_ms: int) -> Template:
    """The admin's template ``body`` under ``template_id``; InvalidTemplate naming the field at
    fault otherwise."""
    if not isinstance(body, Mapping):
        raise InvalidTemplate("body", "a template is a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidTemplate(unknown[0], "not a template field")
    check_template_id(template_id)
    type_ = body.get("type")
    if type_ not in NOTIFICATION_TYPES:
        raise InvalidTemplate("type", f"one of {', '.join(NOTIFICATION_TYPES)}")
    name = _text(body.get("name", ""), "name", MAX_NAME_LEN, required=False)
    allocation = body.get("allocation", "auto")
    if allocation not in ALLOCATIONS:
        raise InvalidTemplate("allocation", f"one of {', '.join(ALLOCATIONS)}")
    default = body.get("default", False)
    if not isinstance(default, bool):
        raise InvalidTemplate("default", "true or false")
    raw_variants = body.get("variants")
    if not isinstance(raw_variants, list) or not 1 <= len(raw_variants) <= MAX_VARIANTS:
        raise InvalidTemplate("variants", f"a list of 1 to {MAX_VARIANTS} variants")
    variants = tuple(_variant(v, i, allocation) for i, v in enumerate(raw_variants))
    if len({v.id for v in variants}) != len(variants):
        raise InvalidTemplate("variants", "variant ids must differ")
    return Template(
        id=template_id,
        type=str(type_),
        variants=variants,
        allocation=str(allocation),
        builtin=False,
        default=default,
        name=name or template_id,
        updated_ms=now_ms,
    )


def parse_stored_template(data: Mapping[str, Any]) -> Template:
    """A template as the API stored it (``Template.to_dict``), checked again by its reader."""
    body = {k: data[k] for k in FIELDS - {"id"} if k in data}
    # to_dict writes every variant's weight; the check takes one only with "split".
    fields = VARIANT_FIELDS if data.get("allocation") == "split" else VARIANT_FIELDS - {"weight"}
    body["variants"] = [{k: v[k] for k in fields if k in v} for v in data.get("variants") or []]
    return parse_template(body, str(data.get("id")), int(data.get("updated_ms") or 0))


def _variant(raw: object, index: int, allocation: object) -> Variant:
    where = f"variants[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidTemplate(where, "a variant is an object")
    unknown = sorted(set(raw) - VARIANT_FIELDS)
    if unknown:
        raise InvalidTemplate(f"{where}.{unknown[0]}", "not a variant field")
    variant_id = raw.get("id", chr(ord("a") + index))
    if not isinstance(variant_id, str) or not _VARIANT_ID.match(variant_id):
        raise InvalidTemplate(f"{where}.id", "1 to 16 of a-z, 0-9, '_', '-'")
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1000:
        raise InvalidTemplate(f"{where}.weight", "a number above 0 and at most 1000")
    if allocation == "auto" and "weight" in raw:
        raise InvalidTemplate(f"{where}.weight", 'weights split traffic only with "allocation": "split"')
    return Variant(
        id=variant_id,
        subject=_text(raw.get("subject"), f"{where}.subject", MAX_SUBJECT_LEN),
        body=_text(raw.get("body"), f"{where}.body", MAX_BODY_LEN, multiline=True),
        cta=_text(raw.get("cta"), f"{where}.cta", MAX_CTA_LEN),
        html=_text(raw.get("html", ""), f"{where}.html", MAX_HTML_LEN, required=False, multiline=True),
        weight=float(weight),
    )


def _text(value: object, where: str, limit: int, *, required: bool = True, multiline: bool = False) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidTemplate(where, "text is required" if required else "text")
    if len(value) > limit:
        raise InvalidTemplate(where, f"at most {limit} characters")
    allowed = "\n\t" if multiline else ""
    if any((ch < " " and ch not in allowed) or ch in "\x7f\u2028\u2029\x85" for ch in value):
        raise InvalidTemplate(where, "holds control characters")
    try:
        # The renderer's own parser: what it cannot parse is refused here, not sent raw later.
        fields = [(name, spec, conv) for _, name, spec, conv in _PARSER.parse(value) if name is not None]
    except ValueError as exc:
        raise InvalidTemplate(where, "unbalanced braces (write {{ or }} for a literal one)") from exc
    for name, spec, conv in fields:
        if not _NAME.match(name) or spec or conv:
            raise InvalidTemplate(where, f"{{{name}}}: a placeholder is a plain variable name")
        if name not in DECLARED_VARIABLES:
            raise InvalidTemplate(
                where, f"{{{name}}} is not a variable; use one of {', '.join(sorted(DECLARED_VARIABLES))}"
            )
    return value
