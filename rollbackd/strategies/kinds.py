"""The target kind: which object a rollback reads, writes its state on, and watches.

A :class:`~rollbackd.strategies.Strategy` says what a rollback changes; a
:class:`TargetKind` says what the target *is*, so the executor runs one
phase flow for every target. Two kinds, chosen by the factory
(:func:`rollbackd.strategies.factory.kind_of`) from the watch cache:

- a Deployment (:mod:`rollbackd.strategies.deployment`): its template is
  restored or kept, guarded, recorded and watched for a takeover; GitOps
  owners are paused before the write, so PLANNING is recorded first;
- an Argo Rollout (:mod:`rollbackd.strategies.argotarget`): the abort patches
  the status subresource and leaves the template (the canary's) alone; the
  plan's record is the first write, and a GitOps owner is only named.

Each method is one concern of the object: reads, the guarded state write, the
fresh re-check before planning, the journal's ``plan`` event, the pages'
headline, and approve mode's proposal and "moved since" check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rollbackd.approval import commands
from rollbackd.model import Phase, Rollback, Target
from rollbackd.state import RollbackState
from rollbackd.strategies import Obj, Restore

# Annotations to set, or (None) to remove, in the state write.
Changes = Mapping[str, str | None] | None

__all__ = ["Changes", "Fresh", "Plan", "Proposed", "SteppedBack", "TargetKind", "proposal_data"]


@dataclass(frozen=True)
class Fresh:
    """What the fresh re-check found before planning: the revision rolled back from."""

    from_revision: int | None
    rollout_started_at: str | None = None  # the bad version's start (the postmortem)


@dataclass(frozen=True)
class Plan:
    """A rollback planned on fresh reads: the target, the strategy's Restore, the change."""

    deployment: Mapping[str, Any]  # the target object, as read for the plan
    restore: Restore
    from_revision: int | None
    diff_paths: tuple[str, ...]
    rollout_started_at: str | None = None  # the bad ReplicaSet's creation (the postmortem)
    replicasets: Sequence[Obj] = field(default_factory=tuple)  # as read for the plan

    @property
    def to_revision(self) -> int | None:
        return self.restore.to_revision

    @property
    def replicaset_name(self) -> str:
        return str(self.restore.replicaset.get("metadata", {}).get("name", ""))


@dataclass(frozen=True)
class Proposed:
    """Approve mode: what the page says, what must not move, what is written with the phase."""

    data: dict[str, Any]  # the page's, the Event's and the journal's proposal
    watched: Mapping[str, Any]  # a Deployment's template; a Rollout's abort record
    extra: Mapping[str, str | None] | None = None  # annotations written with PENDING_APPROVAL
    current: Mapping[str, Any] | None = None  # the read the phase write is guarded by (None: anew)


@dataclass(frozen=True)
class SteppedBack:
    """Why a rollback (or its proposal) stepped back: someone else moved the target."""

    message: str
    change: Mapping[str, Any]  # what now runs, for the report
    what: str  # what ended ("its proposed abort was withdrawn")
    reason_code: str


class TargetKind(Protocol):
    """The object a rollback's target is (read, state, re-check, wording, approve mode)."""

    # How messages name the object ("Deployment", "Rollout").
    name: str
    # Whether the target's pod template is rollbackd's concern: restored or
    # kept, judged by the guard, recorded (``rollbackd.io/restored``, the
    # no-ping-pong rule), watched for a takeover, announced (RollbackPlanned,
    # RollbackReady) with the digests it runs. An abort writes status only.
    tracks_template: bool
    # None: GitOps owners are paused before the first write (PLANNING is
    # recorded first, so a kill during the pause resumes). A sentence: owners
    # are only named with it, since a sync cannot undo the write.
    gitops_note: str | None

    async def read(self, kube: Any, target: Target) -> dict[str, Any]:
        """A fresh read of the object carrying the state annotation (NotFoundError: gone)."""
        ...

    async def replicasets(self, kube: Any, target: Target) -> list[dict[str, Any]]:
        """Its ReplicaSets, fresh."""
        ...

    def recheck(self, rollback: Rollback, obj: Obj, replicasets: Sequence[Obj]) -> Fresh:
        """The decision's facts again on fresh reads; PlanError when they no longer hold."""
        ...

    async def write_state(
        self, kube: Any, target: Target, current: Obj, state: RollbackState | None, extra: Changes
    ) -> None:
        """The state annotation (and ``extra``) on ``current``, guarded by its resourceVersion."""
        ...

    async def plan_event(
        self, kube: Any, target: Target, plan: Plan, strategy: str
    ) -> tuple[str, dict[str, Any]]:
        """The journal's ``plan`` event (message, data): what the postmortem shows as the change."""
        ...

    def headline(self, rollback: Rollback, phase: Phase) -> str:
        """The pages' first words for ROLLING_BACK and ROLLBACK_COMPLETED."""
        ...

    def proposal(self, rollback: Rollback, plan: Plan) -> Proposed:
        """Approve mode: the proposal of ``plan``."""
        ...

    async def watch_change(
        self, kube: Any, target: Target, watched: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The fresh object once it moved from what a proposal watches (NotFoundError: gone)."""
        ...

    def moved(self, rollback: Rollback, obj: Obj, watched: Mapping[str, Any] | None) -> str | None:
        """How ``obj`` moved since the proposal (``watched`` None: a resumed wait); None: not."""
        ...

    def stepped_back(self, rollback: Rollback, obj: Obj) -> SteppedBack:
        """What the SUPERSEDED page says once someone else moved ``obj``."""
        ...


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
