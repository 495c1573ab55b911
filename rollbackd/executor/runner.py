"""The rollback state machine: plan, apply, wait for the rollout, verify.

``[PENDING_APPROVAL ->] PLANNING -> ROLLING_BACK -> VERIFYING -> ROLLBACK_COMPLETED``
(approve mode waits for a human first: REJECTED, or SUPERSEDED when the
target changes meanwhile), or
``ROLLBACK_FAILED -> ESCALATED`` when the restored version does not roll out
or does not verify, or straight to ``ESCALATED`` when planning finds that a
rollback must not be done (the target changed, the guard refuses, nothing to
restore).

Durability: the phase and rollback id are written on the Deployment
(``rollbackd.io/rollback``) before each step. A restarted daemon calls
:meth:`Executor.resume`, which continues from the recorded phase.

Transient faults (429, 5xx, connection errors, timeouts) are retried by the
Kubernetes adapter, and write conflicts here, out of one budget per rollback
(``retry_budget``, by default the rollout timeout). When the budget is spent
the rollback ends with a reason code in ``RETRYABLE_REASON_CODES``, so the
next signal may try again.

Every line a rollback logs carries ``rollback_id`` and ``target`` (bound in
:meth:`Executor.run` and :meth:`Executor.resume`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from datetime import datetime

import structlog

from rollbackd.executor.approving import Approving
from rollbackd.executor.core import PATCHED_PHASES
from rollbackd.executor.ports import Abort, Superseded
from rollbackd.kube.errors import ForbiddenError, KubeError
from rollbackd.kube.fencing import FencedError
from rollbackd.kube.retry import RetryBudget, budget_scope
from rollbackd.model import Action, ClusterFacts, Decision, Phase, Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import RollbackReason
from rollbackd.state import RollbackState, state_from_annotations
from rollbackd.strategies.factory import recorded

log = structlog.get_logger("rollbackd.executor")


class Executor(Approving):
    """Runs one rollback at a time per call; the daemon guarantees one per target."""

    # ------------------------------------------------------------ entry points

    async def run(self, rollback: Rollback, decision: Decision) -> Rollback:
        """Carry ``rollback`` (a ROLLBACK decision) to a terminal phase.

        A rollback created in PENDING_APPROVAL (approve mode) is proposed and
        waits for a verdict first.
        """
        if decision.action is not Action.ROLLBACK:
            raise ValueError(f"the executor only runs rollback decisions, not {decision.action}")
        rollback = replace(
            rollback,
            from_revision=decision.from_revision,
            to_revision=decision.to_revision,
            reason_code=rollback.reason_code or decision.reason_code,
            reason=rollback.reason or decision.reason,
        )
        with (
            structlog.contextvars.bound_contextvars(
                rollback_id=rollback.id, target=str(rollback.target)
            ),
            budget_scope(RetryBudget(self._retry_budget)),
        ):
            if rollback.phase is Phase.PENDING_APPROVAL:  # the dispatcher's approve mode
                return await self._guarded(rollback, self._after_approval(rollback, None))
            return await self._guarded(rollback, self._from_planning(rollback))

    async def resume(self, target: Target, state: RollbackState) -> Rollback:
        """Continue a rollback a previous daemon left at ``state.phase``."""
        with (
            structlog.contextvars.bound_contextvars(
                rollback_id=state.rollback_id, target=str(target)
            ),
            budget_scope(RetryBudget(self._retry_budget)),
        ):
            return await self._resume(target, state)

    async def _resume(self, target: Target, state: RollbackState) -> Rollback:
        rollback = state.rollback(target)
        if state.phase is Phase.ROLLBACK_COMPLETED:
            # Killed after the verdict, before the strategy's cleanup: do it now.
            deployment = await self._fresh_or_none(target)
            if deployment is not None:
                await self._choose_strategy(rollback, deployment, resumed=True)
                try:
                    await self._cleanup(rollback)
                finally:
                    self._strategies.pop(rollback.id, None)
            return rollback
        if state.phase.terminal:
            return rollback
        await self._recorder.event(
            rollback, "resumed", f"resuming rollback from phase {state.phase}"
        )
        if state.phase is Phase.PENDING_APPROVAL:
            return await self._guarded(rollback, self._after_approval(rollback, state.updated_at))
        if state.phase in (Phase.PENDING, Phase.PLANNING):
            return await self._guarded(rollback, self._from_planning(rollback))
        await self._remember_paused_owner(rollback)
        if state.phase in PATCHED_PHASES:
            # The patch may have landed just before the process died, before its
            # page was durable: re-send it (the outbox keeps one per rollback).
            summary, details = self._with_gitops(
                rollback,
                self._kind(target).headline(rollback, Phase.ROLLING_BACK),
                {"reason_code": rollback.reason_code, "resumed_from": str(state.phase)},
            )
            await self._pager.notify(NotificationKind.ROLLBACK_STARTED, rollback, summary, details)
        if state.phase is Phase.ROLLING_BACK:
            return await self._guarded(rollback, self._resume_rolling_back(rollback))
        if state.phase is Phase.VERIFYING:
            now = self._clock()
            ready_at = state.ready_at
            if ready_at is None or now - ready_at > self._resume_max_age:
                ready_at = now
            return await self._guarded(rollback, self._resume_verifying(rollback, ready_at))
        # ROLLBACK_FAILED: the failure was recorded, the escalation may not have been.
        try:
            return await self._escalate(rollback, *await self._recorded_failure(rollback))
        finally:
            self._gitops.pop(rollback.id, None)

    # ------------------------------------------------------------------ steps

    async def _after_approval(self, rollback: Rollback, resumed_at: datetime | None) -> Rollback:
        """Approve mode: propose and wait; once approved (PLANNING recorded), the normal path."""
        if resumed_at is None:
            ended = await self._propose(rollback, resumed_at=None)
        else:
            ended = await self._resume_proposal(rollback, resumed_at)
        if ended is not None:
            return ended
        return await self._planned(self._latest.get(rollback.id, rollback))

    async def _from_planning(self, rollback: Rollback) -> Rollback:
        """PLANNING recorded first when GitOps owners are paused before the first write.

        A kill during the pause then resumes it; a target kind that pauses
        nothing (its plan's record is the first write) records no PLANNING.
        """
        if self._kind(rollback.target).gitops_note is None:
            rollback = await self._enter(rollback, Phase.PLANNING, "planning the rollback")
        return await self._planned(rollback)

    async def _planned(self, rollback: Rollback) -> Rollback:
        """From PLANNING: plan on fresh reads, pause GitOps, the first write, wait, verify."""
        plan = await self._plan(rollback)
        rollback = replace(rollback, from_revision=plan.from_revision, to_revision=plan.to_revision)
        await self._record_plan(rollback, plan)
        await self._pause_gitops(rollback, plan)
        rollback = await self._apply(rollback, plan)
        return await self._wait_and_verify(rollback)

    async def _resume_rolling_back(self, rollback: Rollback) -> Rollback:
        """The ROLLING_BACK state landed with the first patch: the strategy finishes its writes."""
        deployment = await self._adopt_restored(rollback)
        strategy = self._strategy_of(rollback)
        await self._strategy_step(
            strategy.resume(self._kube, rollback.target, deployment, timeout=self._rollout_timeout)
        )
        return await self._wait_and_verify(rollback)

    def cleanup_due(self, annotations: Mapping[str, str]) -> bool:
        """Whether a completed rollback recorded in ``annotations`` left its cleanup undone."""
        state = state_from_annotations(annotations)
        if state is None or state.phase is not Phase.ROLLBACK_COMPLETED:
            return False
        deployment = {"metadata": {"annotations": annotations}}
        return recorded(deployment).cleanup_due(deployment)

    def cleanup_left(self, facts: ClusterFacts) -> Rollback | None:
        """The completed rollback whose cleanup ``facts`` show undone (resume it), or None."""
        state = state_from_annotations(facts.annotations)
        if state is None or not self.cleanup_due(facts.annotations):
            return None
        return state.rollback(facts.target)

    async def _resume_verifying(self, rollback: Rollback, ready_at: datetime) -> Rollback:
        await self._adopt_restored(rollback)
        return await self._verify(rollback, ready_at)

    # ----------------------------------------------------------- the ending

    async def _guarded(self, rollback: Rollback, steps: Awaitable[Rollback]) -> Rollback:
        """Turn every way a rollback can stop into a recorded terminal phase.

        Cancellation is not a failure: the annotation keeps the phase and the
        next leader resumes, so it propagates untouched.
        """
        try:
            return await steps
        except (asyncio.CancelledError, FencedError):
            # Fenced: this replica may no longer lead; the leader resumes it.
            raise
        except Superseded as superseded:
            latest = self._latest.get(rollback.id, rollback)
            return await self._supersede(latest, superseded.deployment)
        except Exception as exc:
            latest = self._latest.get(rollback.id, rollback)
            # Once the template was patched, the rollback itself failed.
            abort = exc if isinstance(exc, Abort) else self._abort_for(exc, latest)
            if abort.failed:
                return await self._fail(latest, abort)
            return await self._escalate(latest, abort.reason_code, abort.message)
        finally:
            self._latest.pop(rollback.id, None)
            self._gitops.pop(rollback.id, None)
            self._restored.pop(rollback.id, None)
            self._strategies.pop(rollback.id, None)
            self._verify_targets.pop(rollback.id, None)

    def _abort_for(self, exc: Exception, latest: Rollback) -> Abort:
        """The recorded ending of an error that stopped the rollback.

        Transient API errors only get here once the rollback's retry budget is
        spent: that gets its own reason code so the next signal may try again.
        """
        failed = latest.phase in PATCHED_PHASES
        if isinstance(exc, KubeError) and exc.transient:
            return Abort(
                RollbackReason.KUBE_UNAVAILABLE,
                "the Kubernetes API kept failing for the rollback's whole retry budget "
                f"({self._retry_budget:g}s): {exc}",
                failed=failed,
            )
        if isinstance(exc, ForbiddenError):
            return Abort(
                RollbackReason.KUBE_FORBIDDEN, f"rollbackd is not allowed to: {exc}", failed=failed
            )
        log.error("rollback_stopped_by_error", exc_info=exc)
        return Abort(
            RollbackReason.EXECUTOR_ERROR, f"rollback stopped by an error: {exc}", failed=failed
        )
