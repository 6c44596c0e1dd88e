"""`infra.redis_errors`: which Redis failures are retried and which are reported and skipped."""

from __future__ import annotations

import pytest
from redis import exceptions as rx

from infra.redis_errors import RETRIED, RefusedWrites, kind_of, kind_of_reply


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (rx.ConnectionError("Connection refused"), "connection"),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), "connection"),
        (ConnectionResetError(), "connection"),
        (rx.TimeoutError("Timeout reading from socket"), "timeout"),
        (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "oom"),
        (rx.ReadOnlyError("You can't write against a read only replica."), "readonly"),
        (rx.NoScriptError("No matching script."), "noscript"),
        (rx.ResponseError("BUSY Redis is busy running a script."), "busy"),
        (rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "wrongtype"),
        (
            rx.ResponseError(
                "Error running script (call to f_3c1): @user_script:12: WRONGTYPE Operation against a key"
            ),
            "wrongtype",
        ),
        (rx.ResponseError("ERR value is not an integer or out of range"), "response"),
        (rx.DataError("Invalid input of type: 'dict'"), "data"),
    ],
)
def test_each_failure_has_its_kind(exc: Exception, kind: str) -> None:
    assert kind_of(exc) == kind


def test_only_failures_a_retry_can_fix_are_retried() -> None:
    assert {"connection", "timeout", "readonly", "oom", "noscript", "busy"} == RETRIED
    assert "wrongtype" not in RETRIED and "response" not in RETRIED


def test_a_key_named_like_an_error_code_does_not_change_the_kind() -> None:
    """Keys hold client-chosen ids; a user named OOM must not turn a WRONGTYPE into a refusal
    that is retried forever."""
    piped = rx.ResponseError(
        "Command # 1 (SET elimu:u:{OOM}:state x) of pipeline caused error: WRONGTYPE Operation against a key"
    )
    assert kind_of(piped) == "wrongtype"
    refused = RefusedWrites([("WRONGTYPE Operation against a key", "SET elimu:u:{OOM READONLY}:state")])
    assert refused.kind == "wrongtype"
    assert kind_of_reply("ERR something about OOM") == "response"


def test_a_script_refusal_reads_redis_6_and_7_replies() -> None:
    assert kind_of_reply("@user_script: 4: -OOM command not allowed when used memory > 'maxmemory'.") == "oom"
    assert kind_of_reply("OOM command not allowed when used memory > 'maxmemory'.") == "oom"
    assert kind_of_reply("WRONGTYPE Operation against a key holding the wrong kind of value") == "wrongtype"


def test_refused_writes_take_the_kind_a_retry_fixes_first_and_bound_their_message() -> None:
    mixed = RefusedWrites([("WRONGTYPE x", "SET a"), ("OOM command not allowed", "SET b")])
    assert mixed.kind == "oom"
    many = RefusedWrites([("WRONGTYPE x", f"SET {'k' * 1000}{i}") for i in range(50)])
    assert many.kind == "wrongtype"
    assert len(str(many)) < 2500 and "+45 more" in str(many)
    assert isinstance(many, rx.ResponseError)
