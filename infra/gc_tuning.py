"""The cyclic garbage collector, tuned for a process that holds many long-lived objects.

A worker keeps every owned user's state as Python objects (dicts, dataclasses) and allocates
thousands of short-lived ones per batch (decoded records, outcomes, messages). With CPython's
default thresholds (700, 10, 10) a young collection runs every 700 allocations and the full
collections it cascades into walk every state: measured with ``elimu bench engine``, the
collector took ~1.4 s of an 8 s run (8 full collections of ~170 ms), 0.2–0.3 s with the
thresholds below (docs/benchmarks.md). Reference counting still frees everything acyclic at
once; only the search for reference cycles runs less often.

Not ``gc.freeze()``: it would hide every object alive at that moment from the collector for
good, so a cycle later formed through one of them (a client connection replaced on a rebalance,
an exception's traceback) could never be reclaimed.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between young collections, and the cascade to the older ones.
THRESHOLDS = (10_000, 20, 10)


def tune() -> None:
    """Apply ``THRESHOLDS`` (once, at process start)."""
    gc.set_threshold(*THRESHOLDS)
