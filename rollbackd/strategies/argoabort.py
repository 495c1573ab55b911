"""The Argo Rollouts abort behind the Strategy interface, so the executor's one flow runs it.

:class:`~rollbackd.strategies.argorollouts.ArgoRolloutsStrategy` holds the
abort's steps; this maps them onto :class:`~rollbackd.strategies.Strategy`:

- ``plan``: the canary to abort (refused, nothing written, when there is
  none, or when the Rollout moved from the abort a human approved), as a
  :class:`~rollbackd.strategies.Restore` whose ``changes`` are the abort plan;
- ``patch`` and ``apply``: the plan's record (``rollbackd.io/argo-abort``)
  and the ROLLING_BACK state, one guarded patch of the Rollout's annotations;
- ``resume``: nothing, since the abort itself is the first step of ``wait``:
  so it is sent only once the record is down and the start is journaled;
- ``wait``: abort the canary the record names (once: skipped when already
  set), then until the canary is at 0 and the stable version Ready;
  PlanError (the rollback failed) when a human took over or it never was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from rollbackd.argo import replicasets_by_name, rollout_facts
from rollbackd.model import Target
from rollbackd.state import recorded_state
from rollbackd.strategies import Obj, Ops, Restore, RolloutOutcome, RolloutStatus
from rollbackd.strategies.argorollouts import (
    ARGO_ROLLOUTS,
    AbortPlan,
    ArgoRolloutsStrategy,
    check_approved,
)

__all__ = ["AbortStrategy", "abort_plan", "is_rollout"]

_abort = ArgoRolloutsStrategy()


def is_rollout(obj: Obj) -> bool:
    """Whether ``obj`` (a fresh read) is an Argo Rollout."""
    return obj.get("kind") == "Rollout"


def abort_plan(restore: Restore) -> AbortPlan:
    """The abort plan a Restore of :class:`AbortStrategy` carries in its ``changes``."""
    return AbortPlan(**{f.name: restore.changes[f.name] for f in fields(AbortPlan)})


def _replicaset(replicasets: Sequence[Obj], name: str) -> Obj:
    return replicasets_by_name(replicasets).get(name) or {}


class AbortStrategy:
    """Abort an Argo Rollouts canary; the stable version serves and is verified."""

    name = ARGO_ROLLOUTS

    async def context(self, kube: Any, target: Target, deployment: Obj) -> Obj:
        return {}  # the Rollout and its ReplicaSets are all the plan needs

    def plan(
        self,
        deployment: Obj,
        replicasets: Sequence[Obj],
        to_revision: int | None,
        context: Obj | None = None,
        *,
        rollback_id: str = "",
    ) -> Restore:
        """The canary to abort; a record of this rollback (an approved proposal) must still hold.

        That record names the canary a human approved: another one is not aborted.
        """
        check_approved(deployment, rollback_id)
        plan = _abort.plan(deployment, replicasets, rollback_id)
        stable = _replicaset(replicasets, plan.stable_rs)
        return Restore(
            replicaset=stable,
            to_revision=to_revision,
            template=(stable.get("spec") or {}).get("template") or {},
            template_hash=plan.stable_hash,
            predicted_revision=0,  # the abort numbers nothing
            kept_template=(deployment.get("spec") or {}).get("template") or {},  # the canary's
            changes=plan.changes(),
            summary=plan.summary,
        )

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """The plan's record and ``annotations`` (the state), guarded by the plan's read."""
        return _abort.record_ops(deployment, abort_plan(restore), annotations)

    async def apply(self, kube: Any, target: Target, patch: Ops, *, timeout: float = 0) -> None:
        await kube.patch_rollout(target, patch)

    async def resume(self, kube: Any, target: Target, deployment: Obj, *, timeout: float) -> None:
        """Nothing: the record is the only write before ``wait``, which sends the abort."""

    def verified(self, target: Target, deployment: Obj) -> Target:
        return target

    async def wait(self, kube: Any, target: Target, *, timeout: float) -> RolloutOutcome:
        """Abort (once) the canary the record of the rollback in flight names, then wait.

        PlanError: the record is gone, the canary is not the planned one, a
        human paused the Rollout since the plan, or the abort did not finish.
        """
        state = recorded_state(await kube.read_rollout(target))
        await _abort.resume(kube, target, state.rollback_id if state else "", timeout=timeout)
        return RolloutOutcome(RolloutStatus.COMPLETE, f"Rollout {target}: canary aborted")

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """Over the Rollout alone: whether the abort took (``wait`` counts the ReplicaSets too)."""
        facts = rollout_facts(deployment, ())
        if facts.problem is not None:
            return RolloutOutcome(RolloutStatus.PROGRESSING, facts.problem[1])
        if not facts.aborted:
            return RolloutOutcome(RolloutStatus.PROGRESSING, "not aborted yet")
        return RolloutOutcome(RolloutStatus.COMPLETE, f"aborted, stable {facts.stable_hash}")

    def cleanup_due(self, deployment: Obj) -> bool:
        return False  # an aborted Rollout is left to a human (retry or undo)

    async def cleanup(self, kube: Any, target: Target) -> str:
        return ""
