"""What the executor needs of the world, as protocols, and how a step stops it.

The executor takes these instead of the concrete adapter, journal and
notifier (the dispatcher does the same), so tests hand it fakes and the
adapter may change behind them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from rollbackd.gitops import OwnerApi
from rollbackd.kube.fencing import Fence
from rollbackd.model import Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.state import RollbackState
from rollbackd.strategies import StrategyKube
from rollbackd.strategies.kinds import Changes
from rollbackd.verify import VerifyResult

# Event reasons on the Deployment, one per step (kubectl describe shows them).
EVENT_PLANNED = "RollbackPlanned"
EVENT_STARTED = "RollbackStarted"
EVENT_READY = "RollbackReady"
EVENT_VERIFIED = "RollbackVerified"
EVENT_FAILED = "RollbackFailed"
EVENT_ESCALATED = "RollbackEscalated"
EVENT_GITOPS_PAUSED = "GitOpsPaused"
EVENT_SUPERSEDED = "RollbackSuperseded"
EVENT_APPROVAL_REQUESTED = "RollbackApprovalRequested"
EVENT_APPROVED = "RollbackApproved"
EVENT_REJECTED = "RollbackRejected"
EVENT_CLEANED_UP = "RollbackCleanedUp"


class KubePort(StrategyKube, OwnerApi, Protocol):
    """The Kubernetes adapter as the executor uses it."""

    fence: Fence

    async def list_replicasets(self, target: Target) -> list[dict[str, Any]]: ...

    def check_state_term(self, deployment: Mapping[str, Any], what: str) -> None: ...

    async def write_state(
        self, target: Target, state: RollbackState, *, resource_version: str, extra: Changes
    ) -> dict[str, Any]: ...

    async def emit_event(
        self, target: Target, *, reason: str, message: str, type: str = ..., uid: str | None = ...
    ) -> None: ...

    async def wait_template_change(
        self, target: Target, template: Mapping[str, Any], *, poll_interval: float = ...
    ) -> dict[str, Any]: ...

    async def pod_images(self, target: Target) -> dict[str, list[str]]: ...


class VerifierPort(Protocol):
    """Judges the restored version from ``ready_at`` on."""

    async def verify(self, target: Target, ready_at: datetime) -> VerifyResult: ...


class Recorder(Protocol):
    """Journal + metrics + logs (the daemon wires it)."""

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None: ...

    async def event(
        self, rollback: Rollback, kind: str, message: str, data: Mapping[str, Any] | None = ...
    ) -> None: ...


class Pager(Protocol):
    """Notifications keyed by rollback id; returns once the page is durable (the outbox).

    Idempotent per (rollback, kind): a resumed rollback re-sends its pages safely.
    """

    async def notify(
        self, kind: NotificationKind, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> None: ...


class Abort(Exception):
    """Stop the rollback: ``failed`` after the template was changed, else escalate only."""

    def __init__(self, reason_code: str, message: str, *, failed: bool) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
        self.failed = failed


class Superseded(Exception):
    """Someone else changed the pod template after rollbackd restored it."""

    def __init__(self, deployment: Mapping[str, Any]) -> None:
        super().__init__("the pod template was changed by someone else")
        self.deployment = deployment
