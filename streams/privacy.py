"""A user's data on request (docs/security.md "A user's data"): export what every state table holds
about a user, or erase it everywhere.

Inputs are ``erase_user`` and ``export_user`` commands on ``user-commands``: signed by the API
(infra/signing.py), keyed by the user, so the worker that owns the user's state applies them, in
order with that user's other commands. The growth slice takes the same topic: it re-routes a
misrouted command of any type and dead-letters what does not decode, so this processor skips both
and answers for nothing else.

Erasing deletes the user's key in every per-user table (a tombstone in each changelog: a
recovering worker never loads the user again) and takes the user out of the in-memory caches
built from those tables (``forget``); the slice then removes the Redis views (streams/erasure.py)
and answers. Pure orchestration over the stores, like the other processors: no I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from infra import topics
from infra.commands import EXPORT_USER, PRIVACY_COMMANDS
from models.events import InvalidEvent, check_id
from streams.growth import MAX_COMMAND_ID_BYTES
from streams.records import DeadLetter, Record, apply_guarded, misrouted_owner
from streams.stores import Store


@dataclass(frozen=True, slots=True)
class Traces:
    """What only the user's state knew of where Redis holds them, read before it is erased."""

    #: Their referral code (its key maps the code to them).
    referral_code: str | None = None
    #: The group boards (kind, digest) they are on or left lately (models/boards.py).
    groups: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Erasure:
    command_id: str
    user_id: str
    #: The tables that held a state for the user (the others had nothing to erase).
    tables: tuple[str, ...]
    traces: Traces


@dataclass
class PrivacyOutcome:
    erased: list[Erasure] = field(default_factory=list)
    #: (command id, the export's answer).
    exports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: The tables whose tombstones no other slice flushes in this batch (its slice did not run).
    unflushed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.erased or self.exports or self.dead_letters)


def _now_ms() -> int:
    return int(time.time() * 1000)


class PrivacyProcessor:
    """Applies the privacy commands to ``tables`` (name -> the per-user store)."""

    def __init__(
        self,
        tables: Mapping[str, Store[Any]],
        forget: Sequence[Callable[[str], None]],
        partitions_for: Callable[[str], int],
        traces_of: Callable[[str], Traces],
    ) -> None:
        self.tables = dict(tables)
        self.forget = tuple(forget)
        self.partitions_for = partitions_for
        self.traces_of = traces_of

    def process(self, records: Iterable[Record]) -> PrivacyOutcome:
        out = PrivacyOutcome()
        for rec in records:
            if rec.topic == topics.USER_COMMANDS:
                apply_guarded(rec, lambda r: self._command(r, out), out.dead_letters)
        return out

    def _command(self, rec: Record, out: PrivacyOutcome) -> None:
        cmd = _privacy_command(rec)
        if cmd is None:
            return  # growth's, or refused by growth
        user_id, command_id = cmd["user_id"], cmd["command_id"]
        try:
            if misrouted_owner(rec, user_id, self.partitions_for(rec.topic)) is not None:
                return  # growth re-routes it to the owner's partition, where it is applied
        except InvalidEvent:
            return  # a key that is not the user: growth dead-letters it
        if cmd["type"] == EXPORT_USER:
            out.exports.append((command_id, self.export(user_id)))
        else:
            out.erased.append(self.erase(command_id, user_id))

    def export(self, user_id: str) -> dict[str, Any]:
        """Every table's state of ``user_id`` as its changelog holds it (None where it has none)."""
        states: dict[str, Any] = {}
        for name, store in self.tables.items():
            state = store.get(user_id)
            states[name] = None if state is None else state.to_dict()
        return {"ok": True, "user_id": user_id, "tables": states}

    def erase(self, command_id: str, user_id: str) -> Erasure:
        held = tuple(name for name, store in self.tables.items() if store.get(user_id) is not None)
        traces = self.traces_of(user_id)  # before the states go
        for store in self.tables.values():
            store.delete(user_id)
        for forget in self.forget:
            forget(user_id)
        return Erasure(command_id, user_id, held, traces)


def _privacy_command(rec: Record) -> dict[str, Any] | None:
    """The command ``rec`` holds if it is a well-formed privacy command, else None. Growth reads
    every command first and dead-letters a malformed one (streams/growth.py ``_command``), so
    one bad record makes one letter."""
    try:
        cmd = orjson.loads(rec.value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(cmd, dict) or cmd.get("type") not in PRIVACY_COMMANDS:
        return None
    user_id, command_id = cmd.get("user_id"), cmd.get("command_id")
    if not isinstance(user_id, str) or not isinstance(command_id, str) or not command_id.isprintable():
        return None
    if len(command_id.encode("utf-8", "surrogatepass")) > MAX_COMMAND_ID_BYTES:
        return None
    try:
        check_id(user_id, "user_id")
    except InvalidEvent:
        return None
    return cmd
