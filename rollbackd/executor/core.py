"""What every step of a rollback shares: its collaborators, phase writes and fresh reads.

Safety rule 10: every write carries a resourceVersion precondition. A
conflict means someone else wrote the Deployment: re-read, and re-apply
while the change is still right (the state annotation is still ours and, in
the phases where the template is rollbackd's, the template is still the
restored one); conflicts are paid from the rollback's retry budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from rollbackd.approval import Approvals
from rollbackd.executor.ports import (
    Abort,
    KubePort,
    Pager,
    Recorder,
    Superseded,
    VerifierPort,
)
from rollbackd.guard import templates_equal
from rollbackd.kube.errors import ConflictError, NotFoundError
from rollbackd.kube.fencing import FencedError
from rollbackd.kube.retry import RetryBudget, backoff_delay, current_budget
from rollbackd.model import Phase, Policy, Rollback, Target
from rollbackd.reasons import RollbackReason
from rollbackd.state import RollbackState, recorded_state
from rollbackd.strategies import PlanError, Strategy
from rollbackd.strategies.factory import DEFAULT, by_name, for_target, kind_of, recorded
from rollbackd.strategies.kinds import TargetKind

log = structlog.get_logger("rollbackd.executor")

# Phases in which the Deployment's template is rollbackd's restored one.
RESTORED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.VERIFYING, Phase.ROLLBACK_COMPLETED})
# Phases in which the template was already patched: a stop there is a failure.
PATCHED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.VERIFYING})


class Core:
    """Collaborators and per-rollback memory; the helpers every step uses."""

    def __init__(
        self,
        kube: KubePort,
        verifier: VerifierPort,
        recorder: Recorder,
        pager: Pager,
        *,
        rollout_timeout: float,
        clock: Callable[[], datetime],
        policy_for: Callable[[Target], Policy],
        strategy: Strategy | None = None,
        resume_max_age: timedelta = timedelta(minutes=10),
        retry_budget: float | None = None,
        approvals: Approvals | None = None,
        approval_timeout: timedelta = timedelta(minutes=15),
        approve_on_timeout: bool = False,
        recorded: Callable[[str], Awaitable[Rollback | None]] | None = None,
    ) -> None:
        self._kube = kube
        self._verifier = verifier
        self._recorder = recorder
        self._pager = pager
        self._rollout_timeout = rollout_timeout
        # Seconds one rollback may spend waiting out transient API faults and
        # write conflicts: as long as the rollout itself may take, by default.
        self._retry_budget = rollout_timeout if retry_budget is None else retry_budget
        self._clock = clock
        self._policy_for = policy_for
        # A fixed strategy (tests); else each rollback's from the factory.
        self._fixed_strategy = strategy
        self._strategies: dict[str, Strategy] = {}
        # Whose version each rollback in progress waits for and verifies.
        self._verify_targets: dict[str, Target] = {}
        # Verification from a ready_at older than this would judge data that
        # may have aged out; verify afresh from now instead.
        self._resume_max_age = resume_max_age
        # Approve mode: where verdicts arrive, how long a proposal waits, and
        # whether a silence approves (else it escalates).
        self._approvals = approvals or Approvals()
        self._approval_timeout = approval_timeout
        self._approve_on_timeout = approve_on_timeout
        # The journal's record of a rollback by id: what a resumed ending says.
        self._recorded = recorded
        # Told when a proposal is withdrawn because the target changed, so
        # the signals behind it are decided again (the dispatcher sets it).
        self.on_withdrawn: Callable[[Rollback], None] = lambda _: None
        # The newest phase of each rollback in progress, for the error paths.
        self._latest: dict[str, Rollback] = {}
        # The GitOps owner of each rollback in progress, for every page after planning.
        self._gitops: dict[str, dict[str, Any]] = {}
        # The pod template each rollback in progress restored (hash label stripped).
        self._restored: dict[str, Mapping[str, Any]] = {}

    # ------------------------------------------------------------- strategy

    def _strategy_of(self, rollback: Rollback) -> Strategy:
        """The strategy chosen for ``rollback`` (rolling until one is chosen)."""
        return self._strategies.get(rollback.id) or self._fixed_strategy or by_name(DEFAULT)

    async def _choose_strategy(
        self, rollback: Rollback, deployment: Mapping[str, Any], *, resumed: bool = False
    ) -> Strategy:
        """The factory's choice: a selecting Service's declaration, or the recorded one on resume."""
        strategy = self._fixed_strategy
        if strategy is None and resumed:
            strategy = recorded(deployment)
        elif strategy is None:
            try:
                strategy = await for_target(self._kube, rollback.target, deployment)
            except PlanError as exc:
                raise Abort(exc.reason_code, exc.message, failed=False) from exc
        self._strategies[rollback.id] = strategy
        return strategy

    def _kind(self, target: Target) -> TargetKind:
        """What the target is (the factory's TargetKind), from the watch cache on each call."""
        return kind_of(self._kube, target)

    def _verify_target(self, rollback: Rollback) -> Target:
        return self._verify_targets.get(rollback.id, rollback.target)

    # ----------------------------------------------------------------- phases

    def _advance(self, rollback: Rollback, phase: Phase, *, finished: bool = False) -> Rollback:
        now = self._clock()
        return replace(rollback, phase=phase, updated_at=now, finished_at=now if finished else None)

    async def _enter(
        self,
        rollback: Rollback,
        phase: Phase,
        message: str,
        *,
        ready_at: datetime | None = None,
        extra: Mapping[str, str | None] | None = None,
        deployment: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Rollback:
        """Write the phase on the Deployment first, then record it (``data``: journal details)."""
        rollback = self._advance(rollback, phase)
        await self._write_state(rollback, ready_at=ready_at, extra=extra, deployment=deployment)
        self._latest[rollback.id] = rollback
        await self._recorder.phase(rollback, message, data)
        return rollback

    def _state(self, rollback: Rollback, ready_at: datetime | None = None) -> RollbackState:
        return RollbackState(
            rollback_id=rollback.id,
            phase=rollback.phase,
            from_revision=rollback.from_revision,
            to_revision=rollback.to_revision,
            started_at=rollback.started_at,
            updated_at=rollback.updated_at,
            reason_code=rollback.reason_code,
            reason=rollback.reason,
            ready_at=ready_at,
            # Fencing: the term this state is written in (None without a Lease).
            holder=term.holder if (term := self._kube.fence.term) else None,
            term=term.number if term else None,
        )

    # ------------------------------------------------------------ state writes

    async def _write_state(
        self,
        rollback: Rollback,
        *,
        ready_at: datetime | None = None,
        extra: Mapping[str, str | None] | None = None,
        deployment: Mapping[str, Any] | None = None,
    ) -> None:
        """Annotation-only write on the target object from a fresh read; a conflict re-reads.

        Re-applying is safe only while the change is still right, checked on
        every read: the state annotation is not another rollback's, and in
        the phases where the template is rollbackd's, the template is still
        the restored one (else SUPERSEDED). Conflicts are retried while the
        rollback's retry budget lasts, not a fixed number of times.
        """
        attempt = 0
        while True:
            attempt += 1
            current = deployment if deployment is not None else await self._read(rollback.target)
            deployment = None
            self._check_still_ours(rollback, current, restored=rollback.phase in RESTORED_PHASES)
            kind = self._kind(rollback.target)
            try:
                await kind.write_state(
                    self._kube, rollback.target, current, self._state(rollback, ready_at), extra
                )
                return
            except ConflictError as exc:
                await self._pause_after_conflict(rollback, attempt, exc)

    def _check_still_ours(
        self, rollback: Rollback, deployment: Mapping[str, Any], *, restored: bool
    ) -> None:
        """Raise unless writing ``rollback``'s state on ``deployment`` is still right."""
        state = recorded_state(deployment)
        if state is not None and state.rollback_id != rollback.id and not state.phase.terminal:
            raise Abort(
                RollbackReason.ROLLBACK_IN_FLIGHT,
                f"another rollback ({state.rollback_id}, {state.phase}) is recorded on "
                f"{rollback.target}",
                failed=False,
            )
        template = self._restored.get(rollback.id)
        if restored and template is not None:
            if not templates_equal(deployment.get("spec", {}).get("template") or {}, template):
                raise Superseded(deployment)

    async def _best_effort_state(self, rollback: Rollback) -> None:
        try:
            await self._write_state(rollback)
        except (asyncio.CancelledError, FencedError):
            raise  # fenced: no page either
        except Exception as exc:  # the page matters more than the annotation
            log.warning("state_not_recorded", phase=str(rollback.phase), error=str(exc))

    async def _pause_after_conflict(
        self, rollback: Rollback, attempt: int, exc: ConflictError
    ) -> None:
        """Back off before re-reading; give up once the rollback's retry budget cannot pay."""
        budget = current_budget() or RetryBudget(self._retry_budget)
        delay = backoff_delay(attempt, None)
        if delay > budget.remaining:
            latest = self._latest.get(rollback.id, rollback)
            raise Abort(
                RollbackReason.WRITE_CONFLICTS,
                f"the Deployment kept changing under rollbackd's writes for the whole retry "
                f"budget ({self._retry_budget:g}s, {attempt} conflicts): {exc}",
                failed=latest.phase in PATCHED_PHASES,
            ) from exc
        budget.spend(delay)
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ reads

    async def _fresh_or_none(self, target: Target) -> dict[str, Any] | None:
        """A fresh read for an ending, which must not fail because the read did."""
        try:
            return await self._kind(target).read(self._kube, target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("deployment_not_read", error=str(exc))
            return None

    async def _read(self, target: Target) -> dict[str, Any]:
        """A fresh read of the object the target kind reads; gone: escalate."""
        kind = self._kind(target)
        try:
            return await kind.read(self._kube, target)
        except NotFoundError as exc:
            raise Abort(
                RollbackReason.TARGET_NOT_FOUND, f"{kind.name} {target} not found", failed=False
            ) from exc

    # ------------------------------------------------------------------ pages

    def _with_gitops(
        self, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Add the GitOps owner to a page: Git still holds the bad version."""
        gitops = self._gitops.get(rollback.id)
        if gitops is None:
            return summary, dict(details)
        # Every owner paused: the target's, then e.g. a blue-green Service's own.
        owner = " and ".join(
            str(o["owner"]) + (f" ({o['of']})" if o.get("of") else "")
            for o in (gitops, *gitops.get("also_paused", ()))
        )
        if gitops.get("note"):  # named, not paused: the target kind says why
            sentence = f"managed by {owner}: {gitops['note']}"
        elif gitops["paused"]:
            sentence = (
                f"managed by {owner}: auto-sync paused; revert the change in Git before resuming"
            )
        else:
            sentence = (
                f"managed by {owner}: auto-sync could not be paused, so nothing was rolled back; "
                "revert the change in Git"
            )
        return f"{summary}. {sentence}", {**details, "gitops": gitops}


def uid_of(deployment: Mapping[str, Any]) -> str | None:
    """The Deployment's UID, for Events (None when unknown)."""
    uid = deployment.get("metadata", {}).get("uid")
    return str(uid) if uid else None
