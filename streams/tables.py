"""Faust tables holding our state objects, and the store that writes their changelogs in bulk.

Every state class here has ``to_dict``/``from_dict``; ``state_codec`` registers a compact orjson
codec for it and returns the value type Faust needs to pick that codec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Generic, Protocol, TypeVar

import orjson
from faust.serializers import codecs
from faust.types import TableT

from streams.delivery import Send, await_delivery
from streams.records import owner_partition


class Stateful(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Stateful)


class _Options:
    def __init__(self, serializer: str) -> None:
        self.serializer = serializer


class DictCodec(codecs.Codec):
    """Changelog encoding of a state object: compact JSON of its ``to_dict``."""

    def __init__(self, name: str, from_dict: Callable[[dict[str, Any]], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.from_dict = from_dict

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj.to_dict())

    def _loads(self, s: bytes) -> Any:
        return self.from_dict(orjson.loads(s))


def state_codec(name: str, from_dict: Callable[[dict[str, Any]], Any]) -> tuple[DictCodec, type]:
    """Codec ``name`` and a table value type that selects it (Faust picks a table's codec from
    its value type's ``_options.serializer``). Nothing is registered until ``register_codecs``:
    importing a module has no effect on Faust."""
    codec = DictCodec(name, from_dict)

    class Value:
        _options = _Options(name)

        @staticmethod
        def from_data(value: Any, preferred_type: Any = None) -> Any:
            return value if hasattr(value, "to_dict") else from_dict(value)

    Value.__name__ = Value.__qualname__ = f"{name}_value"
    return codec, Value


def register_codecs(*state_codecs: DictCodec) -> None:
    """Make the codecs known to Faust by name (called by the worker as it builds its app)."""
    for codec in state_codecs:
        codecs.register(codec.name, codec)


class RawKey:
    """Table key type: the key as raw UTF-8, so a changelog key is the input key byte for byte
    and Kafka's partitioner places both on the same partition (a plain ``str`` would be JSON)."""

    _options = _Options("raw")

    @staticmethod
    def from_data(value: Any, preferred_type: Any = None) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)


class TableStore(Generic[S]):
    """A store over a Faust table, writing its changelog in bulk.

    ``table[key] = value`` costs ~75 µs in Faust (a FutureMessage, the ProducerBuffer, a
    pure-Python partitioner, sensors) and must be called inside the event whose partition it
    logs to. Here a batch's writes go to the table's store directly and their changelog records
    straight to the producer, on the partition ``partition_of(key)`` (by default the one Kafka's
    partitioner gives the key: the partition the input record came from). Faust flushes the
    producer before it commits offsets, so a committed offset never runs ahead of its state.
    """

    def __init__(
        self,
        table: TableT[str, S],
        send: Send,
        partitions: int,
        codec: DictCodec,
        partition_of: Callable[[str], int] | None = None,
    ) -> None:
        self.table = table
        self.send = send
        self.partitions = partitions
        self.codec = codec
        self.partition_of = partition_of or (lambda key: owner_partition(key.encode(), partitions))
        self.pending: dict[str, S | None] = {}

    def get(self, key: str) -> S | None:
        value: S | None = self.table.data.get(key)
        return value

    def put(self, key: str, state: S) -> None:
        self.table.data[key] = state
        self.pending[key] = state

    def delete(self, key: str) -> None:
        if self.table.data.pop(key, None) is not None:
            self.pending[key] = None  # a tombstone: recovery drops the key

    def items(self) -> Iterable[tuple[str, S]]:
        return list(self.table.data.items())

    def values(self) -> Iterable[S]:
        return list(self.table.data.values())

    def __len__(self) -> int:
        return len(self.table.data)

    def states_of(self, partitions: AbstractSet[int]) -> list[S]:
        """The states held for ``partitions`` (the table holds every partition this worker owns)."""
        return [
            s
            for k, s in list(self.table.data.items())
            if s is not None and self.partition_of(k) in partitions
        ]

    async def flush(self, durable: bool = False) -> None:
        """Hand the pending changelog records to the producer; with ``durable``, also wait until
        Kafka has them (for state that must be persisted before some other state is)."""
        topic = self.table.changelog_topic.get_topic_name()
        pending, self.pending = self.pending, {}
        futures = []
        for key, state in pending.items():
            value = None if state is None else self.codec._dumps(state)
            futures.append(await self.send(topic, key.encode(), value, self.partition_of(key)))
        if durable:
            await await_delivery(futures)
