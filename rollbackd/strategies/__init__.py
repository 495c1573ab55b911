"""How a rollback is applied and when it counts as rolled out.

The executor owns the state machine; a strategy owns the two things that
differ between rolling, blue/green and canary rollbacks: the patch that
restores the old version, and the predicate that says the restored version is
fully rolled out. Both work on plain Kubernetes JSON (dicts), so they are
tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rollbackd.model import StrEnum


class RolloutStatus(StrEnum):
    COMPLETE = "complete"
    PROGRESSING = "progressing"
    FAILED = "failed"  # the controller gave up (ProgressDeadlineExceeded)
    TIMEOUT = "timeout"  # rollbackd's own deadline passed first
    GONE = "gone"  # the Deployment was deleted while waiting


@dataclass(frozen=True)
class RolloutOutcome:
    """Where a rollout stands, with kubectl-style wording for humans."""

    status: RolloutStatus
    message: str

    @property
    def complete(self) -> bool:
        return self.status is RolloutStatus.COMPLETE

    @property
    def finished(self) -> bool:
        """True when waiting longer cannot change the outcome."""
        return self.status is not RolloutStatus.PROGRESSING


class Strategy(Protocol):
    """The strategy-specific half of a rollback."""

    name: str

    def build_patch(
        self,
        deployment: Mapping[str, Any],
        replicaset: Mapping[str, Any],
        *,
        annotations: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        """JSON patch ops restoring ``replicaset``'s template on ``deployment``.

        Must start with a ``test`` of ``/metadata/resourceVersion`` (safety rule
        10) and set ``annotations`` on top of what the strategy keeps.
        """
        ...

    def rollout_status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """Completion predicate over a Deployment object (never TIMEOUT/GONE)."""
        ...


class PlanError(Exception):
    """The rollback cannot be planned; ``reason_code`` is stable for metrics."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
