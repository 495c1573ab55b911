"""The rollback state machine: plan, apply, wait for the rollout, verify.

``PLANNING -> ROLLING_BACK -> VERIFYING -> ROLLBACK_COMPLETED``, or
``ROLLBACK_FAILED -> ESCALATED`` when the restored version does not roll out
or does not verify, or straight to ``ESCALATED`` when planning finds that a
rollback must not be done (the target changed, the guard refuses, nothing to
restore).

Durability: the phase and rollback id are written on the Deployment
(``rollbackd.io/rollback``) before each step; the ROLLING_BACK state is written
in the same guarded patch that restores the template, so "the annotation says
ROLLING_BACK" and "the patch landed" are one fact. A restarted daemon calls
:meth:`Executor.resume`, which continues from the recorded phase.

Safety rule 10: every write carries a resourceVersion precondition. A conflict
means someone else wrote the Deployment: re-read, and re-apply while the
change is still right (the plan still holds, the template is still the one
rollbackd restored, the state annotation is still ours); if the revision
moved (a human deployed) before the patch, escalate "target changed" without
touching the template; after it, end ``SUPERSEDED``.

SUPERSEDED: a template change not made by rollbackd while it rolls back or
verifies means a human took over. Rollbackd stops, leaves their version
alone, records and pages (info) what changed; it never declares
ROLLBACK_COMPLETED for a revision that is not running.

Transient faults (429, 5xx, connection errors, timeouts) are retried by the
Kubernetes adapter, and write conflicts here, out of one budget per rollback
(``retry_budget``, by default the rollout timeout). When the budget is spent
the rollback ends with a reason code in ``RETRYABLE_REASON_CODES``, so the
next signal may try again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from rollbackd.fencing import FencedError
from rollbackd.gitops import GitOpsError, PauseResult, pause
from rollbackd.guard import (
    disallowed_changes,
    images,
    mutable_images,
    template_diff_paths,
    templates_equal,
)
from rollbackd.journal import DETAIL_RESTORED_REVISION
from rollbackd.kube import (
    ConflictError,
    ForbiddenError,
    Kube,
    KubeError,
    NotFoundError,
    gitops_owner,
)
from rollbackd.kuberetry import RetryBudget, backoff_delay, budget_scope, current_budget
from rollbackd.model import (
    ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_RESTORED,
    ANNOTATION_ROLLBACK,
    LABEL_POD_TEMPLATE_HASH,
    REASON_KUBE_UNAVAILABLE,
    REASON_WRITE_CONFLICTS,
    Action,
    Decision,
    Phase,
    Policy,
    Rollback,
    Target,
)
from rollbackd.notify.base import NotificationKind
from rollbackd.state import RollbackState, decode_state, encode_state
from rollbackd.strategies import PlanError, Strategy
from rollbackd.strategies.rolling import (
    RollingStrategy,
    revision_of,
    select_replicaset,
    strip_hash,
)
from rollbackd.verify import Verifier, VerifyResult

log = logging.getLogger(__name__)

T = TypeVar("T")

# Event reasons on the Deployment, one per step (kubectl describe shows them).
EVENT_PLANNED = "RollbackPlanned"
EVENT_STARTED = "RollbackStarted"
EVENT_READY = "RollbackReady"
EVENT_VERIFIED = "RollbackVerified"
EVENT_FAILED = "RollbackFailed"
EVENT_ESCALATED = "RollbackEscalated"
EVENT_GITOPS_PAUSED = "GitOpsPaused"
EVENT_SUPERSEDED = "RollbackSuperseded"

REASON_SUPERSEDED = "superseded"
# Phases in which the Deployment's template is rollbackd's restored one.
_RESTORED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.VERIFYING, Phase.ROLLBACK_COMPLETED})


class Recorder(Protocol):
    """Journal + metrics + logs (the daemon wires it)."""

    async def phase(
        self, rollback: Rollback, message: str, data: Mapping[str, Any] | None = None
    ) -> None: ...

    async def event(
        self,
        rollback: Rollback,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
    ) -> None: ...


class Pager(Protocol):
    """Notifications keyed by rollback id; returns once the page is durable (the outbox).

    Idempotent per (rollback, kind): a resumed rollback re-sends its pages safely.
    """

    async def notify(
        self,
        kind: NotificationKind,
        rollback: Rollback,
        summary: str,
        details: Mapping[str, Any],
    ) -> None: ...


@dataclass(frozen=True)
class _Plan:
    deployment: Mapping[str, Any]  # fresh, after the PLANNING state write
    replicaset: Mapping[str, Any]
    from_revision: int
    to_revision: int
    template_hash: str
    predicted_revision: int  # what the controller will number the restored revision
    diff_paths: tuple[str, ...]


class _Abort(Exception):
    """Stop the rollback: ``failed`` after the template was changed, else escalate only."""

    def __init__(self, reason_code: str, message: str, *, failed: bool) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
        self.failed = failed


class _Superseded(Exception):
    """Someone else changed the pod template after rollbackd restored it."""

    def __init__(self, deployment: Mapping[str, Any]) -> None:
        super().__init__("the pod template was changed by someone else")
        self.deployment = deployment


class Executor:
    """Runs one rollback at a time per call; the daemon guarantees one per target."""

    def __init__(
        self,
        kube: Kube,
        verifier: Verifier,
        recorder: Recorder,
        pager: Pager,
        *,
        rollout_timeout: float,
        clock: Callable[[], datetime],
        policy_for: Callable[[Target], Policy],
        strategy: Strategy | None = None,
        resume_max_age: timedelta = timedelta(minutes=10),
        retry_budget: float | None = None,
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
        self._strategy: Strategy = strategy or RollingStrategy()
        # Verification from a ready_at older than this would judge data that
        # may have aged out; verify afresh from now instead.
        self._resume_max_age = resume_max_age
        # The newest phase of each rollback in progress, for the error paths.
        self._latest: dict[str, Rollback] = {}
        # The GitOps owner of each rollback in progress, for every page after planning.
        self._gitops: dict[str, dict[str, Any]] = {}
        # The pod template each rollback in progress restored (hash label stripped).
        self._restored: dict[str, Mapping[str, Any]] = {}

    # ------------------------------------------------------------ entry points

    async def run(self, rollback: Rollback, decision: Decision) -> Rollback:
        """Carry ``rollback`` (a ROLLBACK decision) to a terminal phase."""
        if decision.action is not Action.ROLLBACK:
            raise ValueError(f"the executor only runs rollback decisions, not {decision.action}")
        rollback = replace(
            rollback,
            from_revision=decision.from_revision,
            to_revision=decision.to_revision,
            reason_code=rollback.reason_code or decision.reason_code,
            reason=rollback.reason or decision.reason,
        )
        with budget_scope(RetryBudget(self._retry_budget)):
            return await self._guarded(rollback, self._from_planning(rollback))

    async def resume(self, target: Target, state: RollbackState) -> Rollback:
        """Continue a rollback a previous daemon left at ``state.phase``."""
        with budget_scope(RetryBudget(self._retry_budget)):
            return await self._resume(target, state)

    async def _resume(self, target: Target, state: RollbackState) -> Rollback:
        rollback = Rollback(
            id=state.rollback_id,
            target=target,
            phase=state.phase,
            started_at=state.started_at,
            updated_at=state.updated_at,
            from_revision=state.from_revision,
            to_revision=state.to_revision,
            reason_code=state.reason_code,
        )
        if state.phase.terminal:
            return rollback
        await self._recorder.event(
            rollback, "resumed", f"resuming rollback from phase {state.phase}"
        )
        if state.phase in (Phase.PENDING, Phase.PLANNING):
            return await self._guarded(rollback, self._from_planning(rollback))
        await self._remember_paused_owner(rollback)
        if state.phase in (Phase.ROLLING_BACK, Phase.VERIFYING):
            # The patch may have landed just before the process died, before its
            # page was durable: re-send it (the outbox keeps one per rollback).
            summary, details = self._with_gitops(
                rollback,
                f"rollbackd is rolling back {rollback.target} to revision {rollback.to_revision}",
                {"reason_code": rollback.reason_code, "resumed_from": str(state.phase)},
            )
            await self._pager.notify(NotificationKind.ROLLBACK_STARTED, rollback, summary, details)
        if state.phase is Phase.ROLLING_BACK:
            return await self._guarded(rollback, self._resume_rolling_back(rollback))
        if state.phase is Phase.VERIFYING:
            now = self._clock()
            ready_at = state.ready_at
            if ready_at is None or now - ready_at > self._resume_max_age:
                ready_at = now
            return await self._guarded(rollback, self._resume_verifying(rollback, ready_at))
        # ROLLBACK_FAILED: the failure was recorded, the escalation may not have been.
        try:
            return await self._escalate(
                rollback, "rollback_failed", "rollback had failed before the restart"
            )
        finally:
            self._gitops.pop(rollback.id, None)

    async def _remember_paused_owner(self, rollback: Rollback) -> None:
        """Past planning, the GitOps owner was paused: the pages must keep saying so.

        The pause precedes the template patch that wrote ROLLING_BACK, so a
        rollback resumed from that phase or later has a paused owner.
        """
        try:
            deployment = await self._kube.read_deployment(rollback.target)
        except KubeError:
            return  # the resumed steps read it again and report what is wrong
        owner = gitops_owner(deployment)
        if owner is not None:
            self._gitops[rollback.id] = {"owner": owner, "paused": True}

    async def _guarded(self, rollback: Rollback, steps: Awaitable[Rollback]) -> Rollback:
        """Turn every way a rollback can stop into a recorded terminal phase.

        Cancellation is not a failure: the annotation keeps the phase and the
        next leader resumes, so it propagates untouched.
        """
        try:
            return await steps
        except (asyncio.CancelledError, FencedError):
            # Fenced: this replica may no longer lead; the leader resumes it.
            raise
        except _Superseded as superseded:
            latest = self._latest.get(rollback.id, rollback)
            return await self._supersede(latest, superseded.deployment)
        except _Abort as abort:
            latest = self._latest.get(rollback.id, rollback)
            if abort.failed:
                return await self._fail(latest, abort)
            return await self._escalate(latest, abort.reason_code, abort.message)
        except Exception as exc:
            latest = self._latest.get(rollback.id, rollback)
            # Once the template was patched, the rollback itself failed.
            failed = latest.phase in (Phase.ROLLING_BACK, Phase.VERIFYING)
            error = self._abort_for(exc, failed=failed)
            if failed:
                return await self._fail(latest, error)
            return await self._escalate(latest, error.reason_code, error.message)
        finally:
            self._latest.pop(rollback.id, None)
            self._gitops.pop(rollback.id, None)
            self._restored.pop(rollback.id, None)

    def _abort_for(self, exc: Exception, *, failed: bool) -> _Abort:
        """The recorded ending of an error that stopped the rollback.

        Transient API errors only get here once the rollback's retry budget is
        spent: that gets its own reason code so the next signal may try again.
        """
        if isinstance(exc, KubeError) and exc.transient:
            return _Abort(
                REASON_KUBE_UNAVAILABLE,
                "the Kubernetes API kept failing for the rollback's whole retry budget "
                f"({self._retry_budget:g}s): {exc}",
                failed=failed,
            )
        if isinstance(exc, ForbiddenError):
            return _Abort("kube_forbidden", f"rollbackd is not allowed to: {exc}", failed=failed)
        log.error("rollback stopped by an unexpected error", exc_info=exc)
        return _Abort("executor_error", f"rollback stopped by an error: {exc}", failed=failed)

    # ------------------------------------------------------------------ steps

    async def _from_planning(self, rollback: Rollback) -> Rollback:
        rollback = await self._enter(rollback, Phase.PLANNING, "planning the rollback")
        plan = await self._plan(rollback)
        rollback = replace(rollback, from_revision=plan.from_revision, to_revision=plan.to_revision)
        message = (
            f"rolling back from revision {plan.from_revision} to revision {plan.to_revision} "
            f"(ReplicaSet {plan.replicaset['metadata']['name']})"
        )
        await self._kube.emit_event(
            rollback.target, reason=EVENT_PLANNED, message=message, uid=self._uid(plan)
        )
        await self._recorder.event(
            rollback,
            "plan",
            message,
            {
                "replicaset": plan.replicaset["metadata"]["name"],
                "template_hash": plan.template_hash,
                "diff": list(plan.diff_paths),
                "images_from": list(images(plan.deployment["spec"]["template"])),
                "images_to": list(images(plan.replicaset["spec"]["template"])),
            },
        )
        await self._pause_gitops(rollback, plan)
        rollback = await self._apply(rollback, plan)
        return await self._wait_and_verify(rollback)

    async def _pause_gitops(self, rollback: Rollback, plan: _Plan) -> None:
        """Safety rule 9: stop the GitOps controller before the template is touched.

        A rollback the controller re-applies at its next reconcile is worse
        than none, so a failed pause escalates without patching.
        """
        owner = gitops_owner(plan.deployment)
        if owner is None:
            return
        try:
            result: PauseResult = await pause(
                self._kube,
                rollback.target,
                owner,
                rollback_id=rollback.id,
                deployment=plan.deployment,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._gitops[rollback.id] = {"owner": owner, "paused": False, "error": str(exc)}
            reason = exc if isinstance(exc, GitOpsError) else f"{owner}: {exc!r}"
            raise _Abort(
                "gitops_pause_failed",
                f"could not pause GitOps owner {reason}; not rolling back, "
                "the controller would re-apply the bad version",
                failed=False,
            ) from exc
        self._gitops[rollback.id] = {"paused": True, **result.as_dict()}
        state = "was already paused" if result.already_paused else "auto-sync paused"
        message = (
            f"{result.kind} {result.namespace}/{result.name} ({owner}) {state}; "
            "revert the change in Git before resuming"
        )
        await self._recorder.event(rollback, "gitops_paused", message, result.as_dict())
        await self._kube.emit_event(
            rollback.target, reason=EVENT_GITOPS_PAUSED, message=message, uid=self._uid(plan)
        )

    def _with_gitops(
        self, rollback: Rollback, summary: str, details: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Add the GitOps owner to a page: Git still holds the bad version."""
        gitops = self._gitops.get(rollback.id)
        if gitops is None:
            return summary, dict(details)
        owner = gitops["owner"]
        if gitops["paused"]:
            sentence = (
                f"managed by {owner}: auto-sync paused; revert the change in Git before resuming"
            )
        else:
            sentence = (
                f"managed by {owner}: auto-sync could not be paused, so nothing was rolled back; "
                "revert the change in Git"
            )
        return f"{summary}. {sentence}", {**details, "gitops": gitops}

    async def _plan(self, rollback: Rollback) -> _Plan:
        """Choose the ReplicaSet like ``kubectl rollout undo`` and re-check every rule."""
        deployment = await self._read(rollback.target)
        # The template patch is guarded by this read's resourceVersion.
        self._kube.check_state_term(deployment, f"rollback of {rollback.target}")
        current = revision_of(deployment)
        if rollback.from_revision is not None and current != rollback.from_revision:
            raise _Abort(
                "target_changed",
                f"target changed during rollback: revision is now {current}, "
                f"expected {rollback.from_revision}",
                failed=False,
            )
        replicasets = await self._kube.list_replicasets(rollback.target)
        template = deployment["spec"]["template"]
        running = [rs for rs in replicasets if revision_of(rs) == current]
        if not running or not templates_equal(running[0]["spec"]["template"], template):
            # The spec moved on and the controller has not numbered it yet.
            raise _Abort(
                "target_changed",
                f"target changed during rollback: the template is no longer revision {current}'s",
                failed=False,
            )
        if deployment.get("spec", {}).get("paused"):
            raise _Abort("paused", "deployment is paused: a human is mid-rollout", failed=False)
        try:
            chosen = select_replicaset(deployment, replicasets, rollback.to_revision)
        except PlanError as exc:
            raise _Abort(exc.reason_code, exc.message, failed=False) from exc
        candidate = strip_hash(chosen["spec"]["template"])
        policy = self._policy_for(rollback.target)
        paths = template_diff_paths(template, candidate)
        disallowed = disallowed_changes(paths, policy.allowed_template_fields)
        if disallowed:
            raise _Abort(
                "guard_disallowed_fields",
                f"rollback would change fields outside the allow-list: {', '.join(disallowed)}",
                failed=False,
            )
        mutable = mutable_images(candidate)
        if mutable and not policy.allow_mutable_images:
            raise _Abort(
                "guard_mutable_image",
                f"rollback would restore mutable image references: {', '.join(mutable)}",
                failed=False,
            )
        revisions = [revision_of(rs) or 0 for rs in replicasets]
        labels = chosen["spec"]["template"].get("metadata", {}).get("labels") or {}
        return _Plan(
            deployment=deployment,
            replicaset=chosen,
            from_revision=current or 0,
            to_revision=revision_of(chosen) or 0,
            template_hash=str(labels.get(LABEL_POD_TEMPLATE_HASH, "")),
            predicted_revision=max(revisions, default=0) + 1,
            diff_paths=tuple(paths),
        )

    async def _apply(self, rollback: Rollback, plan: _Plan) -> Rollback:
        """Patch the template; re-read and re-plan on conflict (safety rule 10).

        The re-plan escalates as soon as the revision or template moved (a
        human deployed). A conflict with nothing relevant changed is status
        churn, so it is retried while the rollback's retry budget lasts. A
        patch whose answer was lost (a reset connection) but that landed is
        recognised by our own restored record, never applied twice.
        """
        attempt = 0
        while True:
            attempt += 1
            rolling = self._advance(rollback, Phase.ROLLING_BACK)
            annotations = {
                ANNOTATION_CHANGE_CAUSE: (
                    f"rollbackd {rollback.id}: rollback to revision {plan.to_revision}"
                    + (f" ({rollback.reason})" if rollback.reason else "")
                ),
                ANNOTATION_ROLLBACK: encode_state(self._state(rolling)),
                ANNOTATION_RESTORED: json.dumps(
                    {
                        "rollback_id": rollback.id,
                        "template_hash": plan.template_hash,
                        "revision": plan.predicted_revision,
                    },
                    sort_keys=True,
                ),
            }
            ops = self._strategy.build_patch(
                plan.deployment, plan.replicaset, annotations=annotations
            )
            try:
                await self._kube.patch_deployment(rollback.target, ops)
            except ConflictError as exc:
                if not await self._landed(rollback, plan):
                    await self._recorder.event(
                        rollback,
                        "conflict",
                        f"write conflict (attempt {attempt}), re-planning: {exc}",
                    )
                    await self._pause_after_conflict(rollback, attempt, exc)
                    plan = await self._plan(rollback)
                    continue
            break
        rollback = rolling
        self._latest[rollback.id] = rollback
        self._restored[rollback.id] = strip_hash(plan.replicaset["spec"]["template"])
        message = f"restoring revision {plan.to_revision} ({', '.join(images(plan.replicaset['spec']['template']))})"
        await self._recorder.phase(rollback, message, {"patch": ops})
        await self._kube.emit_event(
            rollback.target, reason=EVENT_STARTED, message=message, uid=self._uid(plan)
        )
        summary, details = self._with_gitops(
            rollback,
            f"rollbackd is rolling back {rollback.target} to revision {plan.to_revision}",
            {"reason": rollback.reason, "reason_code": rollback.reason_code},
        )
        await self._pager.notify(NotificationKind.ROLLBACK_STARTED, rollback, summary, details)
        return rollback

    async def _landed(self, rollback: Rollback, plan: _Plan) -> bool:
        """True when the template patch is on the Deployment although its answer said otherwise."""
        deployment = await self._read(rollback.target)
        return _restored_record(deployment).get("rollback_id") == rollback.id and templates_equal(
            deployment["spec"]["template"], plan.replicaset["spec"]["template"]
        )

    async def _pause_after_conflict(
        self, rollback: Rollback, attempt: int, exc: ConflictError
    ) -> None:
        """Back off before re-reading; give up once the rollback's retry budget cannot pay."""
        budget = current_budget() or RetryBudget(self._retry_budget)
        delay = backoff_delay(attempt, None)
        if delay > budget.remaining:
            latest = self._latest.get(rollback.id, rollback)
            raise _Abort(
                REASON_WRITE_CONFLICTS,
                f"the Deployment kept changing under rollbackd's writes for the whole retry "
                f"budget ({self._retry_budget:g}s, {attempt} conflicts): {exc}",
                failed=latest.phase in (Phase.ROLLING_BACK, Phase.VERIFYING),
            ) from exc
        budget.spend(delay)
        await asyncio.sleep(delay)

    async def _resume_rolling_back(self, rollback: Rollback) -> Rollback:
        """The ROLLING_BACK state landed with the patch: check the template is still ours."""
        await self._adopt_restored(rollback)
        self._latest[rollback.id] = rollback
        return await self._wait_and_verify(rollback)

    async def _resume_verifying(self, rollback: Rollback, ready_at: datetime) -> Rollback:
        await self._adopt_restored(rollback)
        self._latest[rollback.id] = rollback
        return await self._verify(rollback, ready_at)

    async def _adopt_restored(self, rollback: Rollback) -> None:
        """Find the template this rollback restored (resume); it must still be the Deployment's.

        Our restored record and its ReplicaSet gone: the rollback cannot be
        followed any more. Present but the template differs: a human took over.
        """
        deployment = await self._read(rollback.target)
        restored = _restored_record(deployment)
        ours = [
            rs
            for rs in await self._kube.list_replicasets(rollback.target)
            if restored.get("rollback_id") == rollback.id
            and (rs["spec"]["template"].get("metadata", {}).get("labels") or {}).get(
                LABEL_POD_TEMPLATE_HASH
            )
            == restored.get("template_hash")
        ]
        if not ours:
            raise _Abort(
                "target_changed",
                "target changed during rollback: the restored revision is no longer recorded",
                failed=True,
            )
        self._restored[rollback.id] = strip_hash(ours[0]["spec"]["template"])
        if not templates_equal(ours[0]["spec"]["template"], deployment["spec"]["template"]):
            raise _Superseded(deployment)

    async def _wait_and_verify(self, rollback: Rollback) -> Rollback:
        outcome = await self._unless_superseded(
            rollback,
            self._kube.wait_rollout_complete(rollback.target, timeout=self._rollout_timeout),
        )
        if not outcome.complete:
            raise _Abort(f"rollout_{outcome.status}", outcome.message, failed=True)
        ready_at = self._clock()
        await self._kube.emit_event(
            rollback.target,
            reason=EVENT_READY,
            message=f"restored version ready: {outcome.message}",
        )
        try:
            digests = await self._kube.pod_images(rollback.target)
        except KubeError as exc:
            digests = {}
            log.warning("could not read pod images of %s: %s", rollback.target, exc)
        await self._recorder.event(
            rollback, "images", "image digests running after the rollback", {"images": digests}
        )
        return await self._verify(rollback, ready_at)

    async def _verify(self, rollback: Rollback, ready_at: datetime) -> Rollback:
        deployment = await self._read_restored(rollback)
        restored = _restored_record(deployment)
        extra: dict[str, str | None] = {}
        actual = revision_of(deployment)
        if restored.get("rollback_id") == rollback.id and actual != restored.get("revision"):
            # Record the revision the controller really assigned (the plan predicted it).
            extra[ANNOTATION_RESTORED] = json.dumps(
                {**restored, "revision": actual}, sort_keys=True
            )
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
            rollback, self._verifier.verify(rollback.target, ready_at)
        )
        await self._record_intervals(rollback, result)
        if not result.healthy:
            raise _Abort(result.reason_code, result.reason, failed=True)
        # Verified: but only what still runs may be declared completed.
        deployment = await self._read_restored(rollback)
        done = self._advance(rollback, Phase.ROLLBACK_COMPLETED, finished=True)
        done = replace(done, reason=result.reason)
        # ready_at stays on the Deployment: decide attributes later signals by it.
        await self._write_state(done, ready_at=ready_at, deployment=deployment)
        await self._recorder.phase(done, result.reason, {"verification": result.reason_code})
        await self._kube.emit_event(done.target, reason=EVENT_VERIFIED, message=result.reason)
        summary, details = self._with_gitops(
            done,
            f"rollbackd rolled back {done.target} to revision {done.to_revision}: {result.reason}",
            {"verification": [i.detail for i in result.intervals]},
        )
        await self._pager.notify(NotificationKind.ROLLBACK_COMPLETED, done, summary, details)
        return done

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
                    raise _Abort(
                        "target_not_found", f"deployment {rollback.target} was deleted", failed=True
                    ) from error
                if error is not None:
                    raise error
                raise _Superseded(watcher.result())
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

    # -------------------------------------------------------------- endings

    async def _fail(self, rollback: Rollback, abort: _Abort) -> Rollback:
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

    async def _escalate(self, rollback: Rollback, reason_code: str, message: str) -> Rollback:
        """Terminal: record, mark the Deployment, and page a human."""
        escalated = replace(
            self._advance(rollback, Phase.ESCALATED, finished=True),
            reason_code=reason_code,
            reason=message,
        )
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
            summary, details = self._with_gitops(
                escalated,
                f"rollbackd could not roll back {escalated.target}: {message}",
                {"reason_code": reason_code, "reason": message},
            )
            await self._pager.notify(NotificationKind.ESCALATION, escalated, summary, details)
        return escalated

    async def _supersede(self, rollback: Rollback, deployment: Mapping[str, Any]) -> Rollback:
        """Terminal: a human changed the template; step back, record it and say so (info)."""
        during = rollback.phase
        meta = deployment.get("metadata", {})
        new_images = list(images(deployment.get("spec", {}).get("template") or {}))
        generation = meta.get("generation")
        cause = (meta.get("annotations") or {}).get(ANNOTATION_CHANGE_CAUSE)
        doing = "verifying" if during is Phase.VERIFYING else "rolling back"
        message = (
            f"the pod template of {rollback.target} was changed by someone else while "
            f"rollbackd was {doing} (now generation {generation}, images "
            f"{', '.join(new_images) or 'none'}); rollbackd stepped back and left that version alone"
        )
        superseded = replace(
            self._advance(rollback, Phase.SUPERSEDED, finished=True),
            reason_code=REASON_SUPERSEDED,
            reason=message,
        )
        change: dict[str, Any] = {
            "images": new_images,
            "generation": generation,
            "revision": revision_of(deployment),
        }
        if cause and not str(cause).startswith("rollbackd "):
            change["change_cause"] = cause
        details: dict[str, Any] = {"during": str(during), "superseded_by": change}
        await self._best_effort_state(superseded)
        try:
            await self._recorder.phase(superseded, message, details)
        finally:
            await self._kube.emit_event(superseded.target, reason=EVENT_SUPERSEDED, message=message)
            summary, page = self._with_gitops(
                superseded,
                f"rollbackd stepped back from {superseded.target}: its rollback to revision "
                f"{superseded.to_revision} was superseded; {message}",
                {**details, "reason_code": REASON_SUPERSEDED, "reason": message},
            )
            await self._pager.notify(NotificationKind.SUPERSEDED, superseded, summary, page)
        return superseded

    # -------------------------------------------------------------- helpers

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
            ready_at=ready_at,
            # Fencing: the term this state is written in (None without a Lease).
            holder=term.holder if (term := self._kube.fence.term) else None,
            term=term.number if term else None,
        )

    async def _write_state(
        self,
        rollback: Rollback,
        *,
        ready_at: datetime | None = None,
        extra: Mapping[str, str | None] | None = None,
        deployment: Mapping[str, Any] | None = None,
    ) -> None:
        """Annotation-only write from a fresh read; a conflict re-reads and re-applies.

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
            self._check_still_ours(rollback, current, restored=rollback.phase in _RESTORED_PHASES)
            try:
                await self._kube.write_state(
                    rollback.target,
                    self._state(rollback, ready_at),
                    resource_version=current["metadata"]["resourceVersion"],
                    extra=extra,
                )
                return
            except ConflictError as exc:
                await self._pause_after_conflict(rollback, attempt, exc)

    def _check_still_ours(
        self, rollback: Rollback, deployment: Mapping[str, Any], *, restored: bool
    ) -> None:
        """Raise unless writing ``rollback``'s state on ``deployment`` is still right."""
        state = _recorded_state(deployment)
        if state is not None and state.rollback_id != rollback.id and not state.phase.terminal:
            raise _Abort(
                "rollback_in_flight",
                f"another rollback ({state.rollback_id}, {state.phase}) is recorded on "
                f"{rollback.target}",
                failed=False,
            )
        template = self._restored.get(rollback.id)
        if restored and template is not None:
            if not templates_equal(deployment.get("spec", {}).get("template") or {}, template):
                raise _Superseded(deployment)

    async def _best_effort_state(self, rollback: Rollback) -> None:
        try:
            await self._write_state(rollback)
        except (asyncio.CancelledError, FencedError):
            raise  # fenced: no page either
        except Exception as exc:  # the page matters more than the annotation
            log.warning("could not record %s on %s: %s", rollback.phase, rollback.target, exc)

    async def _fresh_or_none(self, target: Target) -> dict[str, Any] | None:
        """A fresh read for an ending, which must not fail because the read did."""
        try:
            return await self._kube.read_deployment(target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not read %s: %s", target, exc)
            return None

    async def _read(self, target: Target) -> dict[str, Any]:
        try:
            return await self._kube.read_deployment(target)
        except NotFoundError as exc:
            raise _Abort(
                "target_not_found", f"deployment {target} not found", failed=False
            ) from exc

    @staticmethod
    def _uid(plan: _Plan) -> str | None:
        uid = plan.deployment.get("metadata", {}).get("uid")
        return str(uid) if uid else None


def _recorded_state(deployment: Mapping[str, Any]) -> RollbackState | None:
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    if not text:
        return None
    try:
        return decode_state(text)
    except ValueError:
        return None  # unreadable: not evidence of another rollback


def _restored_record(deployment: Mapping[str, Any]) -> dict[str, Any]:
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_RESTORED)
    try:
        record = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}
