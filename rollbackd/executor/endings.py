"""The terminal phases: ROLLBACK_FAILED, ESCALATED and SUPERSEDED, each with its page.

SUPERSEDED: a template change not made by rollbackd while it rolls back or
verifies means a human took over. Rollbackd stops, leaves their version
alone, records and pages (info) what changed; it never declares
ROLLBACK_COMPLETED for a revision that is not running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import structlog

from rollbackd.executor.ports import (
    EVENT_ESCALATED,
    EVENT_FAILED,
    EVENT_SUPERSEDED,
    Abort,
)
from rollbackd.executor.verifying import Verifying
from rollbackd.guard import templates_equal
from rollbackd.journal import DETAIL_RESTORED_REVISION
from rollbackd.model import Phase, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import revision_of

log = structlog.get_logger("rollbackd.executor")


class Endings(Verifying):
    """Record, mark the Deployment, and page: the way every rollback stops."""

    async def _fail(self, rollback: Rollback, abort: Abort) -> Rollback:
        deployment = await self._fresh_or_none(rollback.target)
        data: dict[str, Any] = {"reason_code": abort.reason_code}
        template = self._restored.get(rollback.id)
        if deployment is not None and template is not None:
            if not templates_equal(deployment["spec"]["template"], template):
                # What failed was someone else's version: they took over.
                return await self._supersede(rollback, deployment)
            revision = revision_of(deployment)
            if revision is not None:
                data[DETAIL_RESTORED_REVISION] = revision
        failed = replace(
            self._advance(rollback, Phase.ROLLBACK_FAILED),
            reason_code=abort.reason_code,
            reason=abort.message,
        )
        await self._best_effort_state(failed)
        await self._recorder.phase(failed, abort.message, data)
        await self._kube.emit_event(
            failed.target, reason=EVENT_FAILED, message=abort.message, type="Warning"
        )
        return await self._escalate(failed, abort.reason_code, abort.message)

    async def _recorded_failure(self, rollback: Rollback) -> tuple[str, str]:
        """Why a rollback found at ROLLBACK_FAILED after a restart failed: code and message.

        The page of a failure the previous daemon recorded but did not escalate
        says what failed (e.g. the smoke check it quotes), not that a daemon
        restarted: the code from the state annotation, the message from the
        journal. Either missing or unreadable: the generic ``rollback_failed``.
        """
        code = _reason(rollback.reason_code)
        try:
            found = await self._recorded(rollback.id) if self._recorded else None
        except Exception as exc:  # the journal unreadable must not stop the escalation
            log.warning("recorded_failure_unread", error=str(exc))
            found = None
        if found is not None and found.phase is Phase.ROLLBACK_FAILED and found.reason:
            return _reason(found.reason_code or code), found.reason
        known = "" if code is RollbackReason.ROLLBACK_FAILED else f" ({code})"
        return code, f"rollback had failed before the restart{known}"

    async def _escalate(self, rollback: Rollback, reason_code: str, message: str) -> Rollback:
        """Terminal: record, mark the Deployment, and page a human."""
        escalated = replace(
            self._advance(rollback, Phase.ESCALATED, finished=True),
            reason_code=reason_code,
            reason=message,
        )
        # The page is durable (the outbox) before the terminal phase is written
        # anywhere: a kill between the two leaves a phase a restart resumes and
        # escalates again (the same page, deduplicated), never a silent ESCALATED.
        summary, details = self._with_gitops(
            escalated,
            f"rollbackd could not roll back {escalated.target}: {message}",
            {"reason_code": reason_code, "reason": message},
        )
        await self._pager.notify(NotificationKind.ESCALATION, escalated, summary, details)
        await self._best_effort_state(escalated)
        try:
            await self._recorder.phase(escalated, message, {"reason_code": reason_code})
        finally:
            await self._kube.emit_event(
                escalated.target,
                reason=EVENT_ESCALATED,
                message=f"{reason_code}: {message}",
                type="Warning",
            )
        return escalated

    async def _supersede(self, rollback: Rollback, deployment: Mapping[str, Any]) -> Rollback:
        """Terminal SUPERSEDED: someone else moved the target; step back and say so (info).

        The target kind words it (what moved, and the reason code it ends with).
        """
        stepped = self._kind(rollback.target).stepped_back(rollback, deployment)
        message, change, reason_code = stepped.message, stepped.change, stepped.reason_code
        during = rollback.phase
        superseded = replace(
            self._advance(rollback, Phase.SUPERSEDED, finished=True),
            reason_code=reason_code,
            reason=message,
        )
        details: dict[str, Any] = {"during": str(during), "superseded_by": dict(change)}
        summary, page = self._with_gitops(
            superseded,
            f"rollbackd stepped back from {superseded.target}: {stepped.what}; {message}",
            {**details, "reason_code": reason_code, "reason": message},
        )
        # Paged before the phase is written anywhere, as ROLLBACK_COMPLETED is:
        # the start page waiting in the outbox is then closed, not withdrawn.
        await self._pager.notify(NotificationKind.SUPERSEDED, superseded, summary, page)
        await self._best_effort_state(superseded)
        try:
            await self._recorder.phase(superseded, message, details)
        finally:
            await self._kube.emit_event(superseded.target, reason=EVENT_SUPERSEDED, message=message)
        return superseded


def _reason(code: str) -> RollbackReason:
    """A recorded reason code, or ``rollback_failed`` for one that is not (a metric label)."""
    try:
        return RollbackReason(code) if code else RollbackReason.ROLLBACK_FAILED
    except ValueError:
        return RollbackReason.ROLLBACK_FAILED
