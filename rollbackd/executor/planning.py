"""PLANNING: re-check every rule on a fresh read, let the strategy choose, pause GitOps.

The decision was made on the watch cache; the plan is made again on fresh
reads, because the Deployment may have moved since (a human deployed, the
controller numbered a new revision). A plan that no longer holds escalates
without touching the template.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollbackd.executor.core import Core, uid_of
from rollbackd.executor.ports import EVENT_GITOPS_PAUSED, EVENT_PLANNED, Abort
from rollbackd.gitops import GitOpsError, PauseResult, pause
from rollbackd.guard import (
    disallowed_changes,
    images,
    mutable_images,
    template_diff_paths,
    templates_equal,
)
from rollbackd.kube.errors import KubeError
from rollbackd.model import Rollback
from rollbackd.postmortem.change import compact_template
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import gitops_owner, revision_of
from rollbackd.strategies import PlanError, Restore, bluegreen, canary


@dataclass(frozen=True)
class Plan:
    deployment: Mapping[str, Any]  # fresh, after the PLANNING state write
    restore: Restore
    from_revision: int
    diff_paths: tuple[str, ...]
    rollout_started_at: str | None = None  # the bad ReplicaSet's creation (the postmortem)

    @property
    def to_revision(self) -> int | None:
        return self.restore.to_revision

    @property
    def replicaset_name(self) -> str:
        return str(self.restore.replicaset.get("metadata", {}).get("name", ""))


class Planning(Core):
    """Choosing what to restore, and stopping the GitOps owner first."""

    async def _plan(self, rollback: Rollback) -> Plan:
        """Let the strategy choose (``kubectl rollout undo``) and re-check every rule."""
        deployment = await self._read(rollback.target)
        # The template patch is guarded by this read's resourceVersion.
        self._kube.check_state_term(deployment, f"rollback of {rollback.target}")
        current = revision_of(deployment)
        if rollback.from_revision is not None and current != rollback.from_revision:
            raise Abort(
                RollbackReason.TARGET_CHANGED,
                f"target changed during rollback: revision is now {current}, "
                f"expected {rollback.from_revision}",
                failed=False,
            )
        replicasets = await self._kube.list_replicasets(rollback.target)
        template = deployment["spec"]["template"]
        running = [rs for rs in replicasets if revision_of(rs) == current]
        if not running or not templates_equal(running[0]["spec"]["template"], template):
            # The spec moved on and the controller has not numbered it yet.
            raise Abort(
                RollbackReason.TARGET_CHANGED,
                f"target changed during rollback: the template is no longer revision {current}'s",
                failed=False,
            )
        if deployment.get("spec", {}).get("paused"):
            raise Abort(
                RollbackReason.PAUSED, "deployment is paused: a human is mid-rollout", failed=False
            )
        strategy = await self._choose_strategy(rollback, deployment)
        context = await strategy.context(self._kube, rollback.target, deployment)
        try:
            restore = strategy.plan(deployment, replicasets, rollback.to_revision, context)
        except PlanError as exc:
            raise Abort(exc.reason_code, exc.message, failed=False) from exc
        paths = template_diff_paths(template, restore.template)
        self._check_guard(rollback, paths, restore.template)
        created = running[0].get("metadata", {}).get("creationTimestamp")
        return Plan(deployment, restore, current or 0, tuple(paths), created)

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
        message = (
            f"rolling back from revision {plan.from_revision} to revision {plan.to_revision} "
            f"(ReplicaSet {plan.replicaset_name})"
        )
        if plan.restore.summary:
            message = f"{self._strategy_of(rollback).name}: {plan.restore.summary}"
        # What a strategy other than rolling changes (selector, replicas): the report and API.
        changes = {"changes": dict(plan.restore.changes)} if plan.restore.changes else {}
        await self._kube.emit_event(
            rollback.target, reason=EVENT_PLANNED, message=message, uid=uid_of(plan.deployment)
        )
        await self._recorder.event(
            rollback,
            "plan",
            message,
            {
                "replicaset": plan.replicaset_name,
                "template_hash": plan.restore.template_hash,
                "diff": list(plan.diff_paths),
                "images_from": list(images(plan.deployment["spec"]["template"])),
                "images_to": list(images(plan.restore.template)),
                # So the postmortem draft shows the change after the ReplicaSets are gone.
                "templates": {
                    "bad": compact_template(plan.deployment["spec"]["template"]),
                    "restored": compact_template(plan.restore.template),
                },
                "rollout_started_at": plan.rollout_started_at,
                "strategy": self._strategy_of(rollback).name,
                **changes,
            },
        )

    async def _pause_gitops(self, rollback: Rollback, plan: Plan) -> None:
        """Safety rule 9: stop every GitOps controller that could undo the rollback, first.

        The target's owner, then the owner of each other object the strategy
        writes (a blue-green Service and the previous colour it scales up, a
        canary's HTTPRoute), each owner once. A rollback a
        controller re-applies at its next reconcile is worse than none, so a
        failed pause escalates without patching.
        """
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
        try:
            deployment = await self._kube.read_deployment(rollback.target)
        except KubeError:  # the resumed steps read it again and report what is wrong
            return
        owner = gitops_owner(deployment)
        owners = [{"owner": owner}] if owner is not None else []
        for other in (
            *bluegreen.recorded_gitops_owners(deployment),
            *canary.recorded_gitops_owners(deployment),
        ):
            if all(other["owner"] != known["owner"] for known in owners):  # each owner once
                owners.append(other)
        if owners:
            also = {"also_paused": owners[1:]} if len(owners) > 1 else {}
            self._gitops[rollback.id] = {**owners[0], "paused": True, **also}
