"""The cyclic garbage collector, tuned for a process that holds many long-lived objects.

A worker keeps every owned user's state as Python objects (dicts, dataclasses) and allocates
thousands of short-lived ones per batch (decoded records, outcomes, messages). With CPython's
default thresholds (700, 10, 10) a young collection runs every 700 allocations and the full
collections it cascades into walk every state: measured with ``elimu bench engine``, the
collector took ~1.4 s of an 8 s run (8 full collections of ~170 ms), 0.2–0.3 s with the
thresholds below (docs/benchmarks.md). Reference counting still frees everything acyclic at
once; only the search for reference cycles runs less often.
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between young collections, and the cascade to the older ones.
THRESHOLDS = (10_000, 20, 10)


def tune() -> None:
    """Apply ``THRESHOLDS`` (once, at process start)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_survivors() -> None:
    """Move every object alive now out of the collector's sight (after a table's recovery, or
    a Redis rebuild): recovered states live until their user changes, and walking them in every
    full collection is pure cost. A frozen object is still freed when its last reference goes;
    only a reference cycle among frozen objects would outlive it, and states hold none."""
    gc.freeze()
