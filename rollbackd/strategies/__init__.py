"""How a rollback is planned, applied and waited for: the Strategy interface.

The executor owns the state machine; a strategy owns what differs between
rolling, blue/green and canary rollbacks (Flagger's router idea: a tiny
interface and a factory, :mod:`rollbackd.strategies.factory`):

- ``plan``: which old version to restore, from plain Kubernetes JSON;
- ``patch`` and ``apply``: the guarded write that restores it, built then sent;
- ``wait``: until the restored version is rolled out (or cannot be);
- ``status``: the completion predicate ``wait`` uses, over one object.

``plan`` and ``status`` are pure, so they are tested without a cluster;
``apply`` and ``wait`` get only the part of the adapter they need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rollbackd.kube.rollout import RolloutOutcome, RolloutStatus, StatusFn
from rollbackd.model import Target

# A Kubernetes object as plain JSON, and a JSON patch.
Obj = Mapping[str, Any]
Ops = list[dict[str, Any]]

__all__ = [
    "Obj",
    "Ops",
    "Patcher",
    "PlanError",
    "Restore",
    "RolloutOutcome",
    "RolloutStatus",
    "RolloutWaiter",
    "Strategy",
]


class PlanError(Exception):
    """The rollback cannot be planned; ``reason_code`` is stable for metrics."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message


@dataclass(frozen=True)
class Restore:
    """What a strategy chose to restore, and what it will look like once restored."""

    replicaset: Mapping[str, Any]  # the old version's ReplicaSet
    to_revision: int
    template: Mapping[str, Any]  # the pod template that will run (no pod-template-hash)
    template_hash: str  # the old ReplicaSet's pod-template-hash
    predicted_revision: int  # the revision number the controller will give it


class Patcher(Protocol):
    """The adapter's guarded write (a failed precondition raises ConflictError)."""

    async def patch_deployment(
        self, target: Target, ops: list[dict[str, Any]]
    ) -> dict[str, Any]: ...


class RolloutWaiter(Protocol):
    """The adapter's wait on a Deployment, judged by a strategy's predicate."""

    async def wait_rollout_complete(
        self, target: Target, *, timeout: float, poll_interval: float = ..., status: StatusFn = ...
    ) -> RolloutOutcome: ...


class Strategy(Protocol):
    """The strategy-specific half of a rollback."""

    name: str

    def plan(self, deployment: Obj, replicasets: Sequence[Obj], to_revision: int | None) -> Restore:
        """Choose what to restore (``to_revision`` None: the previous one); raises PlanError."""
        ...

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """The JSON patch restoring ``restore`` on ``deployment`` (the journal records it).

        Must start with a ``test`` of ``deployment``'s resourceVersion (safety
        rule 10) and set ``annotations`` on top of what the strategy keeps.
        """
        ...

    async def apply(self, kube: Patcher, target: Target, patch: Ops) -> None:
        """Send ``patch``; a failed precondition raises ConflictError."""
        ...

    async def wait(self, kube: RolloutWaiter, target: Target, *, timeout: float) -> RolloutOutcome:
        """Until the restored version is rolled out, failed, gone, or ``timeout`` passed."""
        ...

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """Completion predicate over a Deployment object (never TIMEOUT/GONE)."""
        ...
