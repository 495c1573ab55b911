"""PENDING_APPROVAL: propose the rollback, page it, and wait for a human (or the timeout).

Durable: the phase is written on the Deployment (and journaled) before the
page, so a restarted or newly elected leader resumes the wait; the timeout
runs from that recorded time, not from a process timer. While it waits the
target has a rollback in flight (signals join it). A template change by
someone else withdraws the proposal (SUPERSEDED) and the signals behind it
are decided again; so does an approval that finds the target changed.
After an approval the normal path runs: PLANNING re-checks everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
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
    commands,
)
from rollbackd.durations import format_duration
from rollbackd.executor.core import uid_of
from rollbackd.executor.endings import Endings
from rollbackd.executor.planning import Plan
from rollbackd.executor.ports import EVENT_APPROVAL_REQUESTED, EVENT_APPROVED, EVENT_REJECTED, Abort
from rollbackd.guard import images, templates_equal
from rollbackd.kube.errors import NotFoundError
from rollbackd.model import Phase, Rollback
from rollbackd.notify.base import NotificationKind
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import revision_of

# How often the wait re-reads the Deployment when the watch stays silent.
_CHANGE_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Proposal:
    """What is proposed, as planned on fresh reads, and what must not move while it waits."""

    rollback: Rollback  # with the planned revisions
    data: dict[str, Any]  # the page's, the Event's and the journal's proposal
    watched: Mapping[str, Any]  # a Deployment's template; a Rollout's abort record
    current: Mapping[str, Any] | None = None  # the read PENDING_APPROVAL's write is guarded by
    extra: Mapping[str, str | None] | None = None  # annotations written with PENDING_APPROVAL
    uid: str | None = None  # of the Deployment, for its Events


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
        rollback = proposal.rollback
        message = f"waiting for approval: {proposal.data['summary']}"
        if resumed_at is None:
            rollback = await self._enter(
                rollback,
                Phase.PENDING_APPROVAL,
                message,
                deployment=proposal.current,
                extra=proposal.extra,
                data=proposal.data,
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
            await self._recorder.phase(rollback, f"(resumed) {message}", proposal.data)
            since = resumed_at
        summary, details = self._with_gitops(rollback, message, proposal.data)
        await self._pager.notify(NotificationKind.APPROVAL_REQUESTED, rollback, summary, details)
        return await self._wait(rollback, proposal.watched, since, inbox)

    async def _proposal_of(self, rollback: Rollback) -> Proposal:
        """A Deployment's proposal: planned on fresh reads, its template watched while it waits."""
        plan = await self._plan(rollback)
        rollback = replace(rollback, from_revision=plan.from_revision, to_revision=plan.to_revision)
        return Proposal(
            rollback=rollback,
            data=_proposal(rollback, plan),
            watched=plan.deployment["spec"]["template"],
            current=plan.deployment,
            uid=uid_of(plan.deployment),
        )

    async def _watch_change(self, rollback: Rollback, watched: Mapping[str, Any]) -> dict[str, Any]:
        """The fresh target once it moved from what the proposal watches (its template)."""
        return await self._kube.wait_template_change(
            rollback.target, watched, poll_interval=_CHANGE_POLL_SECONDS
        )

    async def _moved(
        self, rollback: Rollback, watched: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], str | None]:
        """The fresh target, and how it moved since the proposal (None: it did not).

        ``watched`` None (a resumed wait): only the revision can be compared.
        """
        deployment = await self._read(rollback.target)
        current = revision_of(deployment)
        moved = current != rollback.from_revision or (
            watched is not None and not templates_equal(deployment["spec"]["template"], watched)
        )
        if not moved:
            return deployment, None
        return deployment, (
            f"{rollback.target} changed while the rollback waited (revision {current}, "
            f"proposed from revision {rollback.from_revision})"
        )

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
                    return await self._withdraw(rollback, _changed(changed))
        finally:
            for task in (arrived, changed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

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
            rollback.target, reason=EVENT_APPROVED, message=message, uid=_deployment_uid(current)
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


def _deployment_uid(target: Mapping[str, Any]) -> str | None:
    """The uid an Event names: a Deployment's (the Events name a Deployment)."""
    return None if target.get("kind") == "Rollout" else uid_of(target)


def _changed(task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    try:
        return task.result()
    except NotFoundError as exc:
        raise Abort(
            RollbackReason.TARGET_NOT_FOUND, "the Deployment was deleted", failed=False
        ) from exc


def _proposal(rollback: Rollback, plan: Plan) -> dict[str, Any]:
    """What the page, the Event and the journal say about the proposed rollback."""
    how = f"from revision {plan.from_revision} to revision {plan.to_revision}"
    if plan.restore.summary:  # a strategy beyond rolling says what it would change
        how = f"by {plan.restore.summary}"
    return proposal_data(
        rollback,
        f"roll back {rollback.target} {how}",
        before=images(plan.deployment["spec"]["template"]),
        after=images(plan.restore.template),
        diff=plan.diff_paths,
        changes=plan.restore.changes,
    )


def proposal_data(
    rollback: Rollback,
    what: str,
    *,
    before: Sequence[str],
    after: Sequence[str],
    diff: Sequence[str] | None,
    changes: Mapping[str, Any],
) -> dict[str, Any]:
    """A proposal's page, Event and journal data: ``what`` would be done, and how to answer.

    ``diff``: the template paths that change (None: no template is patched).
    """
    approve, reject = commands(rollback.id)
    changed = "" if diff is None else f"; changes {', '.join(diff) or 'nothing'}"
    summary = (
        f"rollbackd proposes to {what} "
        f"(images {', '.join(before)} -> {', '.join(after)}{changed}) because "
        f"{rollback.reason or rollback.reason_code}. Approve: {approve} ; reject: {reject}"
    )
    return {
        "summary": summary,
        "reason": rollback.reason,
        "reason_code": rollback.reason_code,
        "from_images": list(before),
        "to_images": list(after),
        "diff": list(diff or ()),
        "approve_command": approve,
        "reject_command": reject,
        **({"changes": dict(changes)} if changes else {}),
    }
