"""An Argo Rollout's rollback: abort the canary, wait for the stable version, verify it.

A target with no Deployment of its name but a Rollout takes this path
instead of the Deployment's. The phases are journaled and paged as for any
rollback (ROLLING_BACK with the plan's changes, VERIFYING, then
ROLLBACK_COMPLETED, or ROLLBACK_FAILED and ESCALATED); the durable record on
the cluster is the Rollout's ``rollbackd.io/argo-abort`` annotation, written
before the abort, so the abort itself is never sent twice
(:mod:`rollbackd.strategies.argorollouts`). Approve mode is not offered for
Rollouts yet: a proposal escalates with the command to run by hand.
"""

from __future__ import annotations

from dataclasses import replace

from rollbackd.executor.approving import Approving
from rollbackd.executor.ports import EVENT_STARTED, EVENT_VERIFIED, Abort
from rollbackd.model import Phase, Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import ReasonCode
from rollbackd.strategies import PlanError
from rollbackd.strategies.argorollouts import ArgoRolloutsKube, ArgoRolloutsStrategy


class ArgoAborting(Approving):
    """The Rollout path of the executor."""

    def _is_rollout(self, target: Target) -> bool:
        """No Deployment of that name but a Rollout, in the watch cache the decision read.

        Memory only: a Deployment's rollback costs no extra request. An
        adapter without a cache (or Rollouts not served) takes the Deployment path.
        """
        cache = getattr(self._kube, "cache", None)
        if cache is None or not hasattr(cache, "rollout"):
            return False
        return cache.deployment(target) is None and cache.rollout(target) is not None

    async def _abort_rollout(self, rollback: Rollback) -> Rollback:
        """Record, abort, wait, verify; a refusal escalates with nothing aborted."""
        target = rollback.target
        if rollback.phase is Phase.PENDING_APPROVAL:
            raise Abort(
                ReasonCode.ROLLOUT_APPROVAL_UNSUPPORTED,
                f"approve mode is not offered for Argo Rollouts yet: abort by hand with "
                f"kubectl argo rollouts abort {target.name} -n {target.namespace}",
                failed=False,
            )
        kube: ArgoRolloutsKube = self._kube  # type: ignore[assignment]
        strategy = ArgoRolloutsStrategy()
        try:
            plan = await strategy.prepare(kube, target, rollback.id)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        rolling = self._advance(rollback, Phase.ROLLING_BACK)
        self._latest[rollback.id] = rolling
        changes = {"changes": plan.changes()}
        await self._recorder.phase(rolling, plan.summary, changes)
        await self._kube.emit_event(target, reason=EVENT_STARTED, message=plan.summary)
        await self._pager.notify(
            NotificationKind.ROLLBACK_STARTED,
            rolling,
            f"rollbackd is rolling back {target}: {plan.summary}",
            {"reason": rollback.reason, "reason_code": rollback.reason_code, **changes},
        )
        try:
            await strategy.resume(kube, target, rollback.id, timeout=self._rollout_timeout)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=True) from exc
        ready_at = self._clock()
        verifying = self._advance(rolling, Phase.VERIFYING)
        self._latest[rollback.id] = verifying
        await self._recorder.phase(verifying, f"verifying from {ready_at.isoformat()}")
        result = await self._verifier.verify(target, ready_at)
        await self._record_intervals(verifying, result)
        if not result.healthy:
            raise Abort(result.reason_code, result.reason, failed=True)
        done = replace(
            self._advance(verifying, Phase.ROLLBACK_COMPLETED, finished=True), reason=result.reason
        )
        await self._pager.notify(
            NotificationKind.ROLLBACK_COMPLETED,
            done,
            f"rollbackd aborted the canary of {target}: {result.reason}",
            {"verification": [i.detail for i in result.intervals], **changes},
        )
        await self._recorder.phase(done, result.reason, {"verification": result.reason_code})
        await self._kube.emit_event(target, reason=EVENT_VERIFIED, message=result.reason)
        return done
