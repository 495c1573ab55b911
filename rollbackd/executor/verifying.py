"""Waiting for the restored version, then VERIFYING it over fresh data.

Both run while the template is watched: a change by someone else stops them
(SUPERSEDED), and when both finish together the change wins, so rollbackd
never reports on a version that no longer runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import structlog

from rollbackd.executor.applying import Applying
from rollbackd.executor.ports import (
    EVENT_CLEANED_UP,
    EVENT_READY,
    EVENT_VERIFIED,
    Abort,
    Superseded,
)
from rollbackd.journal import DETAIL_RESTORED_REVISION
from rollbackd.kube.errors import KubeError, NotFoundError
from rollbackd.kube.fencing import FencedError
from rollbackd.model import ANNOTATION_RESTORED, Phase, Rollback, Target
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import RollbackReason, rollout_reason
from rollbackd.revisions import revision_of
from rollbackd.state import encode_restored, restored_record
from rollbackd.strategies import PlanError
from rollbackd.verify import VerifyResult

log = structlog.get_logger("rollbackd.executor")

T = TypeVar("T")


class Verifying(Applying):
    """The restored version's rollout, its verification, and ROLLBACK_COMPLETED."""

    async def _wait_and_verify(self, rollback: Rollback) -> Rollback:
        restored = self._verify_target(rollback)
        strategy = self._strategy_of(rollback)
        try:
            outcome = await self._unless_superseded(
                rollback, strategy.wait(self._kube, restored, timeout=self._rollout_timeout)
            )
        except PlanError as exc:  # the strategy's last write refused, or it never took
            raise Abort(exc.reason_code, exc.message, failed=True) from exc
        if not outcome.complete:
            raise Abort(rollout_reason(outcome.status), outcome.message, failed=True)
        ready_at = self._clock()
        if self._kind(rollback.target).tracks_template:
            await self._ready(rollback, restored, outcome.message)
        return await self._verify(rollback, ready_at)

    async def _ready(self, rollback: Rollback, restored: Target, message: str) -> None:
        """The restored template runs: an Event, and the image digests it runs with."""
        await self._kube.emit_event(
            rollback.target,
            reason=EVENT_READY,
            message=f"restored version ready: {message}",
        )
        try:
            digests = await self._kube.pod_images(restored)
        except KubeError as exc:
            digests = {}
            log.warning("pod_images_not_read", error=str(exc))
        await self._recorder.event(
            rollback, "images", "image digests running after the rollback", {"images": digests}
        )

    async def _verify(self, rollback: Rollback, ready_at: datetime) -> Rollback:
        deployment = await self._read_restored(rollback)
        restored = restored_record(deployment)
        extra: dict[str, str | None] = {}
        actual = revision_of(deployment)
        if restored.get("rollback_id") == rollback.id and actual != restored.get("revision"):
            # Record the revision the controller really assigned (the plan predicted it).
            extra[ANNOTATION_RESTORED] = encode_restored({**restored, "revision": actual})
        rollback = await self._enter(
            rollback,
            Phase.VERIFYING,
            f"verifying from {ready_at.isoformat()}",
            ready_at=ready_at,
            extra=extra,
            deployment=deployment,
            # The journal's half of the no-ping-pong rule: this revision is rollbackd's.
            data={DETAIL_RESTORED_REVISION: actual} if actual is not None else None,
        )
        result = await self._unless_superseded(
            rollback, self._verifier.verify(self._verify_target(rollback), ready_at)
        )
        await self._record_intervals(rollback, result)
        if not result.healthy:
            raise Abort(result.reason_code, result.reason, failed=True)
        done = await self._completed(rollback, ready_at, result)
        await self._cleanup(done)  # after ROLLBACK_COMPLETED is written and paged
        return done

    async def _completed(
        self, rollback: Rollback, ready_at: datetime, result: VerifyResult
    ) -> Rollback:
        # Verified: but only what still runs may be declared completed.
        deployment = await self._read_restored(rollback)
        done = self._advance(rollback, Phase.ROLLBACK_COMPLETED, finished=True)
        done = replace(done, reason=result.reason)
        summary, details = self._with_gitops(
            done,
            f"{self._kind(done.target).headline(done, done.phase)}: {result.reason}",
            {"verification": [i.detail for i in result.intervals]},
        )
        # The resolve is in the outbox before the Deployment says the rollback
        # ended: a start page still waiting then goes out before it instead of
        # being withdrawn as stale. A kill in between resumes VERIFYING and
        # resolves again (the same key).
        await self._pager.notify(NotificationKind.ROLLBACK_COMPLETED, done, summary, details)
        # ready_at stays on the Deployment: decide attributes later signals by it.
        await self._write_state(done, ready_at=ready_at, deployment=deployment)
        await self._recorder.phase(done, result.reason, {"verification": result.reason_code})
        await self._kube.emit_event(done.target, reason=EVENT_VERIFIED, message=result.reason)
        return done

    async def _cleanup(self, rollback: Rollback) -> None:
        """The strategy's work after ROLLBACK_COMPLETED; a failure is recorded, not an ending."""
        strategy = self._strategy_of(rollback)
        try:
            done = await strategy.cleanup(self._kube, rollback.target)
        except (asyncio.CancelledError, FencedError):
            raise  # the next leader finds the cleanup still due and does it
        except Exception as exc:
            log.warning("cleanup_failed", strategy=strategy.name, error=str(exc))
            await self._recorder.event(
                rollback, "cleanup_failed", f"cleanup after the rollback failed: {exc}"
            )
            return
        if done:
            await self._recorder.event(rollback, "cleanup", done, {"strategy": strategy.name})
            await self._kube.emit_event(rollback.target, reason=EVENT_CLEANED_UP, message=done)

    async def _read_restored(self, rollback: Rollback) -> dict[str, Any]:
        """A fresh read that must still show the restored template (else SUPERSEDED)."""
        deployment = await self._read(rollback.target)
        self._check_still_ours(rollback, deployment, restored=True)
        return deployment

    async def _unless_superseded(self, rollback: Rollback, work: Awaitable[T]) -> T:
        """Run ``work`` while watching the template; a change by someone else stops it.

        When both finish together the change wins: rollbackd never reports on
        a version that no longer runs.
        """
        template = self._restored.get(rollback.id)
        if template is None:
            return await work
        work_task = asyncio.ensure_future(work)
        watcher = asyncio.create_task(
            self._kube.wait_template_change(rollback.target, template),
            name=f"takeover-watch:{rollback.id}",
        )
        try:
            await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                error = watcher.exception()
                if isinstance(error, NotFoundError):
                    raise Abort(
                        RollbackReason.TARGET_NOT_FOUND,
                        f"deployment {rollback.target} was deleted",
                        failed=True,
                    ) from error
                if error is not None:
                    raise error
                raise Superseded(watcher.result())
            return work_task.result()
        finally:
            for task in (work_task, watcher):
                task.cancel()
            await asyncio.gather(work_task, watcher, return_exceptions=True)

    async def _record_intervals(self, rollback: Rollback, result: VerifyResult) -> None:
        for interval in result.intervals:
            await self._recorder.event(
                rollback,
                "verify_interval",
                f"interval {interval.index}: {'healthy' if interval.healthy else 'unhealthy'}",
                {
                    "index": interval.index,
                    "at": interval.at.isoformat(),
                    "healthy": interval.healthy,
                    "readiness_ok": interval.readiness_ok,
                    "detail": interval.detail,
                },
            )
