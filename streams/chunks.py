"""One large value as several records of a compacted topic: chunks on fixed keys, then a manifest.

Why: the worker refuses to produce a record over 256 KiB (streams/app.py `MAX_RECORD_BYTES`: it
is dead-lettered as `too_large`) and Kafka refuses one over 1 MiB by default, while the risk
trainer's checkpoint (streams/risk_trainer.py) is megabytes at scale. Raising either limit would
let one oversized record stall a worker again; splitting the value keeps every record small.

Layout, for a base key K (the trainer's is `risk-checkpoint`), written in this order:
1. `K/0` ... `K/<n-1>`: the value's bytes in order, at most `CHUNK_BYTES` each, each after a
   header line `elimu-chunk {"generation": g, "index": i}`;
2. `K`: the manifest, LAST: `{"generation": g, "chunks": n, "bytes": total, "sha256": hex,
   "offset": o}` (o: what the value stands for, the trainer's next label offset);
3. tombstones for `K/<n>` ... of an earlier, larger generation.
The keys are fixed, so compaction keeps one generation, not one per write.

Reading. The topic has one partition: a reader sees records in write order and keeps the latest
record of each key (`ChunkBuffer`), which is also what compaction leaves. `ChunkBuffer.join`
returns the value only if every chunk i < n is there, of the manifest's generation, the sizes add
up to the manifest's and the whole hashes to its sha256. Anything else raises `ChunkError`: a
writer that crashed between its chunks and its manifest (chunks of generation g+1 under the
manifest of g: with fixed keys the older value is then gone too), a chunk lost or replaced, a
forged manifest. The caller falls back to rebuilding the value (the trainer replays its labels).

Bounds, checked before anything is allocated: a manifest of at most `MAX_MANIFEST_BYTES`, at most
`MAX_CHUNKS` chunks and `MAX_BYTES` in all; a chunk record of at most `CHUNK_BYTES` of payload
and a short header. A buffer thus holds at most MAX_CHUNKS x CHUNK_BYTES (about MAX_BYTES).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

#: A chunk's payload: its record (key, header and payload) stays far below the 256 KiB budget.
CHUNK_BYTES = 192 * 1024
#: The largest value a reader joins.
MAX_BYTES = 64 * 1024 * 1024
#: The most chunks a manifest may name, and the most a buffer keeps: MAX_BYTES in CHUNK_BYTES.
MAX_CHUNKS = -(-MAX_BYTES // CHUNK_BYTES)
#: A manifest is about 150 bytes.
MAX_MANIFEST_BYTES = 1024
MAX_GENERATION = 2**53
_CHUNK_MAGIC = b"elimu-chunk "
_MAX_CHUNK_HEADER = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A chunk key's index: decimal, no sign or leading zero (one spelling per chunk).
_INDEX = re.compile(rb"0|[1-9][0-9]{0,3}")


class ChunkError(ValueError):
    """Chunks and manifest that do not make one whole value: torn, incomplete, forged."""


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:  # bool is not a count
        raise ChunkError(f"{what} must be an integer in [{lo}, {hi}]")
    return value


@dataclass(frozen=True, slots=True)
class Manifest:
    generation: int
    chunks: int
    size: int
    sha256: str
    offset: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "generation": self.generation,
                "chunks": self.chunks,
                "bytes": self.size,
                "sha256": self.sha256,
                "offset": self.offset,
            }
        )

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """Checked: a forged count or size is refused here, before any chunk is looked at."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ChunkError(f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ChunkError(f"manifest is not JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) != {"generation", "chunks", "bytes", "sha256", "offset"}:
            raise ChunkError("manifest must be {generation, chunks, bytes, sha256, offset}")
        chunks = _int(doc["chunks"], "manifest chunks", 1, MAX_CHUNKS)
        size = _int(doc["bytes"], "manifest bytes", 1, MAX_BYTES)
        if not chunks <= size <= chunks * CHUNK_BYTES:
            raise ChunkError(f"{size} bytes cannot be {chunks} chunks of 1 to {CHUNK_BYTES} bytes")
        digest = doc["sha256"]
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ChunkError("manifest sha256 must be 64 lowercase hex digits")
        return cls(
            _int(doc["generation"], "manifest generation", 0, MAX_GENERATION),
            chunks,
            size,
            digest,
            _int(doc["offset"], "manifest offset", 0, 2**63 - 1),
        )


def chunk_key(base: bytes, index: int) -> bytes:
    return base + b"/" + str(index).encode()


def split(
    base: bytes, value: bytes, generation: int, offset: int, stale_span: int = 0
) -> list[tuple[bytes, bytes | None]]:
    """(key, value) records to write in order: the chunks, the manifest, then tombstones for the
    chunk keys in [chunk count, stale_span) that an earlier, larger generation left."""
    if not 0 < len(value) <= MAX_BYTES:
        raise ValueError(f"a chunked value is 1 to {MAX_BYTES} bytes, not {len(value)}")
    if not 0 <= generation <= MAX_GENERATION:
        raise ValueError(f"generation {generation} is outside [0, {MAX_GENERATION}]")
    view = memoryview(value)
    records: list[tuple[bytes, bytes | None]] = []
    for index, start in enumerate(range(0, len(value), CHUNK_BYTES)):
        header = _CHUNK_MAGIC + orjson.dumps({"generation": generation, "index": index}) + b"\n"
        records.append((chunk_key(base, index), header + view[start : start + CHUNK_BYTES]))
    count = len(records)
    manifest = Manifest(generation, count, len(value), hashlib.sha256(value).hexdigest(), offset)
    records.append((base, manifest.encode()))
    records.extend((chunk_key(base, index), None) for index in range(count, stale_span))
    return records


@dataclass(frozen=True, slots=True)
class _Chunk:
    generation: int
    record: bytes
    start: int  # where the payload begins, after the header line

    @property
    def size(self) -> int:
        return len(self.record) - self.start


def _read_chunk(index: int, record: bytes) -> _Chunk:
    if len(record) > _MAX_CHUNK_HEADER + CHUNK_BYTES:
        raise ChunkError(f"chunk {index} is {len(record)} bytes; the limit is {CHUNK_BYTES} and a header")
    end = record.find(b"\n", 0, _MAX_CHUNK_HEADER)
    if end < 0 or not record.startswith(_CHUNK_MAGIC):
        raise ChunkError(f"chunk {index} has no header")
    try:
        header = orjson.loads(record[len(_CHUNK_MAGIC) : end])
    except orjson.JSONDecodeError as exc:
        raise ChunkError(f"chunk {index} header is not JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"generation", "index"}:
        raise ChunkError(f"chunk {index} header must be {{generation, index}}")
    if _int(header["index"], "chunk index", 0, MAX_CHUNKS - 1) != index:
        raise ChunkError(f"chunk under key {index} says it is chunk {header['index']}")
    chunk = _Chunk(_int(header["generation"], "chunk generation", 0, MAX_GENERATION), record, end + 1)
    if chunk.size > CHUNK_BYTES:
        raise ChunkError(f"chunk {index} holds {chunk.size} bytes; the limit is {CHUNK_BYTES}")
    return chunk


class ChunkBuffer:
    """The latest manifest and chunk records under one base key, as a compacted topic keeps them.

    Every record is checked on arrival; one that fails leaves its key empty (its predecessor is
    no longer the latest record of that key) and raises `ChunkError` for the caller to log."""

    def __init__(self, base: bytes) -> None:
        self.base = base
        self._prefix = base + b"/"
        self.manifest: Manifest | None = None
        #: Why the latest manifest record was refused (it shadows any earlier one).
        self.refused: str | None = None
        self.chunks: dict[int, _Chunk] = {}
        #: The highest generation seen in any record: a new writer continues above it.
        self.generation = 0

    def owns(self, key: bytes) -> bool:
        return key == self.base or key.startswith(self._prefix)

    def on_record(self, key: bytes, value: bytes | None) -> None:
        if key == self.base:
            self.manifest, self.refused = None, None
            if value is None:
                return  # deleted: no value any more
            try:
                self.manifest = Manifest.parse(value)
            except ChunkError as exc:
                self.refused = str(exc)
                raise
            self.generation = max(self.generation, self.manifest.generation)
            return
        suffix = key[len(self._prefix) :]
        if not _INDEX.fullmatch(suffix) or int(suffix) >= MAX_CHUNKS:
            raise ChunkError(f"{key!r} is not a chunk key (index 0 to {MAX_CHUNKS - 1})")
        index = int(suffix)
        self.chunks.pop(index, None)
        if value is not None:
            chunk = _read_chunk(index, value)
            self.chunks[index] = chunk
            self.generation = max(self.generation, chunk.generation)

    def span(self) -> int:
        """One past the highest chunk index held: the keys a smaller generation must tombstone."""
        return max(self.chunks, default=-1) + 1

    def join(self) -> tuple[Manifest, bytes] | None:
        """The manifest and the whole value, None when there is no manifest, or `ChunkError`."""
        if self.refused is not None:
            raise ChunkError(self.refused)
        manifest = self.manifest
        if manifest is None:
            return None
        parts = list(self._parts(manifest))
        total = sum(len(part) for part in parts)
        if total != manifest.size:
            raise ChunkError(f"chunks hold {total} bytes, the manifest says {manifest.size}")
        value = b"".join(parts)
        if hashlib.sha256(value).hexdigest() != manifest.sha256:
            raise ChunkError(
                f"generation {manifest.generation}: the chunks do not match the manifest's sha256"
            )
        return manifest, value

    def _parts(self, manifest: Manifest) -> Iterator[memoryview]:
        for index in range(manifest.chunks):
            chunk = self.chunks.get(index)
            if chunk is None:
                raise ChunkError(
                    f"generation {manifest.generation}: chunk {index} of {manifest.chunks} is missing"
                )
            if chunk.generation != manifest.generation:
                raise ChunkError(
                    f"chunk {index} is of generation {chunk.generation}, the manifest of"
                    f" {manifest.generation} (a write torn between its chunks and its manifest)"
                )
            yield memoryview(chunk.record)[chunk.start :]
