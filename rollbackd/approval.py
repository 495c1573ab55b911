"""Approve mode: the handshake between a human's verdict and the rollback that waits for it.

A rollback in PENDING_APPROVAL waits in the executor (durably: its phase is on
the Deployment and in the journal). ``Approvals`` hands it a verdict from the
API and returns what came of it, so the operator's answer says what really
happened: 202 only once the approval is on the Deployment (PLANNING) or the
rejection is recorded. A verdict for a rollback that is not waiting here is
answered from the journal: unknown (404), finished (409 naming its phase),
already approved by the same person (200, idempotent) or by someone else (409).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from rollbackd.model import Phase, Rollback

__all__ = [
    "EVENT_KIND_APPROVED",
    "EVENT_KIND_REFUSED",
    "EVENT_KIND_REJECTED",
    "Approvals",
    "Inbox",
    "Outcome",
    "Verdict",
    "answer_from_record",
    "commands",
    "give_verdict",
]

# Journal event kinds of a rollback's timeline (who and when are in their data).
EVENT_KIND_APPROVED = "approved"
EVENT_KIND_REJECTED = "rejected"
EVENT_KIND_REFUSED = "approval_refused"
TIMEOUT_APPROVER = "timeout"


@dataclass(frozen=True)
class Verdict:
    """A human's answer to a proposed rollback (``by`` is who, ``at`` when)."""

    approve: bool
    by: str
    at: datetime
    reason: str = ""

    @property
    def word(self) -> str:
        return "approved" if self.approve else "rejected"

    def as_data(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at.isoformat(), "reason": self.reason}


@dataclass(frozen=True)
class Outcome:
    """The API's answer: an HTTP status, a sentence, and the rollback's phase."""

    status: int
    message: str
    phase: str


def commands(rollback_id: str) -> tuple[str, str]:
    """The exact commands a page quotes, to approve or to reject."""
    return (
        f"rollbackd approve {rollback_id}",
        f'rollbackd reject {rollback_id} --reason "..."',
    )


Inbox = asyncio.Queue[tuple[Verdict, "asyncio.Future[Outcome | None]"]]


class Approvals:
    """The rollbacks waiting for a verdict in this process, and the way to hand them one."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._replies: dict[str, list[asyncio.Future[Outcome | None]]] = {}

    def waiting(self, rollback_id: str) -> bool:
        return rollback_id in self._inboxes

    @contextmanager
    def inbox(self, rollback_id: str) -> Iterator[Inbox]:
        """Register a waiting rollback; verdicts left unanswered at the end fall back to the record."""
        inbox: Inbox = asyncio.Queue()
        self._inboxes[rollback_id] = inbox
        self._replies[rollback_id] = []
        try:
            yield inbox
        finally:
            del self._inboxes[rollback_id]
            for reply in self._replies.pop(rollback_id):
                if not reply.done():
                    reply.set_result(None)

    async def submit(self, rollback_id: str, verdict: Verdict) -> Outcome | None:
        """Hand ``verdict`` to the waiting rollback; None when none waits (ask the record)."""
        inbox = self._inboxes.get(rollback_id)
        if inbox is None:
            return None
        reply: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._replies[rollback_id].append(reply)
        inbox.put_nowait((verdict, reply))
        return await reply


class TimelineEntry(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


def answer_from_record(
    rollback: Rollback, timeline: Sequence[TimelineEntry], verdict: Verdict
) -> Outcome:
    """The answer to a verdict for a rollback that is not waiting (it moved on or ended)."""
    phase = str(rollback.phase)
    given = [e for e in timeline if e.kind in (EVENT_KIND_APPROVED, EVENT_KIND_REJECTED)]
    if given:
        last = given[-1]
        by, word = str(last.data.get("by", "?")), last.kind
        if by == verdict.by and word == verdict.word:  # a retry: idempotent
            return Outcome(
                200, f"rollback {rollback.id} was already {word} by {by}; now {phase}", phase
            )
        return Outcome(
            409,
            f"rollback {rollback.id} was already {word} by {by} at {last.at.isoformat()}; "
            f"it is {phase}",
            phase,
        )
    if rollback.phase.terminal or rollback.phase is Phase.ROLLBACK_FAILED:
        why = f" ({rollback.reason_code}: {rollback.reason})" if rollback.reason_code else ""
        return Outcome(409, f"rollback {rollback.id} has finished: {phase}{why}", phase)
    if rollback.phase is Phase.PENDING_APPROVAL:
        # Recorded as waiting, but no task waits yet: a new leader is resuming it.
        return Outcome(
            503,
            f"rollback {rollback.id} is being resumed by this leader; retry in a few seconds",
            phase,
        )
    return Outcome(409, f"rollback {rollback.id} does not wait for approval: it is {phase}", phase)


class RecordReader(Protocol):
    async def get_rollback(self, rollback_id: str) -> Rollback | None: ...
    async def timeline(self, rollback_id: str) -> Sequence[Any]: ...


async def give_verdict(
    approvals: Approvals,
    journal: RecordReader,
    rollback_id: str,
    verdict: Verdict,
    annotated: Callable[[str], Rollback | None] | None = None,
) -> Outcome:
    """Hand ``verdict`` to the waiting rollback, or answer from the record; LookupError if unknown.

    ``annotated``: the rollback as the Deployments record it. A new leader
    answers from it until its resume has journaled a rollback an earlier
    leader proposed (a 503 while the wait is being resumed, not a 404).
    """
    outcome = await approvals.submit(rollback_id, verdict)
    if outcome is not None:
        return outcome
    rollback = await journal.get_rollback(rollback_id)
    if rollback is None and annotated is not None:
        rollback = annotated(rollback_id)
    if rollback is None:
        raise LookupError(f"no rollback with id {rollback_id!r}")
    return answer_from_record(rollback, list(await journal.timeline(rollback_id)), verdict)
