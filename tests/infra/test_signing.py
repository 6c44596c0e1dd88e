"""`infra.signing`: what a signature binds, and that nothing but the secret's holder can make one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infra.signing import SIGNATURE_HEADER, RecordSigner
from infra.topics import BEHAVIOR_EVENTS, BROADCAST, USER_COMMANDS

SIGNER = RecordSigner("the-secret")


def test_internal_records_verify_only_with_the_engine_signature() -> None:
    headers = SIGNER.headers(USER_COMMANDS, b"u-1", b'{"type":"grant"}')
    assert [name for name, _ in headers] == [SIGNATURE_HEADER]
    assert SIGNER.verify(USER_COMMANDS, b"u-1", b'{"type":"grant"}', headers)
    assert not SIGNER.verify(USER_COMMANDS, b"u-1", b'{"type":"grant"}', None)
    assert not SIGNER.verify(USER_COMMANDS, b"u-1", b'{"type":"grant"}', [("other", headers[0][1])])
    forged = RecordSigner("guessed").headers(USER_COMMANDS, b"u-1", b'{"type":"grant"}')
    assert not SIGNER.verify(USER_COMMANDS, b"u-1", b'{"type":"grant"}', forged)


def test_a_signature_binds_topic_key_and_value() -> None:
    headers = SIGNER.headers(USER_COMMANDS, b"u-1", b"v")
    assert not SIGNER.verify(USER_COMMANDS, b"u-2", b"v", headers)
    assert not SIGNER.verify(USER_COMMANDS, b"u-1", b"w", headers)
    assert not SIGNER.verify(BROADCAST, b"u-1", b"v", headers)
    # A tombstone is not an empty value, and field boundaries count.
    assert not SIGNER.verify(USER_COMMANDS, b"u-1", None, SIGNER.headers(USER_COMMANDS, b"u-1", b""))
    assert not SIGNER.verify(USER_COMMANDS, b"u-1v", b"", SIGNER.headers(USER_COMMANDS, b"u-1", b"v"))


def test_public_topics_need_no_signature() -> None:
    assert SIGNER.headers(BEHAVIOR_EVENTS, b"u", b"v") == []
    assert SIGNER.verify(BEHAVIOR_EVENTS, b"u", b"v", None)


@given(st.binary(max_size=64), st.binary(max_size=256), st.binary(max_size=64))
def test_no_arbitrary_header_verifies(key: bytes, value: bytes, sig: bytes) -> None:
    assert not SIGNER.verify(USER_COMMANDS, key, value, [(SIGNATURE_HEADER, sig)])
