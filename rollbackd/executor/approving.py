"""PENDING_APPROVAL: propose the rollback, page it, and wait for a human (or the timeout).

Durable: the phase is written on the target (and journaled) before the
page, so a restarted or newly elected leader resumes the wait; the timeout
runs from that recorded time, not from a process timer. While it waits the
target has a rollback in flight (signals join it). A change by someone else
(what counts is the target kind's: a Deployment's template) withdraws the
proposal (SUPERSEDED) and the signals behind it are decided again; so does
an approval that finds the target changed. After an approval the normal
path runs: PLANNING re-checks everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rollbackd.approval import (
    EVENT_KIND_APPROVED,
    EVENT_KIND_REFUSED,
    EVENT_KIND_REJECTED,
    TIMEOUT_APPROVER,
    Inbox,
    Outcome,
    Verdict,
)
from rollbackd.durations import format_duration
from rollbackd.executor.core import uid_of
from rollbackd.executor.endings import Endings
from rollbackd.executor.ports import EVENT_APPROVAL_REQUESTED, EVENT_APPROVED, EVENT_REJECTED, Abort
from rollbackd.kube.errors import NotFoundError
from rollbackd.model import Phase, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import RollbackReason
from rollbackd.strategies.kinds import Proposed
from rollbackd.supervision import cancel_and_wait


@dataclass(frozen=True)
class Proposal:
    """What is proposed, as planned on fresh reads, and what must not move while it waits."""

    rollback: Rollback  # with the planned revisions
    proposed: Proposed  # the target kind's: the page's data, what is watched, what is written
    uid: str | None = None  # of the target object, for its Events


class Approving(Endings):
    """Approve mode: the proposal, the wait, and the verdict."""

    async def _propose(self, rollback: Rollback, *, resumed_at: datetime | None) -> Rollback | None:
        """Page the proposal and wait; None once approved and PLANNING is on the Deployment.

        ``resumed_at``: the recorded start of an earlier wait (a restart or a
        new leader); the timeout runs from it and the phase is not rewritten.
        """
        # Open before the phase is recorded: a verdict that follows the record
        # at once waits in the inbox instead of finding nobody waiting.
        with self._approvals.inbox(rollback.id) as inbox:
            return await self._proposed(rollback, resumed_at, inbox)

    async def _proposed(
        self, rollback: Rollback, resumed_at: datetime | None, inbox: Inbox
    ) -> Rollback | None:
        proposal = await self._proposal_of(rollback)
        rollback, proposed = proposal.rollback, proposal.proposed
        message = f"waiting for approval: {proposed.data['summary']}"
        if resumed_at is None:
            rollback = await self._enter(
                rollback,
                Phase.PENDING_APPROVAL,
                message,
                deployment=proposed.current,
                extra=proposed.extra,
                data=proposed.data,
            )
            since = rollback.updated_at
            await self._kube.emit_event(
                rollback.target,
                reason=EVENT_APPROVAL_REQUESTED,
                message=message,
                uid=proposal.uid,
            )
        else:
            # The record of this replica's journal may lack it (another leader proposed it).
            rollback = replace(rollback, phase=Phase.PENDING_APPROVAL, updated_at=resumed_at)
            self._latest[rollback.id] = rollback
            await self._recorder.phase(rollback, f"(resumed) {message}", proposed.data)
            since = resumed_at
        summary, details = self._with_gitops(rollback, message, proposed.data)
        await self._pager.notify(NotificationKind.APPROVAL_REQUESTED, rollback, summary, details)
        return await self._wait(rollback, proposed.watched, since, inbox)

    async def _proposal_of(self, rollback: Rollback) -> Proposal:
        """Planned on fresh reads; the target kind says what is proposed and what is watched."""
        kind = self._kind(rollback.target)
        plan = await self._plan(rollback)
        rollback = replace(rollback, from_revision=plan.from_revision, to_revision=plan.to_revision)
        if kind.gitops_note is not None:  # named on the proposal page too: Git holds the change
            self._name_owner(rollback, plan.deployment)
        return Proposal(rollback, kind.proposal(rollback, plan), uid_of(plan.deployment))

    async def _watch_change(self, rollback: Rollback, watched: Mapping[str, Any]) -> dict[str, Any]:
        """The fresh target once it moved from what the proposal watches."""
        kind = self._kind(rollback.target)
        return await kind.watch_change(self._kube, rollback.target, watched)

    async def _moved(
        self, rollback: Rollback, watched: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str | None]:
        """The fresh target, and how it moved since the proposal (None: it did not).

        ``watched`` None (a resumed wait): what the target itself records.
        """
        target = await self._read(rollback.target)
        return target, self._kind(rollback.target).moved(rollback, target, watched)

    async def _wait(
        self, rollback: Rollback, template: Mapping[str, Any], since: datetime, inbox: Inbox
    ) -> Rollback | None:
        deadline = since + self._approval_timeout
        changed = asyncio.create_task(self._watch_change(rollback, template))
        arrived = asyncio.create_task(inbox.get())
        try:
            while True:
                remaining = (deadline - self._clock()).total_seconds()
                if remaining <= 0:
                    return await self._timed_out(rollback, template)
                await asyncio.wait(
                    {arrived, changed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                # A verdict first: an approval re-reads the target and refuses if it moved.
                if arrived.done():
                    verdict, reply = arrived.result()
                    return await self._answer(rollback, template, verdict, reply)
                if changed.done():
                    return await self._withdraw(rollback, self._changed(rollback, changed))
        finally:
            await cancel_and_wait((arrived, changed))

    async def _answer(
        self,
        rollback: Rollback,
        template: Mapping[str, Any],
        verdict: Verdict,
        reply: asyncio.Future[Outcome | None],
    ) -> Rollback | None:
        """Act on a verdict; ``reply`` is answered once what it caused is recorded."""
        if not verdict.approve:
            rejected = await self._reject(rollback, verdict)
            reply.set_result(Outcome(202, rejected.reason, str(rejected.phase)))
            return rejected
        return await self._approve(rollback, template, verdict, reply)

    async def _approve(
        self,
        rollback: Rollback,
        template: Mapping[str, Any],
        verdict: Verdict,
        reply: asyncio.Future[Outcome | None] | None,
    ) -> Rollback | None:
        current, moved = await self._moved(rollback, template)
        if moved is not None:
            refusal = (
                f"approval by {verdict.by} refused: {moved}; "
                "the proposal is withdrawn and the decision is made again"
            )
            await self._recorder.event(rollback, EVENT_KIND_REFUSED, refusal, verdict.as_data())
            ended = await self._withdraw(rollback, current)
            if reply is not None:
                reply.set_result(Outcome(409, refusal, str(ended.phase)))
            return ended
        message = f"approved by {verdict.by} at {verdict.at.isoformat(timespec='seconds')}"
        await self._recorder.event(rollback, EVENT_KIND_APPROVED, message, verdict.as_data())
        await self._kube.emit_event(
            rollback.target, reason=EVENT_APPROVED, message=message, uid=uid_of(current)
        )
        rollback = await self._enter(rollback, Phase.PLANNING, f"{message}; planning the rollback")
        if reply is not None:
            reply.set_result(Outcome(202, message, str(rollback.phase)))
        return None

    async def _reject(self, rollback: Rollback, verdict: Verdict) -> Rollback:
        """Terminal: a human said no; nothing was changed. The page is resolved (info)."""
        message = (
            f"rejected by {verdict.by} at {verdict.at.isoformat(timespec='seconds')}: "
            f"{verdict.reason}; nothing was changed"
        )
        rejected = replace(
            self._advance(rollback, Phase.REJECTED, finished=True),
            reason_code=RollbackReason.REJECTED,
            reason=message,
        )
        await self._recorder.event(rollback, EVENT_KIND_REJECTED, message, verdict.as_data())
        await self._best_effort_state(rejected)
        try:
            await self._recorder.phase(rejected, message, {"rejected": verdict.as_data()})
        finally:
            await self._kube.emit_event(rejected.target, reason=EVENT_REJECTED, message=message)
            await self._pager.notify(
                NotificationKind.REJECTED,
                rejected,
                f"rollback of {rejected.target} {message}",
                {"reason_code": RollbackReason.REJECTED, "reason": message},
            )
        return rejected

    async def _timed_out(self, rollback: Rollback, template: Mapping[str, Any]) -> Rollback | None:
        waited = format_duration(self._approval_timeout)
        if self._approve_on_timeout:
            at = self._clock()
            await self._recorder.event(
                rollback, "approval_timeout", f"nobody answered within {waited}: rolling back"
            )
            return await self._approve(
                rollback, template, Verdict(True, TIMEOUT_APPROVER, at), None
            )
        return await self._escalate(
            rollback,
            RollbackReason.APPROVAL_TIMEOUT,
            f"nobody approved or rejected the proposed rollback within {waited}; nothing was "
            f"changed (to roll back now: rollbackd rollback {rollback.target} --force)",
        )

    async def _resume_proposal(self, rollback: Rollback, since: datetime) -> Rollback | None:
        """A wait an earlier process left: withdrawn if the target moved meanwhile, else resumed."""
        current, moved = await self._moved(rollback, None)
        if moved is not None:
            return await self._withdraw(rollback, current)
        return await self._propose(rollback, resumed_at=since)

    async def _withdraw(self, rollback: Rollback, deployment: Mapping[str, Any]) -> Rollback:
        """The target changed under the proposal: end it SUPERSEDED and decide again."""
        ended = await self._supersede(rollback, deployment)
        self.on_withdrawn(ended)
        return ended

    def _changed(self, rollback: Rollback, task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
        try:
            return task.result()
        except NotFoundError as exc:
            name = self._kind(rollback.target).name
            raise Abort(
                RollbackReason.TARGET_NOT_FOUND, f"the {name} was deleted", failed=False
            ) from exc
