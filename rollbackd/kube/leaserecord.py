"""The Lease elector's vocabulary: its settings, its outcomes, and a misconfigured Lease."""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

# The config key a misconfigured Lease is fixed with.
NAMESPACE_KEY = "leader_election.namespace"
# Backoff ceiling while the Lease cannot be used at all.
PROBLEM_BACKOFF_CAP = 30.0


class Request(Protocol):
    """One API call returning the decoded JSON body, raising typed ``KubeError``s."""

    def __call__(
        self, method: str, path: str, *, body: Any = None
    ) -> Awaitable[dict[str, Any]]: ...


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    lease_duration: int  # Lease.spec.leaseDurationSeconds is an integer
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("expected 0 < retry_period < renew_deadline < lease_duration")


@dataclass(frozen=True)
class LeaseProblem:
    """The Lease cannot be used as configured; ``key`` is the setting to fix."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class Misconfigured(Exception):
    """The Lease cannot be used as configured: stop retrying fast, report the problem."""

    def __init__(self, problem: LeaseProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class Outcome(enum.Enum):
    LEADING = "leading"  # acquired or renewed: the fence is granted
    HELD = "held"  # another replica holds a live Lease
    FAILED = "failed"  # the attempt failed; the Lease may or may not be ours


def micro_time(at: datetime) -> str:
    """A metav1.MicroTime."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return datetime.now(UTC)
