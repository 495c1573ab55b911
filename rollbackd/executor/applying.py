"""ROLLING_BACK: the strategy's guarded write, and finding it again on resume.

The ROLLING_BACK state is written in the same guarded patch that restores
the template, so "the annotation says ROLLING_BACK" and "the patch landed"
are one fact. A conflict re-reads and re-plans: the re-plan escalates as soon
as the revision or template moved (a human deployed); a conflict with nothing
relevant changed is status churn, retried while the retry budget lasts.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from rollbackd.executor.core import uid_of
from rollbackd.executor.planning import Plan, Planning
from rollbackd.executor.ports import EVENT_STARTED, Abort, Superseded
from rollbackd.guard import images, templates_equal
from rollbackd.kube.errors import ConflictError
from rollbackd.model import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_RESTORED,
    ANNOTATION_ROLLBACK,
    Phase,
    Rollback,
)
from rollbackd.notify.base import NotificationKind
from rollbackd.readiness import template_hash
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import strip_hash
from rollbackd.state import encode_restored, encode_state, restored_record
from rollbackd.strategies import PlanError


class Applying(Planning):
    """The template patch, and adopting it again after a restart."""

    def _annotations(self, rollback: Rollback, rolling: Rollback, plan: Plan) -> dict[str, str]:
        """What the first write carries besides the strategy's: state, cause, restored record.

        The cause and the restored record describe a restored template: a
        target kind that tracks none gets the state alone.
        """
        state = {ANNOTATION_ROLLBACK: encode_state(self._state(rolling))}
        if not self._kind(rollback.target).tracks_template:
            return state
        return {
            **state,
            ANNOTATION_CHANGE_CAUSE: (
                f"rollbackd {rollback.id}: rollback to revision {plan.to_revision}"
                + (f" ({rollback.reason})" if rollback.reason else "")
            ),
            ANNOTATION_RESTORED: encode_restored(
                {
                    "rollback_id": rollback.id,
                    "template_hash": plan.restore.template_hash,
                    "revision": plan.restore.predicted_revision,
                }
            ),
        }

    async def _apply(self, rollback: Rollback, plan: Plan) -> Rollback:
        """Patch the template; re-read and re-plan on conflict (safety rule 10, docs/architecture.md).

        A patch whose answer was lost (a reset connection) but that landed is
        recognised by our own restored record, never applied twice.
        """
        attempt = 0
        while True:
            attempt += 1
            rolling = self._advance(rollback, Phase.ROLLING_BACK)
            strategy = self._strategy_of(rollback)
            ops = strategy.patch(
                plan.deployment,
                plan.restore,
                annotations=self._annotations(rollback, rolling, plan),
            )
            try:
                await self._strategy_step(
                    strategy.apply(self._kube, rollback.target, ops, timeout=self._rollout_timeout)
                )
            except ConflictError as exc:
                if deployment := await self._landed(rollback, plan):
                    # The first write is there: the strategy finishes what follows it.
                    await self._strategy_step(
                        strategy.resume(
                            self._kube, rollback.target, deployment, timeout=self._rollout_timeout
                        )
                    )
                    break
                await self._recorder.event(
                    rollback, "conflict", f"write conflict (attempt {attempt}), re-planning: {exc}"
                )
                await self._pause_after_conflict(rollback, attempt, exc)
                plan = await self._plan(rollback)
                continue
            break
        return await self._started(rolling, plan, ops)

    async def _strategy_step(self, step: Awaitable[None]) -> None:
        """A strategy's writes; one it refused to make ends the rollback with nothing switched."""
        try:
            await step
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc

    async def _started(self, rollback: Rollback, plan: Plan, ops: list[dict[str, Any]]) -> Rollback:
        kind = self._kind(rollback.target)
        self._latest[rollback.id] = rollback
        if kind.tracks_template:  # watched from now on: a change means a human took over
            self._restored[rollback.id] = plan.restore.watched_template
        self._verify_targets[rollback.id] = plan.restore.verify_target or rollback.target
        restore = plan.restore
        message = restore.summary or f"restoring revision {plan.to_revision}"
        if kind.tracks_template:
            message = f"{message} ({', '.join(images(restore.template))})"
        changes = {"changes": dict(restore.changes)} if restore.changes else {}
        await self._recorder.phase(rollback, message, {"patch": ops, **changes})
        await self._kube.emit_event(
            rollback.target, reason=EVENT_STARTED, message=message, uid=uid_of(plan.deployment)
        )
        headline = kind.headline(rollback, Phase.ROLLING_BACK)
        summary, details = self._with_gitops(
            rollback,
            f"{headline}: {restore.summary}" if restore.summary else headline,
            {"reason": rollback.reason, "reason_code": rollback.reason_code, **changes},
        )
        await self._pager.notify(NotificationKind.ROLLBACK_STARTED, rollback, summary, details)
        return rollback

    async def _landed(self, rollback: Rollback, plan: Plan) -> dict[str, Any] | None:
        """The Deployment when the first patch is on it although its answer said otherwise."""
        deployment = await self._read(rollback.target)
        ours = restored_record(deployment).get("rollback_id") == rollback.id
        if ours and templates_equal(deployment["spec"]["template"], plan.restore.watched_template):
            return deployment
        return None

    async def _adopt_restored(self, rollback: Rollback) -> dict[str, Any]:
        """Find the template this rollback restored (resume); it must still be the Deployment's.

        Our restored record and its ReplicaSet gone: the rollback cannot be
        followed any more. Present but the template differs: a human took over.
        A target kind that tracks no template has nothing to find.
        """
        deployment = await self._read(rollback.target)
        strategy = await self._choose_strategy(rollback, deployment, resumed=True)
        self._verify_targets[rollback.id] = strategy.verified(rollback.target, deployment)
        if not self._kind(rollback.target).tracks_template:
            self._latest[rollback.id] = rollback
            return deployment
        restored = restored_record(deployment)
        ours = [
            rs
            for rs in await self._kube.list_replicasets(rollback.target)
            if restored.get("rollback_id") == rollback.id
            and template_hash(rs) == restored.get("template_hash")
        ]
        if not ours:
            raise Abort(
                RollbackReason.TARGET_CHANGED,
                "target changed during rollback: the restored revision is no longer recorded",
                failed=True,
            )
        self._restored[rollback.id] = strip_hash(ours[0]["spec"]["template"])
        if not templates_equal(ours[0]["spec"]["template"], deployment["spec"]["template"]):
            raise Superseded(deployment)
        self._latest[rollback.id] = rollback
        return deployment
