"""How a rollback is planned, applied and waited for: the Strategy interface.

The executor owns the state machine, one phase flow for every target
(``[PENDING_APPROVAL ->] PLANNING -> ROLLING_BACK -> VERIFYING -> ROLLBACK_COMPLETED``,
or ``ROLLBACK_FAILED -> ESCALATED``, and resume from the recorded phase); a
strategy owns what differs between rolling, blue/green, canary and Argo
Rollouts rollbacks (Flagger's router idea: a tiny interface and a factory,
:mod:`rollbackd.strategies.factory`). The target is the object whose signals
breach (its state annotation carries the phase); a strategy may restore
something else (another Deployment, a Service's selector) and says so in its
:class:`Restore`:

- ``context``: the extra plain objects ``plan`` needs, read fresh (rolling: none);
- ``plan``: what to restore and what it changes, from plain Kubernetes JSON;
- ``patch`` and ``apply``: the first guarded write (it carries the ROLLING_BACK
  state and the plan's record), then the strategy's further guarded writes;
- ``resume``: finish the writes a kill interrupted (each one idempotent);
- ``verified``: whose version is waited for and verified once applied;
- ``wait``: until the restored version is rolled out (or cannot be); a
  PlanError from it fails the rollback (an Argo abort sends its status
  patch here, once the record is down, and refuses when a human took over);
- ``status``: the completion predicate ``wait`` uses, over one object;
- ``cleanup``: what is left to do after ROLLBACK_COMPLETED (rolling: nothing).

``plan`` and ``status`` are pure, so they are tested without a cluster;
``apply``, ``resume``, ``wait`` and ``cleanup`` get only the adapter they need.

What the target *is* is the second, smaller interface,
:class:`~rollbackd.strategies.kinds.TargetKind`, chosen by the factory's
``kind_of`` from the watch cache: a Deployment
(:mod:`~rollbackd.strategies.deployment`) or an Argo Rollout
(:mod:`~rollbackd.strategies.argotarget`). It says which object is read and
carries the state annotation (``read``, ``replicasets``, ``write_state``),
re-checks the decision on fresh reads (``recheck``), words the journal's
``plan`` event and the pages (``plan_event``, ``headline``), proposes and
watches in approve mode (``proposal``, ``watch_change``, ``moved``,
``stepped_back``), and declares two capabilities: ``tracks_template`` (the
pod template is restored or kept, guarded, recorded and watched; a Rollout's
abort writes status only) and ``gitops_note`` (None: GitOps owners are
paused first, after a recorded PLANNING; else they are named with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "StrategyKube",
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
    to_revision: int | None  # None: no numbered revision is restored (an abort)
    template: Mapping[str, Any]  # the pod template that will run (no pod-template-hash)
    template_hash: str  # the old ReplicaSet's pod-template-hash
    predicted_revision: int  # the revision number the controller will give it
    # The target's pod template while the rollback runs (None: ``template``,
    # which replaces it); a change to it means a human took over.
    kept_template: Mapping[str, Any] | None = None
    # The Deployment whose version is waited for and verified (None: the target).
    verify_target: Target | None = None
    # What the rollback changes, as plain JSON (journal, report, API): e.g.
    # ``selector_before``/``selector_after``, ``replicas_scaled``.
    changes: Mapping[str, Any] = field(default_factory=dict)
    # The same, as one sentence for the Events and pages ("" for rolling).
    summary: str = ""
    # Objects beyond the target that the rollback writes, by description
    # ("Service default/checkout", "Deployment default/checkout-blue" when the
    # previous colour is scaled up, "HTTPRoute default/checkout"): their GitOps
    # owners are paused too, each owner once, since a sync of theirs would undo
    # the write (safety rule 9).
    gitops_objects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def watched_template(self) -> Mapping[str, Any]:
        """The template the target must keep until the rollback ends."""
        return self.template if self.kept_template is None else self.kept_template


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


class StrategyKube(Patcher, RolloutWaiter, Protocol):
    """The adapter as a strategy uses it beyond the target: reads and guarded writes."""

    async def read_deployment(self, target: Target) -> dict[str, Any]: ...

    async def list_replicasets(self, target: Target) -> list[dict[str, Any]]: ...

    async def list_items(self, path: str) -> list[dict[str, Any]]: ...

    async def read_service(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def patch_service(
        self, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]: ...


class Strategy(Protocol):
    """The strategy-specific half of a rollback."""

    name: str

    async def context(self, kube: StrategyKube, target: Target, deployment: Obj) -> Obj:
        """Plain objects beyond the target's own that ``plan`` needs, read fresh."""
        ...

    def plan(
        self,
        deployment: Obj,
        replicasets: Sequence[Obj],
        to_revision: int | None,
        context: Obj | None = None,
        *,
        rollback_id: str = "",
    ) -> Restore:
        """Choose what to restore (``to_revision`` None: the previous one); raises PlanError.

        ``rollback_id``: the rollback planned, for a strategy whose record names it.
        """
        ...

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """The JSON patch restoring ``restore`` on ``deployment`` (the journal records it).

        Must start with a ``test`` of ``deployment``'s resourceVersion (safety
        rule 10) and set ``annotations`` on top of what the strategy keeps.
        """
        ...

    async def apply(self, kube: Any, target: Target, patch: Ops, *, timeout: float = ...) -> None:
        """Send ``patch``, then any further writes; a failed precondition raises ConflictError.

        ``kube`` is a :class:`Patcher`, or a :class:`StrategyKube` for a
        strategy that writes beyond the target. A write that cannot be made
        safely raises PlanError (nothing further is written).
        """
        ...

    async def resume(self, kube: Any, target: Target, deployment: Obj, *, timeout: float) -> None:
        """After a restart in ROLLING_BACK: finish the writes ``apply`` may not have made."""
        ...

    def verified(self, target: Target, deployment: Obj) -> Target:
        """The Deployment whose restored version is waited for and verified."""
        ...

    async def wait(self, kube: RolloutWaiter, target: Target, *, timeout: float) -> RolloutOutcome:
        """Until the restored version is rolled out, failed, gone, or ``timeout`` passed."""
        ...

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """Completion predicate over a Deployment object (never TIMEOUT/GONE)."""
        ...

    def cleanup_due(self, deployment: Obj) -> bool:
        """Whether ``cleanup`` has work left on the target after ROLLBACK_COMPLETED."""
        ...

    async def cleanup(self, kube: Any, target: Target) -> str:
        """The work left after ROLLBACK_COMPLETED (guarded, idempotent); what it did."""
        ...
