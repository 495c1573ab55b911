"""Rolling-update rollback, done the way ``kubectl rollout undo`` does it.

Choosing the ReplicaSet, building the patch and judging completion all follow
kubectl (``polymorphichelpers/rollback.go`` and the deployment status viewer)
so that what rollbackd does to a Deployment is exactly what an SRE would have
typed: the restored pod template equals the old ReplicaSet's template minus
the ``pod-template-hash`` label, and the real deployment controller therefore
reuses the old ReplicaSet and gives it a new revision number.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from rollbackd.guard import templates_equal
from rollbackd.model import (
    ANNOTATION_REVISION,
    ANNOTATION_REVISION_HISTORY,
    LABEL_POD_TEMPLATE_HASH,
)
from rollbackd.strategies import PlanError, RolloutOutcome, RolloutStatus

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


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The ``deployment.kubernetes.io/revision`` of a Deployment or ReplicaSet."""
    text = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_REVISION)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def revision_history(obj: Mapping[str, Any]) -> list[int]:
    """Earlier revisions this ReplicaSet had before it was reused (oldest first)."""
    text = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_REVISION_HISTORY, "")
    return [int(part) for part in text.split(",") if part.strip().isdigit()]


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """UID of the object's controlling owner (the ownerReference with controller=true)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def owned_replicasets(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """ReplicaSets whose controller is this Deployment (by UID, as kubectl filters)."""
    uid = deployment.get("metadata", {}).get("uid")
    return [rs for rs in replicasets if uid and controller_uid(rs) == uid]


def strip_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the controller-added ``pod-template-hash`` label."""
    result = copy.deepcopy(dict(template))
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(LABEL_POD_TEMPLATE_HASH, None)
    return result


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
                "no_previous_revision", "no rollout history found: no previous revision"
            )
        chosen = numbered[1][1]
    else:
        matches = [rs for rev, rs in numbered if rev == to_revision]
        if not matches:
            raise PlanError(
                "revision_not_found", f"unable to find the ReplicaSet of revision {to_revision}"
            )
        chosen = matches[0]
    template = deployment.get("spec", {}).get("template") or {}
    if templates_equal(chosen.get("spec", {}).get("template") or {}, template):
        raise PlanError(
            "already_at_revision",
            f"current template already matches revision {revision_of(chosen)}",
        )
    return chosen


class RollingStrategy:
    """Restore the old template in place and let the controller roll it out."""

    name = "rolling"

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
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": metadata["resourceVersion"],
            },
            {
                "op": "replace",
                "path": "/spec/template",
                "value": strip_hash(replicaset.get("spec", {}).get("template") or {}),
            },
            # "add" replaces an existing member and also works when there is none.
            {"op": "add", "path": "/metadata/annotations", "value": restored},
        ]

    def rollout_status(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """The rules of ``kubectl rollout status`` for a Deployment."""
        name = deployment.get("metadata", {}).get("name", "?")
        generation = deployment.get("metadata", {}).get("generation", 0)
        status = deployment.get("status") or {}
        if generation > status.get("observedGeneration", 0):
            return RolloutOutcome(
                RolloutStatus.PROGRESSING, "waiting for deployment spec update to be observed"
            )
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "Progressing"
                and condition.get("reason") == "ProgressDeadlineExceeded"
            ):
                return RolloutOutcome(
                    RolloutStatus.FAILED, f"deployment {name!r} exceeded its progress deadline"
                )
        desired = deployment.get("spec", {}).get("replicas")
        updated = status.get("updatedReplicas", 0)
        replicas = status.get("replicas", 0)
        available = status.get("availableReplicas", 0)
        if desired is not None and updated < desired:
            return RolloutOutcome(
                RolloutStatus.PROGRESSING,
                f"{updated} out of {desired} new replicas have been updated",
            )
        if replicas > updated:
            return RolloutOutcome(
                RolloutStatus.PROGRESSING,
                f"{replicas - updated} old replicas are pending termination",
            )
        if available < updated:
            return RolloutOutcome(
                RolloutStatus.PROGRESSING,
                f"{available} of {updated} updated replicas are available",
            )
        return RolloutOutcome(
            RolloutStatus.COMPLETE, f"deployment {name!r} successfully rolled out"
        )
