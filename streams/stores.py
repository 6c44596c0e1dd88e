"""The state store every slice uses, and an in-memory one for tests and in-process benches.

A store holds one slice's per-key state objects in memory and logs changes to a changelog in
bulk: ``put``/``delete`` are immediate in memory, ``flush`` hands the batch's changes to the
changelog (and with ``durable`` waits until Kafka has them). ``streams.tables.TableStore`` is the
worker's, over a Faust table; ``MemoryStore`` keeps its changelog in a list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Generic, Protocol, TypeVar

from streams.records import owner_partition

S = TypeVar("S")


class Store(Protocol[S]):
    def get(self, key: str) -> S | None: ...

    def put(self, key: str, state: S) -> None: ...

    def delete(self, key: str) -> None: ...

    def items(self) -> Iterable[tuple[str, S]]: ...

    def values(self) -> Iterable[S]: ...

    def __len__(self) -> int: ...

    def states_of(self, partitions: AbstractSet[int]) -> list[S]:
        """The states of keys that live on ``partitions``."""
        ...

    async def flush(self, durable: bool = False) -> None:
        """Hand the pending changes to the changelog; with ``durable``, wait until it has them."""
        ...


class MemoryStore(Generic[S]):
    """A ``Store`` whose changelog is a list of ``(key, encoded state or None)``; ``journal``, if
    given, records each flush as ``"changelog <name>"`` among the other effects of a batch."""

    def __init__(
        self,
        name: str = "state",
        partitions: int = 1,
        encode: Callable[[S], Any] | None = None,
        journal: list[str] | None = None,
    ) -> None:
        self.name = name
        self.partitions = partitions
        self.encode = encode or (lambda state: state.to_dict())  # type: ignore[attr-defined]
        self.journal = journal if journal is not None else []
        self.data: dict[str, S] = {}
        self.pending: dict[str, S | None] = {}
        self.changelog: list[tuple[str, Any]] = []

    def get(self, key: str) -> S | None:
        return self.data.get(key)

    def put(self, key: str, state: S) -> None:
        self.data[key] = state
        self.pending[key] = state

    def delete(self, key: str) -> None:
        if self.data.pop(key, None) is not None:
            self.pending[key] = None

    def items(self) -> list[tuple[str, S]]:
        return list(self.data.items())

    def values(self) -> list[S]:
        return list(self.data.values())

    def __len__(self) -> int:
        return len(self.data)

    def states_of(self, partitions: AbstractSet[int]) -> list[S]:
        return [s for k, s in self.data.items() if owner_partition(k.encode(), self.partitions) in partitions]

    def entry(self) -> str:
        """The journal's record of a flush."""
        return f"changelog {self.name}"

    async def flush(self, durable: bool = False) -> None:
        pending, self.pending = self.pending, {}
        if not pending:
            return
        self.journal.append(self.entry())
        self.changelog.extend((k, None if s is None else self.encode(s)) for k, s in pending.items())
