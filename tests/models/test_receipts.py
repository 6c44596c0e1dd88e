"""Delivery receipts without I/O (models/receipts.py): what each provider's status means, Twilio's
signature, our callback and VERP tokens, and DSNs built the way mail servers build them, with
hostile inputs of each."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from urllib.parse import urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.delivery import delivery_report
from models.outcome_ledger import OutcomeLedger
from models.receipts import (
    AFRICASTALKING_ROUTE,
    MAX_CALLBACK_BYTES,
    MAX_DSN_BYTES,
    MAX_FORM_FIELDS,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    VERP_TOKEN_LEN,
    BadReceipt,
    BounceAddresses,
    DsnTooComplex,
    Receipt,
    SentMessage,
    VerpSigner,
    africastalking_callback_url,
    africastalking_receipt,
    callback_token,
    callback_token_valid,
    parse_dsn,
    parse_form,
    twilio_receipt,
    twilio_signature,
    twilio_signature_valid,
)

SECRET = "test-secret-for-receipts-0123456789abcdef"
FORM = "application/x-www-form-urlencoded"


def form(**fields: str) -> list[tuple[str, str]]:
    return list(fields.items())


# ---------------------------------------------------------------------------------------------
# Africa's Talking


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        ("Success", "", Receipt("ATXid_1", "delivered")),
        ("Failed", "UnknownSubscriber", Receipt("ATXid_1", "bounced", "dlr_UnknownSubscriber")),
        ("Failed", "InvalidPhoneNumber", Receipt("ATXid_1", "bounced", "dlr_InvalidPhoneNumber")),
        ("Rejected", "UserInBlackList", Receipt("ATXid_1", "bounced", "dlr_UserInBlackList")),
        ("Rejected", "UserIsInBlacklist", Receipt("ATXid_1", "bounced", "dlr_UserIsInBlacklist")),
        ("Failed", "UserInDoNotDisturb", Receipt("ATXid_1", "bounced", "dlr_UserInDoNotDisturb")),
        ("Failed", "InsufficientCredit", Receipt("ATXid_1", "failed", "dlr_InsufficientCredit")),
        ("Failed", "DeliveryFailure", Receipt("ATXid_1", "failed", "dlr_DeliveryFailure")),
        ("AbsentSubscriber", "", Receipt("ATXid_1", "failed", "dlr_AbsentSubscriber")),
        ("Expired", "", Receipt("ATXid_1", "failed", "dlr_Expired")),
        ("Sent", "", Receipt("ATXid_1", None)),
        ("Submitted", "", Receipt("ATXid_1", None)),
        ("Buffered", "", Receipt("ATXid_1", None)),
        ("SomethingNew", "", Receipt("ATXid_1", None)),  # a status we do not know: no word
        ("success", "", Receipt("ATXid_1", "delivered")),  # case is not a word of its own
    ],
)
def test_africastalking_statuses_map_to_results(status: str, reason: str, expected: Receipt) -> None:
    fields = form(
        id="ATXid_1", status=status, phoneNumber="+254711000001", networkCode="63902", retryCount="0"
    )
    if reason:
        fields.append(("failureReason", reason))
    assert africastalking_receipt(fields) == expected


@pytest.mark.parametrize(
    "fields",
    [
        form(status="Success"),  # no id
        form(id="", status="Success"),
        form(id="ATXid_1"),  # no status
        form(id="ATXid_1\x00", status="Success"),  # not an id
        form(id="x" * 129, status="Success"),
        [("id", "ATXid_1"), ("id", "ATXid_2"), ("status", "Success")],  # which one?
    ],
)
def test_an_africastalking_report_without_a_usable_id_or_status_is_refused(
    fields: list[tuple[str, str]],
) -> None:
    with pytest.raises(BadReceipt):
        africastalking_receipt(fields)


def test_a_provider_reason_is_kept_short_and_plain() -> None:
    receipt = africastalking_receipt(
        form(id="ATXid_1", status="Failed", failureReason="Deliv<script>\r\nÉry" + "x" * 500)
    )
    assert receipt.result == "failed"
    assert receipt.reason is not None
    assert receipt.reason.startswith("dlr_Delivscript") and len(receipt.reason) <= 4 + 64
    assert set(receipt.reason) <= set(string.ascii_letters + string.digits + "_.-")


# ---------------------------------------------------------------------------------------------
# Twilio


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("delivered", "", Receipt("SM1", "delivered")),
        ("undelivered", "30003", Receipt("SM1", "bounced", "sms_error_30003")),
        ("undelivered", "30005", Receipt("SM1", "bounced", "sms_error_30005")),
        ("failed", "30006", Receipt("SM1", "bounced", "sms_error_30006")),
        ("undelivered", "30004", Receipt("SM1", "bounced", "sms_error_30004")),
        ("undelivered", "30007", Receipt("SM1", "failed", "sms_error_30007")),
        ("failed", "30008", Receipt("SM1", "failed", "sms_error_30008")),
        ("failed", "", Receipt("SM1", "failed", "dlr_failed")),
        ("failed", "not-a-number", Receipt("SM1", "failed", "dlr_failed")),
        ("queued", "", Receipt("SM1", None)),
        ("sending", "", Receipt("SM1", None)),
        ("sent", "", Receipt("SM1", None)),
    ],
)
def test_twilio_statuses_map_to_results(status: str, code: str, expected: Receipt) -> None:
    fields = form(MessageSid="SM1", MessageStatus=status, AccountSid="AC1", To="+254711000001")
    if code:
        fields.append(("ErrorCode", code))
    assert twilio_receipt(fields) == expected


def test_a_twilio_report_without_sid_or_status_is_refused() -> None:
    for fields in (form(MessageStatus="delivered"), form(MessageSid="SM1"), form()):
        with pytest.raises(BadReceipt):
            twilio_receipt(fields)


#: Twilio's own validator tests (twilio-python tests/unit/test_request_validator.py).
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = form(
    CallSid="CA1234567890ABCDE", Digits="1234", From="+14158675309", To="+18005551212", Caller="+14158675309"
)


def test_the_twilio_signature_matches_twilios_published_vectors() -> None:
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", TWILIO_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_the_twilio_signature_is_hmac_sha1_of_the_url_and_the_sorted_parameters() -> None:
    url = "https://pulse.example.org/v1/webhooks/sms/twilio"
    params = form(MessageStatus="delivered", MessageSid="SMabc", AccountSid="AC1", ErrorCode="")
    data = url + "AccountSidAC1" + "ErrorCode" + "MessageSidSMabc" + "MessageStatusdelivered"
    expected = base64.b64encode(hmac.new(b"tok", data.encode(), hashlib.sha1).digest()).decode()
    assert twilio_signature("tok", url, params) == expected
    assert twilio_signature_valid("tok", url, params, expected)


def test_a_tampered_twilio_report_fails_the_signature() -> None:
    url = "https://pulse.example.org/v1/webhooks/sms/twilio"
    params = form(MessageStatus="undelivered", MessageSid="SMabc", ErrorCode="30003")
    good = twilio_signature("tok", url, params)
    assert twilio_signature_valid("tok", url, params, good)
    assert not twilio_signature_valid("tok", url, form(MessageStatus="delivered", MessageSid="SMabc"), good)
    assert not twilio_signature_valid("tok", url, [*params, ("Extra", "1")], good)
    assert not twilio_signature_valid("tok", "http://internal:8000/v1/webhooks/sms/twilio", params, good)
    assert not twilio_signature_valid("other", url, params, good)
    assert not twilio_signature_valid("tok", url, params, "")
    assert not twilio_signature_valid("", url, params, twilio_signature("", url, params))  # no token
    assert not twilio_signature_valid("tok", url, params, good[:-2] + "é=")  # not even ASCII


TWILIO_FIELDS = (
    "AccountSid",
    "ApiVersion",
    "ErrorCode",
    "From",
    "MessageSid",
    "MessageStatus",
    "SmsSid",
    "To",
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(TWILIO_FIELDS), st.text(max_size=20), min_size=1),
    st.integers(min_value=0, max_value=7),
    st.text(min_size=1, max_size=5),
)
def test_changing_or_adding_any_parameter_breaks_the_signature(
    params: dict[str, str], which: int, suffix: str
) -> None:
    # (The scheme concatenates without separators, so only changes that change the signed text
    # can be caught: a value made longer, a parameter added, as a forger would.)
    url = "https://pulse.example.org/v1/webhooks/sms/twilio"
    fields = list(params.items())
    signature = twilio_signature("tok", url, fields)
    assert twilio_signature_valid("tok", url, list(reversed(fields)), signature)  # order is not signed
    name = sorted(params)[which % len(params)]
    assert not twilio_signature_valid("tok", url, [*fields, ("Extra", suffix)], signature)
    changed = {**params, name: params[name] + suffix}
    assert not twilio_signature_valid("tok", url, list(changed.items()), signature)


# ---------------------------------------------------------------------------------------------
# Forms


def test_a_form_is_read_in_order_with_blank_values_and_utf8() -> None:
    body = urlencode([("id", "ATXid_1"), ("status", "Success"), ("failureReason", ""), ("n", "Amani é")])
    assert parse_form(body.encode(), f"{FORM}; charset=utf-8") == [
        ("id", "ATXid_1"),
        ("status", "Success"),
        ("failureReason", ""),
        ("n", "Amani é"),
    ]


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"id": "ATXid_1"}', "application/json"),
        (b"id=ATXid_1", ""),
        (b"id=ATXid_1", "multipart/form-data; boundary=x"),
        (b"id=" + b"x" * MAX_CALLBACK_BYTES, FORM),
        ("&".join(f"f{i}=1" for i in range(MAX_FORM_FIELDS + 1)).encode(), FORM),
        (b"id=%ff%fe", FORM),  # percent-escapes that are not UTF-8
        ("id=ATXid_é".encode(), FORM),  # raw non-ASCII: not urlencoded
    ],
)
def test_what_is_not_a_small_urlencoded_form_is_refused(raw: bytes, content_type: str) -> None:
    with pytest.raises(BadReceipt):
        parse_form(raw, content_type)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from([FORM, "text/plain", "application/json"]))
def test_any_body_is_read_or_refused_never_a_crash(raw: bytes, content_type: str) -> None:
    try:
        fields = parse_form(raw, content_type)
    except BadReceipt:
        return
    for reader in (africastalking_receipt, twilio_receipt):
        try:
            receipt = reader(fields)
        except BadReceipt:
            continue
        assert receipt.result in (None, "delivered", "bounced", "failed")


# ---------------------------------------------------------------------------------------------
# Africa's Talking's callback URL token


def test_the_callback_token_is_stable_secret_bound_and_checked() -> None:
    token = callback_token(SECRET)
    assert token == callback_token(SECRET) and len(token) == 32
    assert set(token) <= set(string.ascii_lowercase + "234567")
    assert token != callback_token(SECRET + "x")
    assert callback_token_valid(SECRET, token)
    assert callback_token_valid(SECRET, token.upper())  # a proxy that changes case
    assert not callback_token_valid(SECRET, callback_token("another-secret-0123456789abcdef"))
    assert not callback_token_valid(SECRET, token[:-1])
    assert not callback_token_valid(SECRET, token[:-1] + ("a" if token[-1] != "a" else "b"))
    assert not callback_token_valid(SECRET, "é" * 32)
    url = africastalking_callback_url("https://pulse.example.org/", SECRET)
    assert url == "https://pulse.example.org" + AFRICASTALKING_ROUTE.format(token=token)


# ---------------------------------------------------------------------------------------------
# VERP tokens

BOUNCES = BounceAddresses(VerpSigner(SECRET), "bounces.example.org")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=128))
def test_a_mails_bounce_address_round_trips(nid: str) -> None:
    token, address = BOUNCES.for_mail(nid)
    assert len(token) == VERP_TOKEN_LEN and set(token) <= set(string.ascii_lowercase + "234567")
    assert address == f"bounces+{token}@bounces.example.org"
    assert len(address.partition("@")[0]) <= 64  # an SMTP local part (RFC 5321)
    assert BOUNCES.for_mail(nid) == (token, address)  # the same mail, the same address
    assert BOUNCES.token_of(address) == token
    assert BOUNCES.token_of(f"<{address.upper()}>") == token  # an MTA that upper-cases
    assert BOUNCES.token_of(address.replace("bounces.example.org", "BOUNCES.example.org.")) == token


def test_distinct_mails_get_distinct_tokens() -> None:
    tokens = {BOUNCES.for_mail(f"n-{i}")[0] for i in range(2000)}
    assert len(tokens) == 2000
    assert VerpSigner(SECRET).token("n-1", "EMAIL") != VerpSigner(SECRET).token("n-1", "SMS")


def test_forged_and_foreign_bounce_addresses_are_not_ours() -> None:
    token, _ = BOUNCES.for_mail("n-1")
    other = BounceAddresses(VerpSigner("another-secret-0123456789abcdef"), "bounces.example.org")
    flipped = token[:-1] + ("a" if token[-1] != "a" else "b")
    for candidate in (
        other.for_mail("n-1")[1],  # minted with another secret
        f"bounces+{flipped}@bounces.example.org",
        f"bounces+{token[:16]}{'a' * 8}@bounces.example.org",  # the id, a made-up MAC
        f"bounces+{token}x@bounces.example.org",
        f"bounces+{token}@example.org",  # another domain
        f"bounces+{token}@evil.bounces.example.org",
        f"{token}@bounces.example.org",  # no prefix
        "postmaster@bounces.example.org",
        f"bounces+{token[:-1]}1@bounces.example.org",  # 1 is not base32
        f"bounces+{'é' * 24}@bounces.example.org",
        "bounces.example.org",
        "",
    ):
        assert BOUNCES.token_of(candidate) is None, candidate


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_lowercase + "234567", min_size=VERP_TOKEN_LEN, max_size=VERP_TOKEN_LEN))
def test_made_up_tokens_do_not_pass(token: str) -> None:
    # A 40-bit MAC: a random token passes once in a trillion.
    assert BOUNCES.token_of(f"bounces+{token}@bounces.example.org") is None


# ---------------------------------------------------------------------------------------------
# DSNs (RFC 3464), built as mail servers build them


def _block(**fields: str) -> Message:
    block = Message()
    for name, value in fields.items():
        block[name.replace("_", "-")] = value
    return block


def dsn(
    *recipients: tuple[str, str],
    report_type: str = "delivery-status",
    status_type: str = "message/delivery-status",
    final_recipient: str = "rfc822; amani@example.org",
    original_recipient: str | None = "rfc822;amani@example.org",
) -> bytes:
    """A bounce as Postfix writes one: the human part, the delivery status (a per-message block
    and a block per recipient: (Action, Status)), the original's headers."""
    report = MIMEMultipart("report", report_type=report_type)
    report["From"] = "MAILER-DAEMON@mx.example.org (Mail Delivery System)"
    report["To"] = "bounces+x@bounces.example.org"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not be delivered."))
    status = Message()
    status["Content-Type"] = status_type
    status["Content-Description"] = "Delivery report"
    blocks: list[Message | str] = [
        _block(Reporting_MTA="dns; mx.example.org", Arrival_Date="Mon, 3 Mar 2025 10:00:00 +0300")
    ]
    for action, code in recipients:
        fields = {"Final_Recipient": final_recipient}
        if original_recipient is not None:
            fields["Original_Recipient"] = original_recipient
        blocks.append(
            _block(
                **fields,
                Action=action,
                Status=code,
                Remote_MTA="dns; mail.example.org",
                Diagnostic_Code=f"smtp; 550 {code} <amani@example.org>: Recipient address rejected",
            )
        )
    if status_type == "message/delivery-status":
        status.set_payload(blocks)  # the email package writes (and reads) its blocks itself
    else:
        status.set_payload("\n".join(str(b) for b in blocks))
    report.attach(status)
    headers = Message()
    headers["Content-Type"] = "text/rfc822-headers"
    headers.set_payload("From: Elimu Pulse <no-reply@pulse.example.org>\nSubject: Your streak\n")
    report.attach(headers)
    return report.as_bytes()


@pytest.mark.parametrize(
    ("recipients", "result", "reason"),
    [
        ([("failed", "5.1.1")], "bounced", "dsn_5.1.1"),
        ([("failed", "5.2.2")], "bounced", "dsn_5.2.2"),  # mailbox full for good: still 5.x.x
        ([("failed", "4.4.7")], "failed", "dsn_4.4.7"),  # gave up retrying: not the address's fault
        ([("failed", "")], "failed", "dsn_failed"),
        ([("Failed", "5.1.1 (user unknown)")], "bounced", "dsn_5.1.1"),
        ([("delayed", "4.4.1")], None, None),
        ([("relayed", "2.0.0")], None, None),
        ([("delivered", "2.0.0")], "delivered", None),
        ([("expanded", "2.0.0")], "delivered", None),
        ([("delivered", "2.0.0"), ("failed", "5.1.1")], "bounced", "dsn_5.1.1"),  # the worst word
        ([("delayed", "4.4.1"), ("failed", "4.4.7")], "failed", "dsn_4.4.7"),
    ],
)
def test_a_dsn_says_how_the_mail_went(
    recipients: list[tuple[str, str]], result: str | None, reason: str | None
) -> None:
    bounce = parse_dsn(dsn(*recipients))
    assert (bounce.result, bounce.reason) == (result, reason)
    assert bounce.hard == (result == "bounced")


@pytest.mark.parametrize(
    ("code", "dead"),
    [
        ("5.1.1", True),  # no such mailbox
        ("5.1.2", True),  # no such domain
        ("5.1.10", True),  # null MX: the domain takes no mail
        ("5.2.1", False),  # mailbox disabled: may be temporary (RFC 3463)
        ("5.2.2", False),  # mailbox full
        ("5.7.1", False),  # refused by policy (spam, a block list): not the address
        ("5.7.26", False),  # DMARC failed: our fault
        ("5.7.0", False),
        ("5.4.4", False),  # no route: DNS trouble
        ("5.0.0", False),
        ("5.3.0", False),
    ],
)
def test_only_a_dead_address_code_suppresses_though_every_5xx_is_bounced(code: str, dead: bool) -> None:
    bounce = parse_dsn(dsn(("failed", code)))
    assert (bounce.result, bounce.reason) == ("bounced", f"dsn_{code}")
    assert bounce.suppresses("amani@example.org") is dead
    assert bounce.suppresses("Amani@Example.ORG ") is dead  # compared lower-cased, trimmed


def test_a_dead_address_is_suppressed_only_when_the_dsn_names_the_address_the_mail_went_to() -> None:
    # The Final-Recipient (the mailbox the server tried) or the Original-Recipient (what we sent
    # to, kept when a forward rewrote it) must be the mail's address.
    rewritten = parse_dsn(dsn(("failed", "5.1.1"), final_recipient="rfc822; old-alias@forward.example.net"))
    assert rewritten.suppresses("amani@example.org")
    assert not rewritten.suppresses("old-alias@example.org")
    other = parse_dsn(
        dsn(("failed", "5.1.1"), final_recipient="rfc822;Someone@Example.org", original_recipient=None)
    )
    assert other.result == "bounced"
    assert other.suppresses("someone@example.org")
    assert not other.suppresses("amani@example.org")  # a bounce of someone else's address
    assert not other.suppresses("")
    # Any spacing and case in the field; an address type we do not know names nothing.
    spaced = parse_dsn(
        dsn(("failed", "5.1.1"), final_recipient="RFC822 ;  <Amani@Example.org> ", original_recipient=None)
    )
    assert spaced.suppresses("amani@example.org")
    x400 = parse_dsn(
        dsn(("failed", "5.1.1"), final_recipient="x400; amani@example.org", original_recipient=None)
    )
    assert not x400.suppresses("amani@example.org")
    # A soft failure and a policy refusal name nothing dead, whoever they name.
    assert not parse_dsn(dsn(("failed", "4.4.7"))).suppresses("amani@example.org")
    assert parse_dsn(dsn(("delivered", "2.0.0"))).dead == frozenset()


def test_with_several_recipients_only_the_dead_ones_are_named() -> None:
    report = MIMEMultipart("report", report_type="delivery-status")
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload(
        [
            _block(Reporting_MTA="dns; mx.example.org"),
            _block(Final_Recipient="rfc822; dead@example.org", Action="failed", Status="5.1.1"),
            _block(Final_Recipient="rfc822; blocked@example.org", Action="failed", Status="5.7.1"),
        ]
    )
    report.attach(status)
    bounce = parse_dsn(report.as_bytes())
    assert bounce.dead == frozenset({"dead@example.org"})


def _nested(depth: int, *, newline: bytes = b"\r\n") -> bytes:
    """A DSN whose returned mail is multiparts in multiparts ``depth`` deep."""
    inner = b"Content-Type: text/plain" + newline + newline + b"x" + newline
    for level in range(depth):
        b = f"b{level}".encode()
        inner = (
            b"Content-Type: multipart/mixed; boundary=" + b + newline + newline
            + b"--" + b + newline + inner + b"--" + b + b"--" + newline
        )  # fmt: skip
    return (
        dsn(("failed", "5.1.1"))
        .replace(b"Content-Type: text/rfc822-headers", b"Content-Type: message/rfc822")
        .replace(b"From: Elimu Pulse", inner + b"From: Elimu Pulse", 1)
    )


def test_a_dsn_returning_a_whole_mail_is_read() -> None:
    # The report, the returned mail, its alternatives: as deep as real bounces go.
    original = EmailMessage()
    original["Subject"] = "Your streak"
    original.set_content("text")
    original.add_alternative("<p>html</p>", subtype="html")
    report = MIMEMultipart("report", report_type="delivery-status")
    report.attach(MIMEText("Undeliverable."))
    status = Message()
    status["Content-Type"] = "message/delivery-status"
    status.set_payload([_block(Reporting_MTA="dns; mx"), _block(
        Final_Recipient="rfc822; amani@example.org", Action="failed", Status="5.1.1"
    )])  # fmt: skip
    report.attach(status)
    returned = Message()
    returned["Content-Type"] = "message/rfc822"
    returned.set_payload([original])
    report.attach(returned)
    bounce = parse_dsn(report.as_bytes())
    assert bounce.result == "bounced" and bounce.suppresses("amani@example.org")
    assert parse_dsn(_nested(2)).result == "bounced"


@pytest.mark.parametrize(
    "raw",
    [
        _nested(MAX_MIME_DEPTH + 1),
        _nested(MAX_MIME_PARTS + 1),  # refused before the parser sees it
        _nested(400),
        # Bare CR line ends: the parser splits on them too.
        _nested(400, newline=b"\r"),
        # Many parts side by side, shallow.
        dsn(("failed", "5.1.1")).replace(
            b"Content-Type: text/rfc822-headers",
            b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
            + b"--p\r\n\r\nx\r\n" * (MAX_MIME_PARTS + 1)
            + b"--p--\r\nContent-Type: text/plain",
        ),
    ],
    ids=["too-deep", "too-many-containers", "very-deep", "bare-cr", "too-many-parts"],
)
def test_a_dsn_nested_too_deep_or_with_too_many_parts_is_refused(raw: bytes) -> None:
    with pytest.raises(DsnTooComplex):
        parse_dsn(raw)


def test_a_parser_out_of_stack_is_a_dsn_too_complex(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.receipts

    def overflow(message: Message) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(models.receipts, "_check_structure", overflow)
    with pytest.raises(DsnTooComplex):
        parse_dsn(dsn(("failed", "5.1.1")))


def test_a_dsn_is_at_most_64_kib() -> None:
    assert MAX_DSN_BYTES == 64 * 1024
    raw = dsn(("failed", "5.1.1"))
    assert parse_dsn(raw + b" " * (MAX_DSN_BYTES - len(raw))).result == "bounced"
    with pytest.raises(BadReceipt):
        parse_dsn(raw + b" " * (MAX_DSN_BYTES - len(raw) + 1))


#: A bounce as it comes over the wire from Postfix (CRLF, the blocks written by hand).
POSTFIX_BOUNCE = b"""\
Return-Path: <>\r
Date: Mon,  3 Mar 2025 10:00:05 +0300 (EAT)\r
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: bounces+abc@bounces.example.org\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary="8E3A1C0B2.1741000805/mx.example.org"\r
\r
This is a MIME-encapsulated message.\r
\r
--8E3A1C0B2.1741000805/mx.example.org\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients.\r
\r
--8E3A1C0B2.1741000805/mx.example.org\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.org\r
X-Postfix-Queue-ID: 8E3A1C0B2\r
Arrival-Date: Mon,  3 Mar 2025 10:00:04 +0300 (EAT)\r
\r
Final-Recipient: rfc822; amani@example.org\r
Original-Recipient: rfc822;amani@example.org\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mail.example.org\r
Diagnostic-Code: smtp; 550 5.1.1 <amani@example.org>: Recipient address\r
    rejected: User unknown in virtual mailbox table\r
\r
--8E3A1C0B2.1741000805/mx.example.org\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
From: Elimu Pulse <no-reply@pulse.example.org>\r
Subject: Your 6-day streak ends tonight\r
\r
--8E3A1C0B2.1741000805/mx.example.org--\r
"""


def test_a_postfix_bounce_off_the_wire_is_a_hard_bounce() -> None:
    bounce = parse_dsn(POSTFIX_BOUNCE)
    assert (bounce.result, bounce.reason, bounce.hard) == ("bounced", "dsn_5.1.1", True)


def test_an_internationalised_dsn_is_read_too() -> None:
    # RFC 6533: global-delivery-status, UTF-8 in the blocks.
    raw = dsn(
        ("failed", "5.1.1"),
        status_type="message/global-delivery-status",
        final_recipient="utf-8; amaní@example.org",
    )
    assert parse_dsn(raw).result == "bounced"
    # Off the wire from an SMTPUTF8 server: raw UTF-8 in the blocks, which the parser does not
    # split for this type (they are read from the part's body).
    raw8 = POSTFIX_BOUNCE.replace(b"message/delivery-status", b"message/global-delivery-status").replace(
        b"rfc822; amani@example.org", "utf-8; amaní@example.org".encode()
    )
    assert "amaní".encode() in raw8
    assert (parse_dsn(raw8).result, parse_dsn(raw8).reason) == ("bounced", "dsn_5.1.1")
    delayed = raw8.replace(b"Action: failed", b"Action: delayed").replace(b"Status: 5.1.1", b"Status: 4.4.1")
    assert parse_dsn(delayed).result is None


def _plain(subject: str, body: str) -> bytes:
    mail = EmailMessage(policy=SMTP)
    mail["From"] = "amani@example.org"
    mail["To"] = "bounces+x@bounces.example.org"
    mail["Subject"] = subject
    mail.set_content(body)
    return mail.as_bytes()


@pytest.mark.parametrize(
    "raw",
    [
        _plain("Out of office", "I am away until Monday."),  # an auto-reply
        _plain("Undelivered Mail", "Action: failed\nStatus: 5.1.1\n"),  # DSN words, not a DSN
        dsn(("failed", "5.1.1"), report_type="disposition-notification"),  # a read receipt
        dsn(("failed", "5.1.1"), status_type="text/plain"),  # no delivery-status part
        dsn(),  # a report that names no recipient
        b"",
        b"\x00\xff" * 100,
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary at all",
        dsn(("failed", "5.1.1")) + b"x" * MAX_DSN_BYTES,
    ],
)
def test_what_is_not_a_dsn_is_refused(raw: bytes) -> None:
    with pytest.raises(BadReceipt):
        parse_dsn(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
@example(b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n" * 50)
@example(
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 400
)
def test_any_mail_is_read_or_refused_never_a_crash(raw: bytes) -> None:
    try:
        bounce = parse_dsn(raw)
    except BadReceipt:
        return
    assert bounce.result in (None, "delivered", "bounced", "failed")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_any_action_and_status_text_is_read(action: str, status: str) -> None:
    def clean(text: str) -> str:
        return "".join(c for c in text if c.isprintable() and c not in ":")

    try:
        raw = dsn((clean(action) or "x", clean(status) or "x"))
    except (ValueError, UnicodeError):
        return  # the email package will not write such a header: nothing to read
    try:
        bounce = parse_dsn(raw)
    except BadReceipt:
        return
    assert bounce.result in (None, "delivered", "bounced", "failed")
    if bounce.result == "bounced":
        assert bounce.reason is not None and bounce.reason.startswith("dsn_5.")


# ---------------------------------------------------------------------------------------------
# The index entry and its report


def test_an_index_entry_reads_back_and_reports_with_the_sends_id() -> None:
    sent = SentMessage("n-1", "SMS", "streak_risk", "streak_risk.v2", "B", "u-1")
    stored = {k.encode(): v.encode() for k, v in sent.to_fields().items()}  # as Redis gives it back
    assert SentMessage.from_fields(stored) == sent
    assert SentMessage.from_fields({}) is None
    assert SentMessage.from_fields({b"final": b"delivered"}) is None  # only a mark: not an entry
    report = sent.report("bounced", "sms_error_30003")
    assert report == delivery_report(
        "n-1", "SMS", "bounced", type="streak_risk", template="streak_risk.v2", variant="B",
        reason="sms_error_30003",
    )  # fmt: skip
    assert report["id"] == "dlv:bounced:SMS:n-1"


def test_the_analytics_count_a_later_receipt_beside_the_send_and_a_repeat_once() -> None:
    ledger = OutcomeLedger()
    sent = SentMessage("n-1", "EMAIL", "streak_risk", "streak_risk.v2", "B", "u-1", "amani@example.org")
    ledger.apply(
        delivery_report("n-1", "EMAIL", "sent", type="streak_risk", template="streak_risk.v2", variant="B")
    )
    ledger.apply(sent.report("bounced", "dsn_5.1.1"))
    ledger.apply(sent.report("bounced", "dsn_5.1.1"))  # the mail server sent the DSN twice
    counts = ledger.stats.deliveries["EMAIL"]
    assert (counts["sent"], counts["bounced"], counts["delivered"]) == (1, 1, 0)
    assert ledger.stats.deliveries_by_template["streak_risk.v2"]["B"]["bounced"] == 1
