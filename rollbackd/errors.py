"""Types shared across layers, in a module of their own: errors and the intake's answer.

Each layer raises these and the HTTP layer maps them to status codes, so no
layer imports another just for an exception class or a result shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AcceptError", "AcceptResult", "FencedError", "NotLeaderError", "PromQLError"]


@dataclass(frozen=True)
class AcceptResult:
    """How many alerts of one webhook body were accepted, repeated, unmapped or rejected."""

    accepted: int
    duplicates: int
    unresolved: int
    # Alerts of the body that were invalid: {"index", "path", "reason"} each.
    rejected: list[dict[str, Any]] = field(default_factory=list)


class AcceptError(Exception):
    """Nothing was recorded, so nothing may be acknowledged: the sender should retry (503)."""


class NotLeaderError(Exception):
    """This replica does not hold the Lease, so it may not act: ask the leader (503)."""


class FencedError(Exception):
    """This replica is not sure it holds the Lease: the write or page was not made.

    Deliberately not a KubeError: it must never be retried, and code that
    tolerates a failed Kubernetes call must not carry on past it. Here, not
    in the fence's module, because the pager's delivery meets it too.
    """


class PromQLError(Exception):
    """A query could not be answered (after retries, or at once for a bad query).

    Here, not in the PromQL adapter, so that what only judges answers (the
    signal specs, the configuration) does not load the HTTP client with it.
    """

    def __init__(self, message: str, *, retryable: bool = True, bad_query: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        # The query itself is at fault (Prometheus's 400/422, or an answer of
        # the wrong shape): asking again, or later, gives the same error.
        self.bad_query = bad_query
