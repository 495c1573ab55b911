"""An Argo Rollout's rollback: abort the canary, wait for the stable version, verify it.

A target with no Deployment of its name but a Rollout takes this path
instead of the Deployment's. The phases are journaled and paged as for any
rollback (ROLLING_BACK with the plan's changes, VERIFYING, then
ROLLBACK_COMPLETED, or ROLLBACK_FAILED and ESCALATED); the durable record on
the cluster is the Rollout's annotations: the phase (``rollbackd.io/rollback``, as on a
Deployment) written with the abort record ``rollbackd.io/argo-abort`` before
the abort, so a restarted daemon resumes the rollback and never sends the
abort twice (:mod:`rollbackd.strategies.argorollouts`). In approve mode the abort is
proposed first and waits for a verdict (:mod:`rollbackd.executor.argoproposal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog

from rollbackd.argochange import abort_plan_event
from rollbackd.executor.argoproposal import RolloutProposals
from rollbackd.executor.ports import EVENT_STARTED, EVENT_VERIFIED, Abort
from rollbackd.kube.errors import ConflictError, KubeError
from rollbackd.kube.writes import state_ops
from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.revisions import gitops_owner
from rollbackd.state import RollbackState, encode_state
from rollbackd.strategies import PlanError
from rollbackd.strategies.argorollouts import AbortPlan, ArgoRolloutsStrategy

log = structlog.get_logger("rollbackd.executor")


class ArgoAborting(RolloutProposals):
    """The Rollout path of the executor."""

    async def _abort_rollout(self, rollback: Rollback) -> Rollback:
        """[Propose and wait,] record (with ROLLING_BACK), abort, wait, verify.

        A refusal escalates, nothing aborted; a proposal rejected, withdrawn or
        timed out ends there.
        """
        target = rollback.target
        if rollback.phase is Phase.PENDING_APPROVAL:
            ended = await self._propose(rollback, resumed_at=None)
            if ended is not None:
                return ended
            rollback = self._latest.get(rollback.id, rollback)  # approved: PLANNING recorded
        rolling = self._advance(rollback, Phase.ROLLING_BACK)
        state = {ANNOTATION_ROLLBACK: encode_state(self._state(rolling))}
        try:
            plan = await _strategy.prepare(self._rollouts, target, rollback.id, state)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        self._latest[rollback.id] = rolling
        await self._journal_abort_plan(rolling, plan)
        await self._note_gitops_owner(rolling)
        changes = {"changes": plan.changes()}
        await self._recorder.phase(rolling, plan.summary, changes)
        await self._kube.emit_event(target, reason=EVENT_STARTED, message=plan.summary)
        summary, details = self._with_gitops(
            rolling,
            f"rollbackd is rolling back {target}: {plan.summary}",
            {"reason": rollback.reason, "reason_code": rollback.reason_code, **changes},
        )
        await self._pager.notify(NotificationKind.ROLLBACK_STARTED, rolling, summary, details)
        return await self._after_abort_recorded(rolling)

    async def _journal_abort_plan(self, rollback: Rollback, plan: AbortPlan) -> None:
        """The ``plan`` event, with the canary's and the stable's pod templates.

        As the Deployment path journals it, so the postmortem shows the change
        after the ReplicaSets are gone. Best effort: a failed read journals the
        plan without templates and the abort goes on.
        """
        try:
            replicasets = await self._rollouts.rollout_replicasets(rollback.target)
        except KubeError as exc:
            log.warning("abort_plan_templates_unread", target=str(rollback.target), error=str(exc))
            replicasets = []
        message, data = abort_plan_event(plan, replicasets)
        await self._recorder.event(rollback, "plan", message, data)

    async def _note_gitops_owner(self, rollback: Rollback) -> None:
        """Say on the pages who syncs the Rollout; nothing is paused.

        The abort is a patch of the status subresource, which a GitOps sync
        never reverts (it applies spec): a pause would stop the owner's syncs
        and protect nothing. Git still holds the bad version, though, and a
        retry of the Rollout would roll it out again: the pages say so.
        """
        try:
            owner = gitops_owner(await self._rollouts.read_rollout(rollback.target))
        except Exception as exc:  # the wording of a page must not stop the rollback
            log.warning("gitops_owner_unread", target=str(rollback.target), error=str(exc))
            return
        if owner is not None:
            self._gitops[rollback.id] = {"owner": owner, "paused": False, "abort_only": True}

    async def _resume_rollout(self, rollback: Rollback, state: RollbackState) -> Rollback:
        """A Rollout's rollback left at ``state.phase`` by an earlier daemon (not terminal)."""
        if state.phase in (Phase.ROLLING_BACK, Phase.VERIFYING):
            await self._note_gitops_owner(rollback)
        if state.phase is Phase.ROLLING_BACK:
            return await self._after_abort_recorded(rollback)
        if state.phase is Phase.VERIFYING:
            return await self._verify_rollout(rollback, state.ready_at or self._clock())
        if state.phase is Phase.PENDING_APPROVAL:  # the wait resumes from its recorded time
            ended = await self._resume_proposal(rollback, state.updated_at)
            if ended is not None:
                return ended
            rollback = self._latest.get(rollback.id, rollback)
        return await self._abort_rollout(rollback)  # PENDING, PLANNING (approved)

    async def _after_abort_recorded(self, rolling: Rollback) -> Rollback:
        """The abort (once) the record names, the wait for the stable version, verification."""
        try:
            await _strategy.resume(
                self._rollouts, rolling.target, rolling.id, timeout=self._rollout_timeout
            )
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=True) from exc
        return await self._verify_rollout(rolling, self._clock())

    async def _verify_rollout(self, rollback: Rollback, ready_at: datetime) -> Rollback:
        verifying = self._advance(rollback, Phase.VERIFYING)
        await self._write_state(verifying, ready_at=ready_at)
        self._latest[rollback.id] = verifying
        await self._recorder.phase(verifying, f"verifying from {ready_at.isoformat()}")
        result = await self._verifier.verify(rollback.target, ready_at)
        await self._record_intervals(verifying, result)
        if not result.healthy:
            raise Abort(result.reason_code, result.reason, failed=True)
        done = replace(
            self._advance(verifying, Phase.ROLLBACK_COMPLETED, finished=True), reason=result.reason
        )
        summary, details = self._with_gitops(
            done,
            f"rollbackd aborted the canary of {rollback.target}: {result.reason}",
            {"verification": [i.detail for i in result.intervals]},
        )
        await self._pager.notify(NotificationKind.ROLLBACK_COMPLETED, done, summary, details)
        await self._write_state(done, ready_at=ready_at)
        await self._recorder.phase(done, result.reason, {"verification": result.reason_code})
        await self._kube.emit_event(rollback.target, reason=EVENT_VERIFIED, message=result.reason)
        return done

    async def _write_state(
        self,
        rollback: Rollback,
        *,
        ready_at: datetime | None = None,
        extra: Mapping[str, str | None] | None = None,
        deployment: Mapping[str, Any] | None = None,
    ) -> None:
        """A Rollout target's phase goes on the Rollout (guarded, re-read on conflict)."""
        if not self._is_rollout(rollback.target):
            await super()._write_state(
                rollback, ready_at=ready_at, extra=extra, deployment=deployment
            )
            return
        attempt = 0
        while True:
            attempt += 1
            current = await self._rollouts.read_rollout(rollback.target)
            self._kube.check_state_term(current, f"state write on Rollout {rollback.target}")
            self._check_still_ours(rollback, current, restored=False)
            ops = state_ops(current, self._state(rollback, ready_at), extra=extra)
            try:
                await self._rollouts.patch_rollout(rollback.target, ops)
                return
            except ConflictError as exc:  # the controller's status writes move it often
                await self._pause_after_conflict(rollback, attempt, exc)


_strategy = ArgoRolloutsStrategy()
