"""Kafka client security settings: what each client library is handed, and what is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient

from infra.kafka_auth import (
    KafkaAuthError,
    KafkaSecurity,
    admin_security,
    client_security,
    faust_credentials,
)

SCRAM = {"ELIMU_KAFKA_USERNAME": "elimu", "ELIMU_KAFKA_PASSWORD": "s3cret-pass"}


def test_unset_means_plaintext_as_the_embedded_broker_speaks() -> None:
    assert client_security({}) == {"security_protocol": "PLAINTEXT"}
    assert admin_security({}) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials({}) is None


def test_a_username_alone_selects_sasl_plaintext_with_scram_sha_512() -> None:
    assert client_security(SCRAM) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "elimu",
        "sasl_plain_password": "s3cret-pass",
    }
    assert admin_security(SCRAM) == client_security(SCRAM)


def test_explicit_settings_are_case_insensitive() -> None:
    env = {
        **SCRAM,
        "ELIMU_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "ELIMU_KAFKA_SASL_MECHANISM": "scram-sha-256",
    }
    sec = KafkaSecurity.from_env(env)
    assert (sec.protocol, sec.mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


def test_sasl_ssl_verifies_the_broker_certificate_and_host_name(tmp_path: Path) -> None:
    env = {**SCRAM, "ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    kwargs = client_security(env)
    assert kwargs["security_protocol"] == "SASL_SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert isinstance(admin_security(env)["ssl_context"], ssl.SSLContext)

    creds = faust_credentials(env)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"  # Faust switches protocol on the ssl_context
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "elimu",
        "s3cret-pass",
        "SCRAM-SHA-512",
    )

    missing = {**env, "ELIMU_KAFKA_SSL_CAFILE": str(tmp_path / "nope.pem")}
    with pytest.raises(FileNotFoundError):
        client_security(missing)  # a wrong CA path fails at start-up, not as a TLS error later


def test_faust_credentials_for_sasl_plaintext() -> None:
    creds = faust_credentials(SCRAM)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.mechanism.value == "SCRAM-SHA-512"


def test_plain_tls_without_sasl() -> None:
    env = {"ELIMU_KAFKA_SECURITY_PROTOCOL": "SSL"}
    assert set(client_security(env)) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(env), faust.SSLCredentials)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "ELIMU_KAFKA_USERNAME"),
        ({"ELIMU_KAFKA_USERNAME": "elimu"}, "ELIMU_KAFKA_PASSWORD"),
        ({"ELIMU_KAFKA_PASSWORD": "x"}, "would be ignored"),
        ({**SCRAM, "ELIMU_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "would be ignored"),
        ({"ELIMU_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "would be ignored"),
        ({**SCRAM, "ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL"}, "ELIMU_KAFKA_SECURITY_PROTOCOL='SASL'"),
        ({**SCRAM, "ELIMU_KAFKA_SASL_MECHANISM": "GSSAPI"}, "ELIMU_KAFKA_SASL_MECHANISM='GSSAPI'"),
        ({**SCRAM, "ELIMU_KAFKA_SASL_MECHANISM": "PLAIN"}, "in clear"),
        ({**SCRAM, "ELIMU_KAFKA_SSL_CAFILE": "/ca.pem"}, "ELIMU_KAFKA_SSL_CAFILE"),
        ({"ELIMU_KAFKA_SSL_CAFILE": "/ca.pem"}, "ELIMU_KAFKA_SSL_CAFILE"),
    ],
)
def test_half_configured_security_is_refused_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(KafkaAuthError, match=names.replace("(", r"\(")):
        KafkaSecurity.from_env(env)


def test_plain_is_allowed_over_tls_only() -> None:
    env = {**SCRAM, "ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ELIMU_KAFKA_SASL_MECHANISM": "PLAIN"}
    assert client_security(env)["sasl_mechanism"] == "PLAIN"


def test_the_password_never_shows_in_a_repr() -> None:
    sec = KafkaSecurity.from_env(SCRAM)
    assert "s3cret-pass" not in repr(sec)
    assert "s3cret-pass" not in repr(faust_credentials(SCRAM))


async def test_every_client_library_accepts_the_keyword_arguments() -> None:
    """The names match what aiokafka and kafka-python take (a typo would only fail on a real broker)."""
    for env in (SCRAM, {**SCRAM, "ELIMU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}):
        AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **client_security(env))  # validates in __init__
        assert set(admin_security(env)) <= set(KafkaAdminClient.DEFAULT_CONFIG)
