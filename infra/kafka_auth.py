"""How the engine's Kafka clients authenticate: SASL/SCRAM (optionally over TLS) from the env.

One parse of the ``ELIMU_KAFKA_*`` security settings, handed to each client library in the
shape it takes: keyword arguments for aiokafka (API producer, feeds, `elimu produce`) and
kafka-python (the lag reader), credentials for Faust's ``broker_credentials`` (the worker).
Unset means PLAINTEXT, as the embedded broker speaks. A half-configured setting is refused at
start-up with the variable's name: a client that silently fell back to PLAINTEXT would only
fail later, as an opaque disconnect from a broker that demands SASL.

Variables: ``ELIMU_KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL; default
SASL_PLAINTEXT when a username is set, else PLAINTEXT), ``ELIMU_KAFKA_SASL_MECHANISM``
(SCRAM-SHA-512 by default, SCRAM-SHA-256, or PLAIN over SASL_SSL only), ``ELIMU_KAFKA_USERNAME``
and ``ELIMU_KAFKA_PASSWORD`` (the SCRAM principal), ``ELIMU_KAFKA_SSL_CAFILE`` (the PEM bundle to
trust for SSL/SASL_SSL; default the system's CAs).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"
_SASL = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS = frozenset({"SASL_SSL", "SSL"})

PROTOCOL_VAR = "ELIMU_KAFKA_SECURITY_PROTOCOL"
MECHANISM_VAR = "ELIMU_KAFKA_SASL_MECHANISM"
USERNAME_VAR = "ELIMU_KAFKA_USERNAME"
PASSWORD_VAR = "ELIMU_KAFKA_PASSWORD"
CAFILE_VAR = "ELIMU_KAFKA_SSL_CAFILE"


class KafkaAuthError(ValueError):
    """The Kafka security settings contradict each other or name something unsupported."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    #: Kept out of repr: settings get logged.
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol in _SASL

    @property
    def tls(self) -> bool:
        return self.protocol in _TLS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        e = os.environ if env is None else env
        username = e.get(USERNAME_VAR) or None
        password = e.get(PASSWORD_VAR) or None
        cafile = e.get(CAFILE_VAR) or None
        protocol = (e.get(PROTOCOL_VAR) or ("SASL_PLAINTEXT" if username else "PLAINTEXT")).upper()
        if protocol not in PROTOCOLS:
            raise KafkaAuthError(f"{PROTOCOL_VAR}={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        mechanism_set = e.get(MECHANISM_VAR) or None
        if protocol not in _SASL:
            if username or password or mechanism_set:
                raise KafkaAuthError(
                    f"{USERNAME_VAR}/{PASSWORD_VAR}/{MECHANISM_VAR} are set but {PROTOCOL_VAR} is "
                    f"{protocol}: they would be ignored; use SASL_PLAINTEXT or SASL_SSL"
                )
            if cafile and protocol != "SSL":
                raise KafkaAuthError(f"{CAFILE_VAR} is set but {PROTOCOL_VAR} is {protocol}")
            return cls(protocol, cafile=cafile)
        mechanism = (mechanism_set or DEFAULT_MECHANISM).upper()
        if mechanism not in MECHANISMS:
            raise KafkaAuthError(f"{MECHANISM_VAR}={mechanism!r}: expected one of {', '.join(MECHANISMS)}")
        if mechanism == "PLAIN" and protocol != "SASL_SSL":
            # PLAIN sends the password itself; SCRAM proves it without sending it.
            raise KafkaAuthError(f"{MECHANISM_VAR}=PLAIN sends the password in clear: use SASL_SSL or SCRAM")
        if not username or not password:
            raise KafkaAuthError(f"{PROTOCOL_VAR}={protocol} needs {USERNAME_VAR} and {PASSWORD_VAR}")
        if cafile and protocol != "SASL_SSL":
            raise KafkaAuthError(f"{CAFILE_VAR} is set but {PROTOCOL_VAR} is {protocol}")
        return cls(protocol, mechanism, username, password, cafile)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifying server certificates and host names (against ``cafile`` or the system CAs)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.cafile)

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """For ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """For kafka-python's ``KafkaAdminClient`` and ``KafkaConsumer`` (infra/lag.py): the same
        keyword names as aiokafka's today, kept apart so either client can diverge."""
        return self.aiokafka_kwargs()

    def faust_credentials(self) -> Any:
        """For ``faust.App(broker_credentials=...)``: None for PLAINTEXT."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=self.ssl_context(),  # given → Faust speaks SASL_SSL
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


def client_security(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments from the environment (``**client_security()`` at each client)."""
    return KafkaSecurity.from_env(env).aiokafka_kwargs()


def admin_security(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments from the environment (the lag reader's admin and consumer)."""
    return KafkaSecurity.from_env(env).kafka_python_kwargs()


def faust_credentials(env: Mapping[str, str] | None = None) -> Any:
    """``broker_credentials`` for the worker's ``faust.App`` from the environment, or None."""
    return KafkaSecurity.from_env(env).faust_credentials()
