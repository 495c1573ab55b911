"""A Deployment as a rollback's target kind (:class:`~rollbackd.strategies.kinds.TargetKind`).

Its pod template is what rollbackd restores (or keeps, for a canary) and
watches: a change by someone else means a human took over. The decision was
made on the watch cache, so the plan is made again on fresh reads and
:meth:`DeploymentKind.recheck` refuses when the Deployment moved since (a
human deployed, the controller numbered a new revision, it was paused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rollbackd.guard import images, templates_equal
from rollbackd.model import ANNOTATION_CHANGE_CAUSE, Phase, Rollback, Target
from rollbackd.postmortem.change import compact_template
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import revision_of
from rollbackd.state import RollbackState
from rollbackd.strategies import Obj, PlanError, StrategyKube
from rollbackd.strategies.kinds import Changes, Fresh, Plan, Proposed, SteppedBack, proposal_data

__all__ = ["DEPLOYMENT", "DeploymentKind", "change_by_someone_else"]

# How often a proposal's wait re-reads the Deployment when the watch stays silent.
_CHANGE_POLL_SECONDS = 2.0


class DeploymentKind:
    """A Deployment: its template restored, guarded, recorded and watched."""

    name = "Deployment"
    tracks_template = True
    gitops_note: str | None = None  # a sync would re-apply the bad template: owners paused

    async def read(self, kube: StrategyKube, target: Target) -> dict[str, Any]:
        return await kube.read_deployment(target)

    async def replicasets(self, kube: StrategyKube, target: Target) -> list[dict[str, Any]]:
        return await kube.list_replicasets(target)

    def recheck(self, rollback: Rollback, obj: Obj, replicasets: Sequence[Obj]) -> Fresh:
        """The revision the decision saw, still running its own template, not paused."""
        current = revision_of(obj)
        if rollback.from_revision is not None and current != rollback.from_revision:
            raise PlanError(
                RollbackReason.TARGET_CHANGED,
                f"target changed during rollback: revision is now {current}, "
                f"expected {rollback.from_revision}",
            )
        running = [rs for rs in replicasets if revision_of(rs) == current]
        if not running or not templates_equal(
            running[0]["spec"]["template"], obj["spec"]["template"]
        ):
            # The spec moved on and the controller has not numbered it yet.
            raise PlanError(
                RollbackReason.TARGET_CHANGED,
                f"target changed during rollback: the template is no longer revision {current}'s",
            )
        if obj.get("spec", {}).get("paused"):
            raise PlanError(RollbackReason.PAUSED, "deployment is paused: a human is mid-rollout")
        return Fresh(current or 0, running[0].get("metadata", {}).get("creationTimestamp"))

    async def write_state(
        self, kube: Any, target: Target, current: Obj, state: RollbackState | None, extra: Changes
    ) -> None:
        await kube.write_state(
            target, state, resource_version=current["metadata"]["resourceVersion"], extra=extra
        )

    async def plan_event(
        self, kube: Any, target: Target, plan: Plan, strategy: str
    ) -> tuple[str, dict[str, Any]]:
        """Both templates (compact, secrets masked): the change after its ReplicaSets are gone."""
        message = (
            f"rolling back from revision {plan.from_revision} to revision {plan.to_revision} "
            f"(ReplicaSet {plan.replicaset_name})"
        )
        if plan.restore.summary:
            message = f"{strategy}: {plan.restore.summary}"
        # What a strategy other than rolling changes (selector, replicas): the report and API.
        changes = {"changes": dict(plan.restore.changes)} if plan.restore.changes else {}
        bad = plan.deployment["spec"]["template"]
        return message, {
            "replicaset": plan.replicaset_name,
            "template_hash": plan.restore.template_hash,
            "diff": list(plan.diff_paths),
            "images_from": list(images(bad)),
            "images_to": list(images(plan.restore.template)),
            "templates": {
                "bad": compact_template(bad),
                "restored": compact_template(plan.restore.template),
            },
            "rollout_started_at": plan.rollout_started_at,
            "strategy": strategy,
            **changes,
        }

    def headline(self, rollback: Rollback, phase: Phase) -> str:
        if phase is Phase.ROLLBACK_COMPLETED:
            return f"rollbackd rolled back {rollback.target} to revision {rollback.to_revision}"
        return f"rollbackd is rolling back {rollback.target} to revision {rollback.to_revision}"

    def proposal(self, rollback: Rollback, plan: Plan) -> Proposed:
        """The rollback as planned; its template is watched while it waits."""
        how = f"from revision {plan.from_revision} to revision {plan.to_revision}"
        if plan.restore.summary:  # a strategy beyond rolling says what it would change
            how = f"by {plan.restore.summary}"
        data = proposal_data(
            rollback,
            f"roll back {rollback.target} {how}",
            before=images(plan.deployment["spec"]["template"]),
            after=images(plan.restore.template),
            diff=plan.diff_paths,
            changes=plan.restore.changes,
        )
        return Proposed(data, plan.deployment["spec"]["template"], current=plan.deployment)

    async def watch_change(
        self, kube: Any, target: Target, watched: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await kube.wait_template_change(
            target, watched, poll_interval=_CHANGE_POLL_SECONDS
        )
        return result

    def moved(self, rollback: Rollback, obj: Obj, watched: Mapping[str, Any] | None) -> str | None:
        """A new revision, or (``watched`` given) a template other than the proposal's."""
        current = revision_of(obj)
        moved = current != rollback.from_revision or (
            watched is not None and not templates_equal(obj["spec"]["template"], watched)
        )
        if not moved:
            return None
        return (
            f"{rollback.target} changed while the rollback waited (revision {current}, "
            f"proposed from revision {rollback.from_revision})"
        )

    def stepped_back(self, rollback: Rollback, obj: Obj) -> SteppedBack:
        """A human changed the template: rollbackd leaves their version alone."""
        during = rollback.phase
        change = change_by_someone_else(obj)
        doing = {
            Phase.VERIFYING: "verifying",
            Phase.PENDING_APPROVAL: "waiting for approval",
        }.get(during, "rolling back")
        message = (
            f"the pod template of {rollback.target} was changed by someone else while "
            f"rollbackd was {doing} (now generation {change['generation']}, images "
            f"{', '.join(change['images']) or 'none'}); rollbackd stepped back and left that "
            "version alone"
        )
        ended = "withdrawn" if during is Phase.PENDING_APPROVAL else "superseded"
        return SteppedBack(
            message,
            change,
            f"its rollback to revision {rollback.to_revision} was {ended}",
            RollbackReason.SUPERSEDED,
        )


DEPLOYMENT = DeploymentKind()


def change_by_someone_else(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """What the page says about the version that replaced rollbackd's."""
    meta = deployment.get("metadata", {})
    change: dict[str, Any] = {
        "images": list(images(deployment.get("spec", {}).get("template") or {})),
        "generation": meta.get("generation"),
        "revision": revision_of(deployment),
    }
    cause = (meta.get("annotations") or {}).get(ANNOTATION_CHANGE_CAUSE)
    if cause and not str(cause).startswith("rollbackd "):
        change["change_cause"] = cause
    return change
