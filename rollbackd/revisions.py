"""Pure facts about a Deployment's revisions, from its Kubernetes JSON.

The ReplicaSet -> revision logic the watch cache feeds to ``decide``: which
revisions exist, when each one's rollout began and ended, which one
rollbackd restored, and who manages the Deployment. No I/O and no clock: the
adapter passes cached objects and ``now``, tests pass dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rollbackd.guard import images, templates_equal
from rollbackd.model import (
    ANNOTATION_REVISION,
    ANNOTATION_REVISION_HISTORY,
    LABEL_POD_TEMPLATE_HASH,
    ClusterFacts,
    RevisionInfo,
    Target,
)
from rollbackd.readiness import template_hash
from rollbackd.state import recorded_state, restored_record

ARGOCD_INSTANCE = "argocd.argoproj.io/instance"
ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"
_GITOPS_LABELS: tuple[tuple[str, str], ...] = (
    (ARGOCD_INSTANCE, "argocd:{}"),
    ("kustomize.toolkit.fluxcd.io/name", "flux:kustomization/{}"),
    ("helm.toolkit.fluxcd.io/name", "flux:helmrelease/{}"),
)


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp of the API (``...Z``), or None."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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
    """A pod template without the controller-added ``pod-template-hash`` label.

    Only the path to the labels is copied; the pod spec is shared with
    ``template``. Templates are read-only (the watch cache's are, and
    ``canary`` copies before changing one): a deep copy of every
    ReplicaSet's template in every facts was a quarter of the daemon's CPU
    at 10 000 Deployments, all of it pod health's scan of recent rollouts.
    """
    result = dict(template)
    meta = result.get("metadata")
    if isinstance(meta, Mapping):
        labels = meta.get("labels")
        result["metadata"] = dict(meta)
        if isinstance(labels, Mapping):
            result["metadata"]["labels"] = {
                k: v for k, v in labels.items() if k != LABEL_POD_TEMPLATE_HASH
            }
    return result


def metadata_value(obj: Mapping[str, Any], key: str) -> str | None:
    """A label, or else the annotation of the same key (GitOps tools write either)."""
    meta = obj.get("metadata") or {}
    value = (meta.get("labels") or {}).get(key) or (meta.get("annotations") or {}).get(key)
    return str(value) if value else None


def gitops_owner(deployment: Mapping[str, Any]) -> str | None:
    """``argocd:<app>`` / ``flux:<kind>/<name>`` when a GitOps controller manages the object."""
    for label, fmt in _GITOPS_LABELS:
        value = metadata_value(deployment, label)
        if value:
            return fmt.format(value)
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    tracking = annotations.get(ARGOCD_TRACKING_ID)
    if tracking:
        # "<app>:<group>/<kind>:<namespace>/<name>": the application is the first part.
        return f"argocd:{tracking.split(':', 1)[0]}"
    return None


def start_times(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> dict[int, datetime | None]:
    """When each revision number's rollout began, where it is known.

    A revision that created its ReplicaSet began at the RS's creation. A
    reused ReplicaSet (``kubectl rollout undo``) records no promotion time;
    the only one known is rollbackd's own, from its state annotation.
    """
    restored = restored_record(deployment)
    state = recorded_state(deployment)
    starts: dict[int, datetime | None] = {}
    for rs in replicasets:
        current = revision_of(rs)
        if current is None:
            continue
        numbers = [*revision_history(rs), current]
        created = parse_time(rs.get("metadata", {}).get("creationTimestamp"))
        for number in numbers:
            starts[number] = created if number == min(numbers) else None
        ours = (
            state is not None
            and restored.get("rollback_id") == state.rollback_id
            and restored.get("template_hash") == template_hash(rs)
        )
        if ours and current != min(numbers) and state is not None:
            starts[current] = state.started_at
    return starts


def revision_infos(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    now: datetime,
) -> tuple[RevisionInfo, ...]:
    """One RevisionInfo per numbered ReplicaSet, newest revision first."""
    starts = start_times(deployment, replicasets)
    numbers = sorted(starts)
    restored = restored_record(deployment)
    infos = []
    for rs in replicasets:
        revision = revision_of(rs)
        if revision is None:
            continue
        meta = rs.get("metadata", {})
        template = rs.get("spec", {}).get("template") or {}
        later = [n for n in numbers if n > revision]
        restored_by = None
        if restored.get("template_hash") and restored["template_hash"] == template_hash(rs):
            restored_by = str(restored.get("rollback_id") or "") or None
        status = rs.get("status") or {}
        infos.append(
            RevisionInfo(
                revision=revision,
                replicaset=meta.get("name", ""),
                uid=meta.get("uid", ""),
                created_at=parse_time(meta.get("creationTimestamp")) or now,
                template=strip_hash(template),
                images=images(template),
                replaced_at=starts.get(later[0]) if later else None,
                restored_by=restored_by,
                replicas=int(status.get("replicas", 0) or 0),
                available_replicas=int(status.get("availableReplicas", 0) or 0),
            )
        )
    return tuple(sorted(infos, key=lambda info: info.revision, reverse=True))


def cluster_facts(
    target: Target,
    deployment: Mapping[str, Any] | None,
    replicasets: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
) -> ClusterFacts:
    """What a Deployment and its owned ReplicaSets say about ``target``."""
    if deployment is None:
        return ClusterFacts(target=target, exists=False)
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    revisions = revision_infos(deployment, replicasets, now)
    current = revisions[0] if revisions else None
    rollout_started_at = None
    if current is not None and templates_equal(current.template, spec.get("template") or {}):
        rollout_started_at = start_times(deployment, replicasets).get(current.revision)
    return ClusterFacts(
        target=target,
        exists=True,
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        generation=int(meta.get("generation", 0)),
        annotations=dict(meta.get("annotations") or {}),
        template=spec.get("template") or {},
        paused=bool(spec.get("paused", False)),
        revisions=revisions,
        rollout_started_at=rollout_started_at,
        gitops_owner=gitops_owner(deployment),
    )
