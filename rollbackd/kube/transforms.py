"""What the watch cache keeps of each kind: per-kind transforms (client-go's ``SetTransform``).

Pods are the bulk of a cluster and the cache needs only their names and
owners; Services only what the blue-green facts read; managedFields only
where they say something rollbackd reads (a Service selector's owner).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

DEPLOYMENTS = "deployments"
REPLICASETS = "replicasets"
PODS = "pods"
SERVICES = "services"
ROLLOUTS = "rollouts"  # argoproj.io/v1alpha1, watched only when served

Transform = Callable[[dict[str, Any]], dict[str, Any]]
_POD_METADATA = ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion")


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod (whole or PartialObjectMetadata) as the cache keeps it: the resolver's fields."""
    meta = pod.get("metadata", {})
    return {"metadata": {k: meta[k] for k in _POD_METADATA if k in meta}}


def drop_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply bookkeeping: often the largest part of an object, never read here."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def trim_service(service: Mapping[str, Any]) -> dict[str, Any]:
    """A Service as the cache keeps it: identity, annotations, selector, its selector's owners."""
    meta = service.get("metadata", {})
    kept = {
        k: meta[k] for k in ("name", "namespace", "annotations", "resourceVersion") if k in meta
    }
    owners = [
        {k: entry.get(k) for k in ("manager", "operation", "time", "fieldsV1")}
        for entry in meta.get("managedFields") or []
        if "f:selector" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    ]
    if owners:
        kept["managedFields"] = owners
    return {"metadata": kept, "spec": {"selector": (service.get("spec") or {}).get("selector")}}


def trim_rollout(rollout: Mapping[str, Any]) -> dict[str, Any]:
    """An Argo Rollout as the cache keeps it: what :func:`rollbackd.argo.rollout_facts` reads."""
    meta, spec = rollout.get("metadata") or {}, rollout.get("spec")
    keep = ("name", "namespace", "uid", "annotations", "resourceVersion")
    trimmed: dict[str, Any] = {"metadata": {k: meta[k] for k in keep if k in meta}}
    # A malformed spec is kept as it is: the facts say why it cannot be judged.
    trimmed["spec"] = {"replicas": spec.get("replicas", 1)} if isinstance(spec, Mapping) else spec
    if "status" in rollout:
        trimmed["status"] = rollout["status"]
    return trimmed


DEFAULT_TRANSFORMS: Mapping[str, Transform] = {
    DEPLOYMENTS: drop_managed_fields,
    REPLICASETS: drop_managed_fields,
    PODS: trim_pod,
    SERVICES: trim_service,
    ROLLOUTS: trim_rollout,
}
