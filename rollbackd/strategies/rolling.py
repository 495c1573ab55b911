"""Rolling-update rollback, done the way ``kubectl rollout undo`` does it.

Choosing the ReplicaSet, building the patch and judging completion all follow
kubectl (``polymorphichelpers/rollback.go`` and the deployment status viewer)
so that what rollbackd does to a Deployment is exactly what an SRE would have
typed: the restored pod template equals the old ReplicaSet's template minus
the ``pod-template-hash`` label, and the real deployment controller therefore
reuses the old ReplicaSet and gives it a new revision number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rollbackd.guard import templates_equal
from rollbackd.kube.patch import precondition
from rollbackd.kube.rollout import deployment_status
from rollbackd.model import ANNOTATION_REVISION, ANNOTATION_REVISION_HISTORY, Target
from rollbackd.readiness import template_hash
from rollbackd.reasons import RollbackReason
from rollbackd.revisions import owned_replicasets, revision_of, strip_hash
from rollbackd.strategies import (
    Obj,
    Ops,
    Patcher,
    PlanError,
    Restore,
    RolloutOutcome,
    RolloutWaiter,
    StrategyKube,
)

__all__ = ["RollingStrategy", "select_replicaset", "templates_equal"]

# Deployment annotations kubectl keeps from the Deployment instead of taking
# them from the ReplicaSet (they describe the Deployment, not the revision).
ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        ANNOTATION_REVISION,
        ANNOTATION_REVISION_HISTORY,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
# rollbackd's own per-target settings may have been added after the old
# revision was created; a rollback must not silently drop an opt-out.
KEPT_ANNOTATION_PREFIX = "rollbackd.io/"


def select_replicaset(
    deployment: Mapping[str, Any],
    replicasets: Iterable[Mapping[str, Any]],
    to_revision: int | None,
) -> Mapping[str, Any]:
    """The ReplicaSet ``kubectl rollout undo [--to-revision=N]`` would restore.

    ``to_revision=None`` means kubectl's default: the second-highest revision.
    Raises PlanError when there is nothing to restore.
    """
    owned = [(revision_of(rs), rs) for rs in owned_replicasets(deployment, replicasets)]
    numbered = sorted(
        ((rev, rs) for rev, rs in owned if rev is not None), key=lambda pair: pair[0], reverse=True
    )
    if to_revision is None:
        if len(numbered) < 2:
            raise PlanError(
                RollbackReason.NO_PREVIOUS_REVISION,
                "no rollout history found: no previous revision",
            )
        chosen = numbered[1][1]
    else:
        matches = [rs for rev, rs in numbered if rev == to_revision]
        if not matches:
            raise PlanError(
                RollbackReason.REVISION_NOT_FOUND,
                f"unable to find the ReplicaSet of revision {to_revision}",
            )
        chosen = matches[0]
    template = deployment.get("spec", {}).get("template") or {}
    if templates_equal(chosen.get("spec", {}).get("template") or {}, template):
        raise PlanError(
            RollbackReason.ALREADY_AT_REVISION,
            f"current template already matches revision {revision_of(chosen)}",
        )
    return chosen


class RollingStrategy:
    """Restore the old template in place and let the controller roll it out."""

    name = "rolling"

    async def context(self, kube: StrategyKube, target: Target, deployment: Obj) -> Obj:
        """Nothing beyond the Deployment and its ReplicaSets."""
        return {}

    def plan(
        self,
        deployment: Obj,
        replicasets: Sequence[Obj],
        to_revision: int | None,
        context: Obj | None = None,
        *,
        rollback_id: str = "",  # unused: it records nothing beyond the state
    ) -> Restore:
        """kubectl's choice of ReplicaSet; the controller will reuse it as the next revision."""
        chosen = select_replicaset(deployment, replicasets, to_revision)
        numbers = [revision_of(rs) or 0 for rs in replicasets]
        return Restore(
            replicaset=chosen,
            to_revision=revision_of(chosen) or 0,
            template=strip_hash(chosen.get("spec", {}).get("template") or {}),
            template_hash=str(template_hash(chosen) or ""),
            predicted_revision=max(numbers, default=0) + 1,
        )

    def patch(self, deployment: Obj, restore: Restore, *, annotations: Mapping[str, str]) -> Ops:
        """kubectl's rollback patch for the chosen ReplicaSet."""
        return self.build_patch(deployment, restore.replicaset, annotations=annotations)

    async def apply(
        self, kube: Patcher, target: Target, patch: Ops, *, timeout: float = 0.0
    ) -> None:
        """One guarded JSON patch: the controller then rolls the old template out."""
        await kube.patch_deployment(target, patch)

    async def resume(
        self, kube: Patcher, target: Target, deployment: Obj, *, timeout: float
    ) -> None:
        """Nothing to finish: the ROLLING_BACK state landed with the one patch."""

    def verified(self, target: Target, deployment: Obj) -> Target:
        """The target itself runs the restored template."""
        return target

    async def wait(self, kube: RolloutWaiter, target: Target, *, timeout: float) -> RolloutOutcome:
        """``kubectl rollout status`` until ``timeout``."""
        return await kube.wait_rollout_complete(target, timeout=timeout, status=self.status)

    def status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """The rules of ``kubectl rollout status`` for a Deployment."""
        return deployment_status(deployment)

    # The name the kubectl parity tests know the predicate by.
    rollout_status = status

    def cleanup_due(self, deployment: Obj) -> bool:
        """The old ReplicaSet is the controller's to scale down: nothing is left."""
        return False

    async def cleanup(self, kube: Patcher, target: Target) -> str:
        return ""

    def build_patch(
        self,
        deployment: Mapping[str, Any],
        replicaset: Mapping[str, Any],
        *,
        annotations: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        """kubectl's rollback patch, guarded by a resourceVersion test."""
        metadata = deployment.get("metadata", {})
        current = metadata.get("annotations") or {}
        restored: dict[str, str] = {k: v for k, v in current.items() if k in ANNOTATIONS_TO_SKIP}
        rs_annotations = replicaset.get("metadata", {}).get("annotations") or {}
        # The controller copies Deployment annotations onto ReplicaSets, so an
        # old RS may carry stale rollbackd.io/* values: those come from now only.
        restored.update(
            {
                k: v
                for k, v in rs_annotations.items()
                if k not in ANNOTATIONS_TO_SKIP and not k.startswith(KEPT_ANNOTATION_PREFIX)
            }
        )
        restored.update({k: v for k, v in current.items() if k.startswith(KEPT_ANNOTATION_PREFIX)})
        restored.update(annotations)
        return [
            precondition(metadata["resourceVersion"]),
            {
                "op": "replace",
                "path": "/spec/template",
                "value": strip_hash(replicaset.get("spec", {}).get("template") or {}),
            },
            # "add" replaces an existing member and also works when there is none.
            {"op": "add", "path": "/metadata/annotations", "value": restored},
        ]
