"""Templates as data (models/interventions/template_admin.py, templates.py, bandit.py): an admin's
template checked field by field in its small language of declared variables, rendered safely
(values HTML-escaped into the HTML, format specs ignored), split by weight deterministically,
resolved from a library of built-in and custom templates, and sent by ``decide``."""

from __future__ import annotations

import string
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.interventions import NotificationBook, UserContext, choose_variant, decide, deliver
from models.interventions.policy import NOTIFICATION_TYPES, STAFF_TYPES
from models.interventions.template_admin import (
    DECLARED_VARIABLES,
    MAX_BODY_LEN,
    MAX_CTA_LEN,
    MAX_HTML_LEN,
    MAX_NAME_LEN,
    MAX_SUBJECT_LEN,
    MAX_VARIANTS,
    InvalidTemplate,
    check_template_id,
    parse_stored_template,
    parse_template,
)
from models.interventions.templates import (
    BUILTIN_LIBRARY,
    DEFAULT_VARIABLES,
    TEMPLATES,
    Template,
    TemplateLibrary,
    Variant,
    placeholders,
    render,
    render_text,
    template_for,
)
from tests.models.factories import ms

NOW = 1_780_000_000_000
T0 = ms("2026-06-01T12:00:00Z")  # noon UTC
NIGHT = {"channels": ["PUSH", "IN_APP"], "quiet_hours": ["21:00", "07:00"]}


def variant(**overrides: Any) -> dict[str, Any]:
    return {
        "subject": "Hi {display_name}",
        "body": "You have {streak} days.\nKeep going.",
        "cta": "Go",
        **overrides,
    }


def body(**overrides: Any) -> dict[str, Any]:
    return {"type": "gentle_reminder", "name": "Warm", "variants": [variant()], **overrides}


def refused(raw: Any, template_id: str = "warm") -> InvalidTemplate:
    with pytest.raises(InvalidTemplate) as caught:
        parse_template(raw, template_id, NOW)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Parsing: what passes


def test_a_valid_template_is_parsed_with_defaults() -> None:
    t = parse_template(body(variants=[variant(), variant(subject="Back soon")]), "warm", NOW)
    assert t.id == "warm" and t.type == "gentle_reminder" and t.name == "Warm"
    assert t.allocation == "auto" and t.default is False and t.builtin is False
    assert t.updated_ms == NOW
    assert [v.id for v in t.variants] == ["a", "b"]  # ids default to a, b, ...
    assert [v.weight for v in t.variants] == [1.0, 1.0]
    assert t.variants[0].html == "" and t.variants[1].subject == "Back soon"


def test_the_name_defaults_to_the_id() -> None:
    raw = body()
    del raw["name"]
    assert parse_template(raw, "warm", NOW).name == "warm"


def test_a_split_template_keeps_its_weights_and_ids() -> None:
    raw = body(
        allocation="split",
        default=True,
        variants=[
            variant(id="short", weight=3),
            variant(id="long", weight=0.5, html="<p>{display_name}</p>"),
        ],
    )
    t = parse_template(raw, "warm", NOW)
    assert t.allocation == "split" and t.default is True
    assert [(v.id, v.weight) for v in t.variants] == [("short", 3.0), ("long", 0.5)]
    assert t.variants[1].html == "<p>{display_name}</p>"


@pytest.mark.parametrize("template_type", NOTIFICATION_TYPES)
def test_every_notification_type_may_have_a_template(template_type: str) -> None:
    assert parse_template(body(type=template_type), "warm", NOW).type == template_type


def test_limits_are_inclusive() -> None:
    raw = body(
        name="n" * MAX_NAME_LEN,
        allocation="split",
        variants=[
            variant(
                id="v" * 16,
                subject="s" * MAX_SUBJECT_LEN,
                body="b" * MAX_BODY_LEN,
                cta="c" * MAX_CTA_LEN,
                html="h" * MAX_HTML_LEN,
                weight=1000,
            ),
            *(variant(id=f"x{i}", weight=0.001) for i in range(MAX_VARIANTS - 1)),
        ],
    )
    t = parse_template(raw, "t" * 64, NOW)
    assert len(t.variants) == MAX_VARIANTS and t.id == "t" * 64


def test_escaped_braces_and_every_declared_variable_pass() -> None:
    text = "{{literal}} " + " ".join(f"{{{name}}}" for name in sorted(DECLARED_VARIABLES))
    t = parse_template(body(variants=[variant(body=text)]), "warm", NOW)
    assert t.variants[0].body == text
    assert set(DEFAULT_VARIABLES) == DECLARED_VARIABLES


def test_newlines_and_tabs_pass_in_the_body_and_html_only() -> None:
    parse_template(body(variants=[variant(body="a\n\tb", html="<p>\n\t</p>")]), "warm", NOW)
    assert refused(body(variants=[variant(subject="a\nb")])).field == "variants[0].subject"
    assert refused(body(variants=[variant(cta="a\tb")])).field == "variants[0].cta"
    assert refused(body(name="a\nb")).field == "name"


# ---------------------------------------------------------------------------------------------
# Parsing: every refusal names its field


def _variants(*variants: Any) -> dict[str, Any]:
    return body(variants=list(variants))


REFUSALS: list[tuple[str, Any, str]] = [
    ("not-an-object", [1, 2], "body"),
    ("a-string", "template", "body"),
    ("unknown-field", body(colour="red"), "colour"),
    ("builtin-field", body(builtin=True), "builtin"),
    ("type-missing", {"variants": [variant()]}, "type"),
    ("type-unknown", body(type="fortune_cookie"), "type"),
    ("type-not-a-string", body(type=3), "type"),
    ("name-not-text", body(name=5), "name"),
    ("name-too-long", body(name="n" * (MAX_NAME_LEN + 1)), "name"),
    ("allocation-unknown", body(allocation="random"), "allocation"),
    ("allocation-not-text", body(allocation=None), "allocation"),
    ("default-not-bool", body(default="yes"), "default"),
    ("default-one", body(default=1), "default"),
    ("variants-missing", {"type": "gentle_reminder"}, "variants"),
    ("variants-not-a-list", body(variants={"a": variant()}), "variants"),
    ("variants-empty", body(variants=[]), "variants"),
    ("variants-too-many", body(variants=[variant(id=f"v{i}") for i in range(MAX_VARIANTS + 1)]), "variants"),
    ("variant-ids-repeat", _variants(variant(id="x"), variant(id="x")), "variants"),
    ("variant-default-id-repeat", _variants(variant(), variant(id="a")), "variants"),
    ("variant-not-an-object", _variants(variant(), "hello"), "variants[1]"),
    ("variant-unknown-field", _variants(variant(stats={})), "variants[0].stats"),
    ("variant-id-upper", _variants(variant(id="A")), "variants[0].id"),
    ("variant-id-empty", _variants(variant(id="")), "variants[0].id"),
    ("variant-id-too-long", _variants(variant(id="v" * 17)), "variants[0].id"),
    ("variant-id-number", _variants(variant(id=5)), "variants[0].id"),
    ("weight-without-split", _variants(variant(), variant(id="b", weight=2)), "variants[1].weight"),
    ("weight-zero", body(allocation="split", variants=[variant(weight=0)]), "variants[0].weight"),
    ("weight-negative", body(allocation="split", variants=[variant(weight=-1)]), "variants[0].weight"),
    ("weight-too-big", body(allocation="split", variants=[variant(weight=1000.5)]), "variants[0].weight"),
    ("weight-bool", body(allocation="split", variants=[variant(weight=True)]), "variants[0].weight"),
    ("weight-text", body(allocation="split", variants=[variant(weight="2")]), "variants[0].weight"),
    ("weight-nan", body(allocation="split", variants=[variant(weight=float("nan"))]), "variants[0].weight"),
    ("weight-inf", body(allocation="split", variants=[variant(weight=float("inf"))]), "variants[0].weight"),
    ("subject-missing", _variants({"body": "b", "cta": "c"}), "variants[0].subject"),
    ("subject-blank", _variants(variant(subject="   ")), "variants[0].subject"),
    ("subject-not-text", _variants(variant(subject=["Hi"])), "variants[0].subject"),
    ("subject-too-long", _variants(variant(subject="s" * (MAX_SUBJECT_LEN + 1))), "variants[0].subject"),
    ("body-missing", _variants({"subject": "s", "cta": "c"}), "variants[0].body"),
    ("body-too-long", _variants(variant(body="b" * (MAX_BODY_LEN + 1))), "variants[0].body"),
    ("body-nul", _variants(variant(body="a\x00b")), "variants[0].body"),
    ("body-escape", _variants(variant(body="a\x1b[31mb")), "variants[0].body"),
    ("body-del", _variants(variant(body="a\x7fb")), "variants[0].body"),
    ("body-line-separator", _variants(variant(body="a\u2028b")), "variants[0].body"),
    ("body-next-line", _variants(variant(body="a\x85b")), "variants[0].body"),
    ("cta-missing", _variants({"subject": "s", "body": "b"}), "variants[0].cta"),
    ("cta-too-long", _variants(variant(cta="c" * (MAX_CTA_LEN + 1))), "variants[0].cta"),
    ("html-not-text", _variants(variant(html=None)), "variants[0].html"),
    ("html-too-long", _variants(variant(html="h" * (MAX_HTML_LEN + 1))), "variants[0].html"),
    ("html-carriage-return", _variants(variant(html="<p>\r</p>")), "variants[0].html"),
    ("second-variant-field", _variants(variant(), variant(id="b", cta="")), "variants[1].cta"),
]


@pytest.mark.parametrize(("raw", "field"), [(r, f) for _, r, f in REFUSALS], ids=[i for i, _, _ in REFUSALS])
def test_every_refusal_names_the_field_at_fault(raw: Any, field: str) -> None:
    error = refused(raw)
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "template_id",
    ["", "Warm", "-warm", ".warm", "warm up", "w" * 65, "warm/up", "caf\u00e9", "warm\n"],
)
def test_a_bad_template_id_is_refused(template_id: str) -> None:
    assert refused(body(), template_id).field == "id"
    with pytest.raises(InvalidTemplate) as caught:
        check_template_id(template_id)
    assert caught.value.field == "id"


@pytest.mark.parametrize("template_id", sorted(TEMPLATES))
def test_a_builtin_id_is_taken(template_id: str) -> None:
    assert refused(body(), template_id).field == "id"


@pytest.mark.parametrize("template_id", [None, 7, ["warm"]])
def test_an_id_that_is_not_text_is_refused(template_id: Any) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        check_template_id(template_id)
    assert caught.value.field == "id"


def test_check_template_id_returns_a_good_id() -> None:
    assert check_template_id("spring-2026_v2.1") == "spring-2026_v2.1"


# The language: a placeholder is a plain declared name, nothing else.
HOSTILE_PLACEHOLDERS = [
    "{display_name.__class__}",
    "{display_name.__class__.__mro__}",
    "{0}",
    "{}",
    "{x[0]}",
    "{display_name[0]}",
    "{name:>999999}",
    "{display_name:>999999}",
    "{display_name:{streak}}",
    "{display_name!r}",
    "{ display_name }",
    "{secret}",
    "{user_email}",
    "{display_name",
    "display_name}",
    "{{display_name}",
    "{display_name}}}}",
]


@pytest.mark.parametrize("where", ["subject", "body", "cta", "html"])
@pytest.mark.parametrize("text", HOSTILE_PLACEHOLDERS)
def test_anything_but_a_declared_name_is_refused(where: str, text: str) -> None:
    error = refused(_variants(variant(), variant(id="b", **{where: f"Hello {text}!"})))
    assert error.field == f"variants[1].{where}"


def test_the_refusal_of_an_undeclared_variable_lists_the_declared_ones() -> None:
    message = str(refused(_variants(variant(subject="{secret}"))))
    assert "{secret}" in message and "display_name" in message


# ---------------------------------------------------------------------------------------------
# Stored templates (what the topic and the mirror carry)


def test_a_stored_template_reads_back_as_it_was() -> None:
    t = parse_template(
        body(allocation="split", default=True, variants=[variant(weight=2, html="<b>{badge}</b>")]),
        "warm",
        NOW,
    )
    stored = orjson.loads(orjson.dumps(t.to_dict()))
    assert stored["builtin"] is False  # the document says so; the reader decides anyway
    assert parse_stored_template(stored) == t
    assert Template.from_dict(stored) == t


@pytest.mark.parametrize("allocation", ["auto", "split"])
def test_every_stored_template_reads_back(allocation: str) -> None:
    # to_dict writes each variant's weight (1.0 under "auto", where an admin may not give one).
    t = parse_template(body(allocation=allocation, variants=[variant(), variant(id="b")]), "warm", NOW)
    assert all("weight" in v for v in t.to_dict()["variants"])
    assert parse_stored_template(orjson.loads(orjson.dumps(t.to_dict()))) == t


def test_a_stored_template_is_checked_again() -> None:
    t = parse_template(body(), "warm", NOW)
    doc = t.to_dict()
    doc["variants"][0]["subject"] = "{display_name.__init__.__globals__}"
    with pytest.raises(InvalidTemplate) as caught:
        parse_stored_template(doc)
    assert caught.value.field == "variants[0].subject"
    builtin = t.to_dict() | {"id": "gentle_reminder"}
    with pytest.raises(InvalidTemplate) as caught:
        parse_stored_template(builtin)
    assert caught.value.field == "id"


def test_a_stored_template_ignores_view_only_fields() -> None:
    t = parse_template(body(), "warm", NOW)
    doc = t.to_dict() | {"ab_test": {"winner": None}, "builtin": True}
    doc["variants"][0]["stats"] = {"sent": 3}
    parsed = parse_stored_template(doc)
    assert parsed == t and parsed.builtin is False


# ---------------------------------------------------------------------------------------------
# Rendering


def test_values_are_html_escaped_into_the_html_only() -> None:
    v = Variant(
        "a",
        "Hi {display_name}",
        "Hello {display_name}",
        "Go",
        html='<p title="{display_name}">{display_name} &amp; {{braces}} {streak}</p>',
    )
    text = render(v, {"display_name": "<script>alert('x')</script>\"", "streak": 4})
    assert text["html"] == (
        '<p title="&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;">'
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot; &amp; {braces} 4</p>"
    )
    # Subject, body and call to action are plain text: the channels escape them as they need.
    assert text["subject"] == "Hi <script>alert('x')</script>\""


def test_html_missing_values_read_as_their_defaults() -> None:
    v = Variant("a", "s", "b", "c", html="<p>{display_name}, {days_quiet} days, {note}.</p>")
    assert render(v, {"display_name": ""})["html"] == "<p>there, a few days, .</p>"


def test_no_html_renders_as_empty() -> None:
    assert render(Variant("a", "s", "b", "c"), {"display_name": "<x>"})["html"] == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{display_name:>999999}", "Ann"),
        ("{display_name:{streak}}", "Ann"),
        ("{display_name!r}", "Ann"),
        ("{display_name.__class__}", "Ann"),
        ("{display_name[0]}", "Ann"),
        ("{0}", ""),
        ("{x[0]}", ""),
    ],
)
def test_render_ignores_format_specs_attributes_and_indexing(text: str, expected: str) -> None:
    assert render_text(text, {"display_name": "Ann"}) == expected


@pytest.mark.parametrize("text", ["{display_name.__class__}", "{display_name:>9}", "{display_name!r}"])
def test_html_never_holds_an_unescaped_value_even_through_a_refused_placeholder(text: str) -> None:
    # The admin route refuses these; a Variant built in code must still not leak the raw value.
    html = render(Variant("a", "s", "b", "c", html=f"<p>{text}</p>"), {"display_name": "<i>"})["html"]
    assert "<i>" not in html


def test_placeholders_skip_escaped_braces() -> None:
    assert placeholders("{{a}} {b} {{{c}}} {d:>3}") == {"b", "c", "d:>3"}
    assert placeholders("no braces") == set()


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.lists(
    st.sampled_from([*"{}[]:.!0ab_ >", "display_name", "streak", "{{", "}}"]), max_size=30
).map("".join)
values = st.dictionaries(
    st.sampled_from(sorted(DECLARED_VARIABLES)) | st.text(max_size=8),
    st.text(max_size=20) | st.integers(-(10**9), 10**9) | st.floats(allow_nan=True) | st.booleans(),
    max_size=6,
)


@settings(max_examples=300)
@given(text=texts, html=texts, variables=values)
def test_render_never_raises_on_arbitrary_text(text: str, html: str, variables: dict[str, Any]) -> None:
    out = render(Variant("a", text, text, text, html=html), variables)
    assert set(out) == {"subject", "body", "cta", "html"}
    assert all(isinstance(v, str) for v in out.values())


@settings(max_examples=200)
@given(html=texts, value=st.sampled_from(["<script>", "<img src=x onerror=alert(1)>", '"><b>']))
def test_a_value_never_reaches_the_html_unescaped(html: str, value: str) -> None:
    out = render(Variant("a", "s", "b", "c", html=html), dict.fromkeys(DECLARED_VARIABLES, value))
    if value not in html.replace("{{", "{").replace("}}", "}"):
        assert value not in out["html"]


# Texts of plain words and declared placeholders: what the check is meant to accept.
_plain = st.text(alphabet=string.ascii_letters + string.digits + " .,!?'-", max_size=12)
_piece = _plain | st.sampled_from(sorted(DECLARED_VARIABLES)).map(lambda n: f"{{{n}}}")
_filled = st.dictionaries(
    st.sampled_from(sorted(DECLARED_VARIABLES)), st.text(alphabet=string.ascii_letters + " <>&", max_size=10)
)


@settings(max_examples=200)
@given(pieces=st.lists(_piece, min_size=1, max_size=8), variables=_filled)
def test_an_accepted_text_renders_each_placeholder_as_its_value(
    pieces: list[str], variables: dict[str, str]
) -> None:
    text = "".join(pieces)
    if not text.strip():
        return
    t = parse_template(_variants(variant(subject=text, html=text)), "warm", NOW)
    out = render(t.variants[0], variables)
    expected = "".join(
        (variables.get(p[1:-1]) or DEFAULT_VARIABLES[p[1:-1]]) if p.startswith("{") else p for p in pieces
    )
    assert out["subject"] == expected
    assert "{" not in out["subject"] and "}" not in out["subject"]


# Any text made of braces, words and names that the check accepts.
_wild = st.lists(
    st.sampled_from(["{", "}", "{{", "}}", "a", " ", "display_name", "streak", "{display_name}", "[0]", ":"]),
    min_size=1,
    max_size=10,
).map("".join)


@settings(max_examples=300)
@given(text=_wild)
def test_any_accepted_text_renders_without_raising(text: str) -> None:
    try:
        t = parse_template(_variants(variant(subject=text, body=text, cta=text, html=text)), "warm", NOW)
    except InvalidTemplate:
        return
    render(t.variants[0], {"display_name": "Ann", "streak": 3})


@settings(max_examples=300)
@given(text=_wild)
@example(text="}{display_name}{")
@example(text="a}{b")
def test_any_accepted_text_renders_without_braces_left(text: str) -> None:
    if "{{" in text or "}}" in text:
        return  # literal braces are the admin's own
    try:
        t = parse_template(_variants(variant(subject=text)), "warm", NOW)
    except InvalidTemplate:
        return
    out = render(t.variants[0], {"display_name": "Ann"})
    assert "{" not in out["subject"] and "}" not in out["subject"], (text, out["subject"])


# ---------------------------------------------------------------------------------------------
# Split allocation


def split(*weights: float) -> Template:
    return Template(
        "split-test",
        "gentle_reminder",
        tuple(Variant(chr(ord("a") + i), "s", "b", "c", weight=w) for i, w in enumerate(weights)),
        allocation="split",
        builtin=False,
    )


@pytest.mark.parametrize("weights", [(1.0, 3.0), (1.0, 1.0, 2.0), (5.0, 0.5), (1000.0, 1.0, 1.0)])
def test_split_frequencies_follow_the_weights(weights: tuple[float, ...]) -> None:
    t = split(*weights)
    n = 6000
    picks = Counter(choose_variant(t, None, seed=f"u-{i}\x1fk").id for i in range(n))
    total = sum(weights)
    for i, w in enumerate(weights):
        share = picks[chr(ord("a") + i)] / n
        expected = w / total
        # Four standard deviations of a binomial share, and at least half a percent.
        tolerance = max(0.005, 4 * (expected * (1 - expected) / n) ** 0.5)
        assert abs(share - expected) <= tolerance, (weights, dict(picks))


def test_split_ignores_results_and_is_deterministic_per_seed() -> None:
    t = split(1.0, 1.0)
    winning_b = {"a": {"sent": 1000, "clicked": 0}, "b": {"sent": 1000, "clicked": 900}}
    seeds = [f"u-{i}\x1fkey" for i in range(400)]
    first = [choose_variant(t, None, seed=s).id for s in seeds]
    assert first == [choose_variant(t, winning_b, seed=s).id for s in seeds]  # stats ignored
    assert first == [choose_variant(t, None, seed=s).id for s in seeds]  # same seed, same variant
    assert 150 < first.count("a") < 250


def test_auto_allocation_still_follows_results() -> None:
    t = Template("auto-test", "gentle_reminder", split(1.0, 1.0).variants, builtin=False)
    winning_b = {"a": {"sent": 1000, "clicked": 0}, "b": {"sent": 1000, "clicked": 900}}
    assert all(choose_variant(t, winning_b, seed=f"s{i}").id == "b" for i in range(200))


# ---------------------------------------------------------------------------------------------
# The library


def custom(
    template_id: str, type_: str = "gentle_reminder", *, default: bool = False, text: str = ""
) -> Template:
    return parse_template(
        body(type=type_, default=default, variants=[variant(subject=text or f"From {template_id}")]),
        template_id,
        NOW,
    )


def test_the_builtin_library_resolves_each_type_to_its_builtin() -> None:
    for type_ in NOTIFICATION_TYPES:
        assert BUILTIN_LIBRARY.for_type(type_) is template_for(type_)
        assert BUILTIN_LIBRARY.resolve(type_, None) is template_for(type_)
        assert BUILTIN_LIBRARY.resolve(type_, "no-such-template") is template_for(type_)
    assert BUILTIN_LIBRARY.all() == list(TEMPLATES.values())


def test_a_named_template_of_the_type_is_used() -> None:
    warm = custom("warm")
    library = TemplateLibrary({"warm": warm})
    assert library.resolve("gentle_reminder", "warm") is warm
    assert library.get("warm") is warm
    assert library.get("streak_warning") is TEMPLATES["streak_warning"]
    assert library.for_type("gentle_reminder") is TEMPLATES["gentle_reminder"]  # not a default


def test_a_named_template_of_another_type_falls_back_to_the_types_default() -> None:
    library = TemplateLibrary({"warm": custom("warm", "gentle_reminder")})
    assert library.resolve("streak_warning", "warm") is TEMPLATES["streak_warning"]
    # A built-in of another type named by id falls back the same way.
    assert library.resolve("streak_warning", "gentle_reminder") is TEMPLATES["streak_warning"]
    # And to the custom default when the type has one.
    urgent = custom("urgent", "streak_warning", default=True)
    library = TemplateLibrary({"warm": custom("warm"), "urgent": urgent})
    assert library.resolve("streak_warning", "warm") is urgent
    assert library.resolve("streak_warning", "no-such") is urgent


def test_a_custom_default_replaces_the_builtin_of_its_type_only() -> None:
    warm = custom("warm", default=True)
    library = TemplateLibrary({"warm": warm})
    assert library.for_type("gentle_reminder") is warm
    assert library.resolve("gentle_reminder", None) is warm
    # A campaign naming the built-in still gets it.
    assert library.resolve("gentle_reminder", "gentle_reminder") is TEMPLATES["gentle_reminder"]
    assert library.for_type("streak_warning") is TEMPLATES["streak_warning"]


def test_two_defaults_for_one_type_resolve_alike_whatever_their_order() -> None:
    one, two = custom("one", default=True), custom("two", default=True)
    first = TemplateLibrary({"one": one, "two": two}).for_type("gentle_reminder")
    second = TemplateLibrary({"two": two, "one": one}).for_type("gentle_reminder")
    assert first is second and first in (one, two)


def test_all_lists_the_builtins_then_the_custom_ones_by_id() -> None:
    library = TemplateLibrary({"zz": custom("zz"), "aa": custom("aa")})
    assert [t.id for t in library.all()] == [*TEMPLATES, "aa", "zz"]


# ---------------------------------------------------------------------------------------------
# decide


def test_decide_with_a_custom_default_sends_its_text_and_id() -> None:
    library = TemplateLibrary({"warm": custom("warm", default=True, text="Come back, {display_name}")})
    book = NotificationBook()
    decision = decide(
        book, UserContext("u-1", display_name="Ann"), "gentle_reminder", "k1", T0,
        source="risk", variables={}, stats=None, templates=library,
    )  # fmt: skip
    n = decision.notification
    assert n is not None and decision.reason == "queued"
    assert (n.template, n.variant, n.subject) == ("warm", "a", "Come back, Ann")
    assert n.body == "You have several days.\nKeep going."


def test_decide_with_a_named_template_of_another_type_uses_the_types_template() -> None:
    library = TemplateLibrary({"warm": custom("warm", default=True)})
    decision = decide(
        NotificationBook(), UserContext("u-1"), "streak_warning", "k1", T0,
        source="campaign:c1", variables={}, stats=None, templates=library, template_id="warm",
    )  # fmt: skip
    assert decision.notification is not None
    assert decision.notification.template == "streak_warning"


def test_decide_without_a_library_uses_the_builtins() -> None:
    decision = decide(
        NotificationBook(), UserContext("u-1"), "gentle_reminder", "k1", T0,
        source="risk", variables={}, stats=None, template_id="warm",
    )  # fmt: skip
    assert decision.notification is not None and decision.notification.template == "gentle_reminder"


def test_a_deferred_notification_keeps_its_escaped_html_until_it_is_sent() -> None:
    raw = body(variants=[variant(html="<p>Hi {display_name}</p>")], default=True)
    library = TemplateLibrary({"warm": parse_template(raw, "warm", NOW)})
    book = NotificationBook()
    night = T0 + 10 * 3_600_000  # 22:00 UTC: inside quiet hours
    context = UserContext("u-1", prefs=NIGHT, display_name="<b>Ann & Co")
    decision = decide(
        book, context, "gentle_reminder", "k1", night,
        source="risk", variables={}, stats=None, urgency="high", templates=library,
    )  # fmt: skip
    n = decision.notification
    assert n is not None and decision.reason == "deferred"
    assert n.html == "<p>Hi &lt;b&gt;Ann &amp; Co</p>"
    assert n.to_dict()["html"] == n.html
    assert orjson.loads(orjson.dumps(book.to_dict()))["pending"][0]["html"] == n.html
    deliver(book, n, night + 9 * 3_600_000)
    assert n.status == "sent"
    assert "html" not in n.to_dict()


def test_a_staff_type_may_have_a_custom_template_too() -> None:
    (staff,) = STAFF_TYPES
    library = TemplateLibrary({"coach": custom("coach", staff, default=True, text="Call {user_id}")})
    decision = decide(
        NotificationBook(), UserContext("u-9"), staff, "k1", T0,
        source="risk", variables={}, stats=None, templates=library,
    )  # fmt: skip
    assert decision.notification is not None
    assert (decision.notification.template, decision.notification.subject) == ("coach", "Call u-9")
