"""Approve mode for an Argo Rollout: the abort proposed, watched while it waits, re-checked.

The proposal flow is the Deployments' (:mod:`rollbackd.executor.approving`):
PENDING_APPROVAL recorded before the page, the wait, the verdict, the
timeout policy. What differs is what is proposed and what must not move:

- the proposal is the abort planned on a fresh read ("abort Rollout ns/name:
  canary <hash> to 0, stable <hash> keeps serving"), and its record
  (``rollbackd.io/argo-abort``) is written on the Rollout with PENDING_APPROVAL
  in one guarded patch, so a restarted daemon or a new leader knows which
  canary a human was asked about;
- while it waits, and again on the approval, the Rollout's status is
  compared with that record (:func:`rollbackd.argo.moved_since`): aborted by
  someone else, promoted, a new canary, or no longer judgeable withdraws the
  proposal (SUPERSEDED with that reason, nothing aborted) and its signals
  are decided again, as for a Deployment whose template changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import structlog

from rollbackd.argo import ANNOTATION_ARGO_ABORT, abort_record, moved_since
from rollbackd.executor.approving import Approving, Proposal, proposal_data
from rollbackd.executor.endings import change_by_someone_else
from rollbackd.executor.ports import Abort
from rollbackd.guard import images
from rollbackd.kube.errors import KubeError, NotFoundError
from rollbackd.model import Rollback, Target
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import gitops_owner
from rollbackd.strategies import Obj, PlanError
from rollbackd.strategies.argorollouts import AbortPlan, ArgoRolloutsKube, ArgoRolloutsStrategy

__all__ = ["RolloutProposals", "rollout_proposal"]

log = structlog.get_logger("rollbackd.executor")

# The wait looks at the watch cache this often (memory only); a fresh read confirms a move.
_CACHE_POLL_SECONDS = 0.5
_strategy = ArgoRolloutsStrategy()


class RolloutProposals(Approving):
    """The approval hooks of :class:`Approving`, for a target that is an Argo Rollout."""

    def _is_rollout(self, target: Target) -> bool:
        """No Deployment of that name but a Rollout, in the watch cache the decision read.

        Memory only: a Deployment's rollback costs no extra request. An
        adapter without a cache (or Rollouts not served) takes the Deployment path.
        """
        cache = getattr(self._kube, "cache", None)
        if cache is None or not hasattr(cache, "rollout"):
            return False
        return cache.deployment(target) is None and cache.rollout(target) is not None

    @property
    def _rollouts(self) -> ArgoRolloutsKube:
        return self._kube  # type: ignore[return-value]

    async def _read_rollout(self, target: Target) -> dict[str, Any]:
        try:
            return await self._rollouts.read_rollout(target)
        except NotFoundError as exc:
            raise Abort(
                ReasonCode.TARGET_NOT_FOUND, f"Rollout {target} not found", failed=False
            ) from exc

    async def _proposal_of(self, rollback: Rollback) -> Proposal:
        """The abort, planned on a fresh read; refused (nothing proposed) when there is none."""
        if not self._is_rollout(rollback.target):
            return await super()._proposal_of(rollback)
        rollout = await self._read_rollout(rollback.target)
        replicasets = await self._rollouts.rollout_replicasets(rollback.target)
        try:
            plan = _strategy.plan(rollout, replicasets, rollback.id)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        owner = gitops_owner(rollout)
        if owner is not None:  # named on the proposal page too: Git holds the bad version
            self._gitops[rollback.id] = {"owner": owner, "paused": False, "abort_only": True}
        return Proposal(
            rollback=rollback,
            data=rollout_proposal(rollback, plan, rollout, replicasets),
            watched=asdict(plan),
            extra={ANNOTATION_ARGO_ABORT: plan.record()},
        )

    async def _watch_change(self, rollback: Rollback, watched: Mapping[str, Any]) -> dict[str, Any]:
        """The fresh Rollout once its status moved from the proposed abort."""
        if not self._is_rollout(rollback.target):
            return await super()._watch_change(rollback, watched)
        cache = self._kube.cache  # type: ignore[attr-defined]  # _is_rollout checked it
        while True:
            cached = cache.rollout(rollback.target)
            if cached is None or moved_since(cached, watched) is not None:
                fresh = await self._confirm(rollback.target)
                if fresh is not None and moved_since(fresh, watched) is not None:
                    return fresh
            await asyncio.sleep(_CACHE_POLL_SECONDS)

    async def _confirm(self, target: Target) -> dict[str, Any] | None:
        """A fresh read while waiting; None when the API server cannot answer now.

        A proposal may wait for many minutes: an outage of the API server
        only delays noticing a move (the approval reads again), it does not
        end the wait. NotFoundError (the Rollout deleted) still does.
        """
        try:
            return await self._rollouts.read_rollout(target)
        except NotFoundError:
            raise
        except KubeError as exc:
            log.warning("rollout_unread_while_waiting", target=str(target), error=str(exc))
            return None

    async def _moved(
        self, rollback: Rollback, watched: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str | None]:
        """The fresh Rollout and how it moved from the proposal (the record on it, if resumed)."""
        if not self._is_rollout(rollback.target):
            return await super()._moved(rollback, watched)
        rollout = await self._read_rollout(rollback.target)
        moved = _moved(rollout, rollback.id, watched)
        if moved is None:
            return rollout, None
        return rollout, f"Rollout {rollback.target} changed while the abort waited: {moved[1]}"

    async def _supersede(self, rollback: Rollback, deployment: Mapping[str, Any]) -> Rollback:
        """A proposed abort withdrawn: the Rollout moved (its reason code says how)."""
        if deployment.get("kind") != "Rollout":
            return await super()._supersede(rollback, deployment)
        code, why = _moved(deployment, rollback.id, None) or (
            ReasonCode.TARGET_CHANGED,
            "it changed",
        )
        status = deployment.get("status") or {}
        change = {  # what the report's "now running" reads, and the Rollout's own terms
            **change_by_someone_else(deployment),
            "canary_hash": status.get("currentPodHash"),
            "stable_hash": status.get("stableRS"),
            "aborted": bool(status.get("abort")),
        }
        message = (
            f"Rollout {rollback.target} changed while rollbackd was waiting for approval: "
            f"{why}; nothing was aborted"
        )
        return await self._step_back(
            rollback, message, change, what="its proposed abort was withdrawn", reason_code=code
        )


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
    rollback: Rollback, plan: AbortPlan, rollout: Obj, replicasets: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the page, the Event and the journal say about a proposed abort."""
    named = {(rs.get("metadata") or {}).get("name"): rs for rs in replicasets}
    stable = named.get(plan.stable_rs) or {}
    return proposal_data(
        rollback,
        plan.proposal,
        before=images((rollout.get("spec") or {}).get("template") or {}),
        after=images((stable.get("spec") or {}).get("template") or {}),
        diff=None,  # an abort patches no template
        changes=plan.changes(),
    )
