"""PLANNING: re-check every rule on a fresh read, let the strategy choose, pause GitOps.

The decision was made on the watch cache; the plan is made again on fresh
reads, because the target may have moved since (a human deployed, the
controller numbered a new revision): the target kind re-checks, the
strategy plans. A plan that no longer holds escalates with nothing written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from rollbackd.executor.core import Core, uid_of
from rollbackd.executor.ports import EVENT_GITOPS_PAUSED, EVENT_PLANNED, Abort
from rollbackd.gitops import GitOpsError, PauseResult, pause
from rollbackd.guard import disallowed_changes, mutable_images, template_diff_paths
from rollbackd.kube.errors import KubeError
from rollbackd.model import Rollback
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import gitops_owner
from rollbackd.strategies import PlanError
from rollbackd.strategies.factory import recorded_owners
from rollbackd.strategies.kinds import Plan

__all__ = ["Plan", "Planning"]


class Planning(Core):
    """Choosing what to restore, and stopping the GitOps owner first."""

    async def _plan(self, rollback: Rollback) -> Plan:
        """Re-check the decision on fresh reads, let the strategy choose, guard its template."""
        kind = self._kind(rollback.target)
        deployment = await self._read(rollback.target)
        # The first write is guarded by this read's resourceVersion.
        self._kube.check_state_term(deployment, f"rollback of {rollback.target}")
        replicasets = await kind.replicasets(self._kube, rollback.target)
        try:
            fresh = kind.recheck(rollback, deployment, replicasets)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        strategy = await self._choose_strategy(rollback, deployment)
        context = await strategy.context(self._kube, rollback.target, deployment)
        try:
            restore = strategy.plan(
                deployment, replicasets, rollback.to_revision, context, rollback_id=rollback.id
            )
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        paths: list[str] = []
        if kind.tracks_template:  # the template it writes or keeps serving is guarded
            paths = template_diff_paths(deployment["spec"]["template"], restore.template)
            self._check_guard(rollback, paths, restore.template)
        return Plan(
            deployment,
            restore,
            fresh.from_revision,
            tuple(paths),
            fresh.rollout_started_at,
            tuple(replicasets),
        )

    def _check_guard(
        self, rollback: Rollback, paths: list[str], candidate: Mapping[str, Any]
    ) -> None:
        """The guard, again on fresh objects: allowed fields only, no mutable images."""
        policy = self._policy_for(rollback.target)
        disallowed = disallowed_changes(paths, policy.allowed_template_fields)
        if disallowed:
            raise Abort(
                RollbackReason.GUARD_DISALLOWED_FIELDS,
                f"rollback would change fields outside the allow-list: {', '.join(disallowed)}",
                failed=False,
            )
        mutable = mutable_images(candidate)
        if mutable and not policy.allow_mutable_images:
            raise Abort(
                RollbackReason.GUARD_MUTABLE_IMAGE,
                f"rollback would restore mutable image references: {', '.join(mutable)}",
                failed=False,
            )

    async def _record_plan(self, rollback: Rollback, plan: Plan) -> None:
        """The journal's ``plan`` event (the target kind's), announced by an Event."""
        kind = self._kind(rollback.target)
        message, data = await kind.plan_event(
            self._kube, rollback.target, plan, self._strategy_of(rollback).name
        )
        if kind.tracks_template:
            await self._kube.emit_event(
                rollback.target, reason=EVENT_PLANNED, message=message, uid=uid_of(plan.deployment)
            )
        await self._recorder.event(rollback, "plan", message, data)

    async def _pause_gitops(self, rollback: Rollback, plan: Plan) -> None:
        """Safety rule 9: stop every GitOps controller that could undo the rollback, first.

        The target's owner, then the owner of each other object the strategy
        writes (a blue-green Service and the previous colour it scales up, a
        canary's HTTPRoute), each owner once. A rollback a
        controller re-applies at its next reconcile is worse than none, so a
        failed pause escalates without patching. A target kind whose write no
        sync can undo names its owner instead (``gitops_note``).
        """
        if self._kind(rollback.target).gitops_note is not None:
            self._name_owner(rollback, plan.deployment)
            return
        objects = {"": plan.deployment, **plan.restore.gitops_objects}
        owners: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for what, obj in objects.items():
            owner = gitops_owner(obj)
            if owner is not None and owner not in owners:
                owners[owner] = (what, obj)
        paused: list[dict[str, Any]] = []
        for owner, (what, obj) in owners.items():
            result = await self._pause_one(rollback, owner, obj, paused)
            paused.append({**result.as_dict(), **({"of": what} if what else {})})
            state = "was already paused" if result.already_paused else "auto-sync paused"
            owned = f", owner of {what}" if what else ""
            message = (
                f"{result.kind} {result.namespace}/{result.name} ({owner}{owned}) {state}; "
                "revert the change in Git before resuming"
            )
            await self._recorder.event(rollback, "gitops_paused", message, paused[-1])
            await self._kube.emit_event(
                rollback.target,
                reason=EVENT_GITOPS_PAUSED,
                message=message,
                uid=uid_of(plan.deployment),
            )
        if paused:
            also = {"also_paused": paused[1:]} if len(paused) > 1 else {}
            self._gitops[rollback.id] = {"paused": True, **paused[0], **also}

    async def _pause_one(
        self,
        rollback: Rollback,
        owner: str,
        obj: Mapping[str, Any],
        paused: list[dict[str, Any]],
    ) -> PauseResult:
        """One owner paused (idempotent); a failure ends the rollback, nothing written."""
        try:
            return await pause(
                self._kube, rollback.target, owner, rollback_id=rollback.id, deployment=obj
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._gitops[rollback.id] = {"owner": owner, "paused": False, "error": str(exc)}
            reason = exc if isinstance(exc, GitOpsError) else f"{owner}: {exc!r}"
            # An owner paused before this one stays paused: say so, a human resumes it.
            kept = "".join(f"; {p['owner']} stays paused" for p in paused)
            raise Abort(
                RollbackReason.GITOPS_PAUSE_FAILED,
                f"could not pause GitOps owner {reason}; not rolling back, "
                f"the controller would re-apply the bad version{kept}",
                failed=False,
            ) from exc

    async def _remember_paused_owner(self, rollback: Rollback) -> None:
        """Past planning, the GitOps owner was paused: the pages must keep saying so.

        The pause precedes the template patch that wrote ROLLING_BACK, so a
        rollback resumed from that phase or later has a paused owner.
        """
        kind = self._kind(rollback.target)
        try:
            deployment = await kind.read(self._kube, rollback.target)
        except KubeError:  # the resumed steps read it again and report what is wrong
            return
        if kind.gitops_note is not None:
            self._name_owner(rollback, deployment)
            return
        owner = gitops_owner(deployment)
        owners = [{"owner": owner}] if owner is not None else []
        for other in recorded_owners(deployment):
            if all(other["owner"] != known["owner"] for known in owners):  # each owner once
                owners.append(other)
        if owners:
            also = {"also_paused": owners[1:]} if len(owners) > 1 else {}
            self._gitops[rollback.id] = {**owners[0], "paused": True, **also}

    def _name_owner(self, rollback: Rollback, target: Mapping[str, Any]) -> None:
        """The pages name the target's GitOps owner with the kind's note; nothing is paused."""
        owner = gitops_owner(target)
        note = self._kind(rollback.target).gitops_note
        if owner is not None:
            self._gitops[rollback.id] = {"owner": owner, "paused": False, "note": note}
