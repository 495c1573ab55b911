"""An Argo Rollout as a rollback's target kind (:class:`~rollbackd.strategies.kinds.TargetKind`).

A target with no Deployment of its name but a Rollout is one (the factory
tells them apart from the watch cache). The Rollout carries the state
annotation, as a Deployment does, and the abort's record beside it
(:mod:`rollbackd.strategies.argoabort`). What differs from a Deployment:

- the abort writes the status subresource and leaves the template (the
  canary's) alone: no template is guarded, recorded or watched;
- the plan's record is the first write, so no PLANNING is recorded before it;
  a GitOps owner is named on the pages, not paused (a sync applies spec);
- the ``plan`` event holds the canary's and the stable's templates, read from
  their ReplicaSets (best effort: the abort goes on without them);
- approve mode proposes the abort with its record written beside
  PENDING_APPROVAL, and compares the Rollout's status with that record while
  it waits (the watch cache, confirmed by a fresh read) and on the approval:
  aborted by someone else, promoted, a new canary, or no longer judgeable
  withdraws the proposal with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import structlog

from rollbackd.argo import ANNOTATION_ARGO_ABORT, abort_record, moved_since, replicasets_by_name
from rollbackd.argochange import abort_plan_event
from rollbackd.guard import images
from rollbackd.kube.errors import KubeError, NotFoundError
from rollbackd.kube.writes import state_ops
from rollbackd.model import Phase, Rollback, Target
from rollbackd.reasons import ReasonCode
from rollbackd.state import RollbackState
from rollbackd.strategies import Obj
from rollbackd.strategies.argoabort import abort_plan
from rollbackd.strategies.argorollouts import AbortPlan, ArgoRolloutsKube
from rollbackd.strategies.deployment import change_by_someone_else
from rollbackd.strategies.kinds import Changes, Fresh, Plan, Proposed, SteppedBack, proposal_data

__all__ = ["ROLLOUT", "RolloutKind", "rollout_proposal"]

log = structlog.get_logger("rollbackd.executor")

# The wait looks at the watch cache this often (memory only); a fresh read confirms a move.
_CACHE_POLL_SECONDS = 0.5


class RolloutKind:
    """An Argo Rollout: its canary aborted through the status subresource."""

    name = "Rollout"
    tracks_template = False
    gitops_note: str | None = (
        "the abort holds (a sync applies spec, not status), but Git still holds the bad "
        "version; revert it before the Rollout is retried"
    )

    async def read(self, kube: ArgoRolloutsKube, target: Target) -> dict[str, Any]:
        return await kube.read_rollout(target)

    async def replicasets(self, kube: ArgoRolloutsKube, target: Target) -> list[dict[str, Any]]:
        return await kube.rollout_replicasets(target)

    def recheck(self, rollback: Rollback, obj: Obj, replicasets: Sequence[Obj]) -> Fresh:
        """Nothing beyond the abort's own plan, which refuses what cannot be aborted."""
        return Fresh(rollback.from_revision)

    async def write_state(
        self, kube: Any, target: Target, current: Obj, state: RollbackState | None, extra: Changes
    ) -> None:
        """Guarded by ``current``; the controller's status writes make conflicts common."""
        kube.check_state_term(current, f"state write on Rollout {target}")
        await kube.patch_rollout(target, state_ops(current, state, extra=extra))

    async def plan_event(
        self, kube: Any, target: Target, plan: Plan, strategy: str
    ) -> tuple[str, dict[str, Any]]:
        """The canary's and the stable's templates; a failed read journals the plan without."""
        try:
            replicasets = await kube.rollout_replicasets(target)
        except KubeError as exc:
            log.warning("abort_plan_templates_unread", target=str(target), error=str(exc))
            replicasets = []
        return abort_plan_event(abort_plan(plan.restore), replicasets)

    def headline(self, rollback: Rollback, phase: Phase) -> str:
        if phase is Phase.ROLLBACK_COMPLETED:
            return f"rollbackd aborted the canary of {rollback.target}"
        return f"rollbackd is rolling back {rollback.target}"

    def proposal(self, rollback: Rollback, plan: Plan) -> Proposed:
        """The abort proposed; its record goes on the Rollout with PENDING_APPROVAL."""
        abort = abort_plan(plan.restore)
        return Proposed(
            rollout_proposal(rollback, abort, plan.deployment, plan.replicasets),
            asdict(abort),
            extra={ANNOTATION_ARGO_ABORT: abort.record()},
        )

    async def watch_change(
        self, kube: Any, target: Target, watched: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The fresh Rollout once its status moved from the proposed abort."""
        while True:
            cached = kube.cache.rollout(target)
            if cached is None or moved_since(cached, watched) is not None:
                fresh = await _confirm(kube, target)
                if fresh is not None and moved_since(fresh, watched) is not None:
                    return fresh
            await asyncio.sleep(_CACHE_POLL_SECONDS)

    def moved(self, rollback: Rollback, obj: Obj, watched: Mapping[str, Any] | None) -> str | None:
        moved = _moved(obj, rollback.id, watched)
        if moved is None:
            return None
        return f"Rollout {rollback.target} changed while the abort waited: {moved[1]}"

    def stepped_back(self, rollback: Rollback, obj: Obj) -> SteppedBack:
        """A proposed abort withdrawn: the Rollout moved (its reason code says how)."""
        code, why = _moved(obj, rollback.id, None) or (ReasonCode.TARGET_CHANGED, "it changed")
        status = obj.get("status") or {}
        change = {  # what the report's "now running" reads, and the Rollout's own terms
            **change_by_someone_else(obj),
            "canary_hash": status.get("currentPodHash"),
            "stable_hash": status.get("stableRS"),
            "aborted": bool(status.get("abort")),
        }
        message = (
            f"Rollout {rollback.target} changed while rollbackd was waiting for approval: "
            f"{why}; nothing was aborted"
        )
        return SteppedBack(message, change, "its proposed abort was withdrawn", code)


ROLLOUT = RolloutKind()


async def _confirm(kube: Any, target: Target) -> dict[str, Any] | None:
    """A fresh read while waiting; None when the API server cannot answer now.

    A proposal may wait for many minutes: an outage of the API server only
    delays noticing a move (the approval reads again), it does not end the
    wait. NotFoundError (the Rollout deleted) still does.
    """
    try:
        result: dict[str, Any] = await kube.read_rollout(target)
    except NotFoundError:
        raise
    except KubeError as exc:
        log.warning("rollout_unread_while_waiting", target=str(target), error=str(exc))
        return None
    return result


def _moved(
    rollout: Mapping[str, Any], rollback_id: str, watched: Mapping[str, Any] | None
) -> tuple[ReasonCode, str] | None:
    """``moved_since`` against what was proposed: ``watched``, else the record on the Rollout.

    A resumed wait whose Rollout has no record of it (none was written) is
    judged by the plan made again when the proposal resumes.
    """
    record = watched if watched is not None else abort_record(rollout, rollback_id)
    return moved_since(rollout, record) if record else None


def rollout_proposal(
    rollback: Rollback, plan: AbortPlan, rollout: Obj, replicasets: Sequence[Obj]
) -> dict[str, Any]:
    """What the page, the Event and the journal say about a proposed abort."""
    stable = replicasets_by_name(replicasets).get(plan.stable_rs) or {}
    return proposal_data(
        rollback,
        plan.proposal,
        before=images((rollout.get("spec") or {}).get("template") or {}),
        after=images((stable.get("spec") or {}).get("template") or {}),
        diff=None,  # an abort patches no template
        changes=plan.changes(),
    )
