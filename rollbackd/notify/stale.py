"""A "rollback started" page whose rollback already ended elsewhere is withdrawn, not sent.

Each replica has its own journal, hence its own outbox, and only the leader
sends. A leader frozen (or cut off) after queueing a rollback's start page
but before sending it leaves that trigger in its outbox; the next leader
resumes the rollback from the Deployment's state annotation, re-sends the
start page from its own outbox, finishes and resolves. When the first
replica leads again, its old trigger would reopen an incident that is over
and that nothing will ever resolve: a false page.

So before a channel sends such a trigger, the Delivery asks the cluster
(through ``RollbackStateOf``, wired from the watch cache) what the
Deployment's annotation says, and ``judge_trigger`` decides. Pure: row +
cluster state + the channel's pending rows -> send | withdraw(reason).

An approve-mode request ("approve or reject rollback X") is held to the same
rule, and also withdrawn once the annotation shows X past PENDING_APPROVAL:
nobody should be woken to approve what was already decided.

What is never withdrawn here: resolves; escalation and dry-run pages (an
escalation may be the only record of an incident); a trigger followed by a
pending resolve of the same key on the same channel (they go out in order);
and anything when the cluster cannot tell (cache not synced, Deployment
missing, annotation absent or unreadable): a late page beats a lost page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rollbackd.model import TERMINAL_PHASES, Phase, Target
from rollbackd.notify.model import DETAIL_ROLLBACK_ID, Notification, NotificationKind
from rollbackd.notify.outbox import PendingEntry
from rollbackd.state import RollbackState

__all__ = [
    "ENDED_PHASES",
    "SEND",
    "RollbackStateOf",
    "Verdict",
    "judge_trigger",
    "tied_to_rollback",
]

# What the Deployment's state annotation says about a target; None when the
# cluster cannot tell (watch cache not synced, Deployment missing, no or an
# unreadable annotation). Synchronous: a watch-cache read, no API call.
RollbackStateOf = Callable[[Target], RollbackState | None]

# Phases after which a rollback's start page has nothing left to announce.
# ROLLBACK_FAILED is not terminal (ESCALATED follows, with its own page), but
# the rollback itself is over.
ENDED_PHASES = frozenset(TERMINAL_PHASES | {Phase.ROLLBACK_FAILED})


@dataclass(frozen=True)
class Verdict:
    """Send the row, or withdraw it saying why."""

    send: bool
    reason: str = ""

    @classmethod
    def withdraw(cls, reason: str) -> Verdict:
        return cls(send=False, reason=reason)


SEND = Verdict(send=True)


def tied_to_rollback(n: Notification) -> bool:
    """A rollback's start page (or approval request): a trigger keyed by its rollback's id."""
    return (
        n.kind in (NotificationKind.ROLLBACK_STARTED, NotificationKind.APPROVAL_REQUESTED)
        and not n.resolves
        and str(n.details.get(DETAIL_ROLLBACK_ID) or "") == n.dedup_key
    )


def judge_trigger(
    n: Notification, state: RollbackState | None, pending: Sequence[PendingEntry]
) -> Verdict:
    """Whether ``n``, about to go out on a channel, is still worth sending.

    ``state`` is the Deployment's recorded rollback (None: unknown);
    ``pending`` the channel's pending rows. Withdraw only when the cluster
    says the rollback is over (its own state in an ended phase, or a newer
    rollback recorded in its place) and no resolve of the same key waits on
    this channel: a pending resolve is sent after the trigger and closes what
    it opens.
    """
    if not tied_to_rollback(n) or state is None:
        return SEND
    if any(e.resolves and e.dedup_key == n.dedup_key for e in pending):
        return SEND
    writer = state.holder or "another leader"
    if state.rollback_id == n.dedup_key:
        if state.phase in ENDED_PHASES:
            return Verdict.withdraw(
                f"superseded: rollback {n.dedup_key} ended under another leader"
                f" ({state.phase}, recorded by {writer})"
            )
        if (
            n.kind is NotificationKind.APPROVAL_REQUESTED
            and state.phase is not Phase.PENDING_APPROVAL
        ):
            # Approved already: asking a human to approve it now would only confuse.
            return Verdict.withdraw(
                f"decided: rollback {n.dedup_key} no longer waits for approval"
                f" ({state.phase}, recorded by {writer})"
            )
        return SEND
    # Another rollback on the Deployment. Newer only if it started after this
    # page was written (which is after its own rollback started); an older
    # one means this rollback's state never landed: send, the cluster cannot tell.
    if state.started_at > n.created_at:
        return Verdict.withdraw(
            f"superseded: rollback {n.dedup_key} was replaced by the newer rollback"
            f" {state.rollback_id} ({state.phase}, recorded by {writer})"
        )
    return SEND
