"""How long a server asked us to wait: one reading of Retry-After for every client.

The Kubernetes API server and the pager's services (PagerDuty, Slack, a
webhook) may answer 429 or 503 with a Retry-After. rollbackd honours it, within
bounds: only the delta-seconds form is read (the HTTP-date form and anything
unreadable fall back to the caller's own backoff), and no answer may park a
rollback or a page for longer than ``MAX_RETRY_AFTER``. An infinite, NaN,
negative or absurdly large value from a broken proxy is cut, never trusted:
at 3 a.m. a page held for a day is a page lost.
"""

from __future__ import annotations

import math

__all__ = ["MAX_RETRY_AFTER", "retry_after_seconds"]

MAX_RETRY_AFTER = 60.0


def retry_after_seconds(*candidates: object, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds from the first readable candidate (a header value or a number), at most ``cap``."""
    for value in candidates:
        if value is None or isinstance(value, bool):
            continue
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isnan(seconds) or seconds < 0:
            continue
        return min(seconds, cap)
    return None
