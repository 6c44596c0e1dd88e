"""How the worker reports a Redis write of the serving view that failed: a log line naming the
kind and what Redis said (the refused keys, for the serving scripts), and the metrics
``elimu_serving_errors_total`` and ``elimu_serving_failures_total{kind,action}``.

A retried failure is a warning while Redis is away and an error when Redis is out of memory
(an operator must act); a skipped one is always an error: the view of those keys stays stale
until they are written again or Redis is rebuilt, and nothing else will say so.
"""

from __future__ import annotations

import logging

from infra.redis_errors import RETRIED, kind_of
from streams import metrics

log = logging.getLogger(__name__)


def report(exc: BaseException, what: str = "serving-view write", delay: float | None = None) -> bool:
    """Count and log one failure of ``what``; returns whether a retry can fix it. A kind in
    ``RETRIED`` is counted as retried (after ``delay`` seconds, or at the caller's next tick when
    None), any other as skipped: the caller must not try that write again."""
    kind = kind_of(exc)
    retried = kind in RETRIED
    metrics.SERVING_ERRORS.inc()
    metrics.SERVING_FAILURES.labels(kind, "retried" if retried else "skipped").inc()
    when = "at the next tick" if delay is None else f"in {delay:.1f}s"
    if not retried:
        log.error("Redis refused a %s for good (%s): %s; skipped, processing goes on", what, kind, exc)
    elif kind == "oom":
        log.error("Redis is out of memory (maxmemory) for a %s: %s; retrying %s", what, exc, when)
    else:
        log.warning("%s failed (%s: %s); retrying %s", what, kind, exc, when)
    return retried
