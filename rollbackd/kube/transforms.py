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


DEFAULT_TRANSFORMS: Mapping[str, Transform] = {
    DEPLOYMENTS: drop_managed_fields,
    REPLICASETS: drop_managed_fields,
    PODS: trim_pod,
    SERVICES: trim_service,
}
