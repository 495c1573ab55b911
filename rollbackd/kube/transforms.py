"""The watch cache's kinds, and what it keeps of a Service and of an Argo Rollout.

Deployments and ReplicaSets are cut down in :mod:`rollbackd.kube.slim`, pods
in :mod:`rollbackd.kube.podrecord`;
a Service keeps what the blue-green facts read, and managedFields only where
they say something rollbackd reads (a Service selector's owner).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rollbackd.kube.podrecord import pod_record
from rollbackd.kube.slim import Slim

DEPLOYMENTS = "deployments"
REPLICASETS = "replicasets"
PODS = "pods"
SERVICES = "services"
ROLLOUTS = "rollouts"  # argoproj.io/v1alpha1, watched only when served

# The raw object (decoded JSON) -> what the cache keeps.
Transform = Callable[[dict[str, Any]], Any]


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
    if isinstance(spec, Mapping):
        # spec.paused: a human's pause, which the decision tells apart (rollbackd.argo).
        kept = {"replicas": spec.get("replicas", 1)}
        trimmed["spec"] = kept | ({"paused": spec["paused"]} if "paused" in spec else {})
    else:
        trimmed["spec"] = spec
    if "status" in rollout:
        trimmed["status"] = rollout["status"]
    return trimmed


def slim_transforms() -> dict[str, Transform]:
    """The default: each kind cut down to what rollbackd reads (:mod:`rollbackd.kube.slim`)."""
    slim = Slim()
    return {
        DEPLOYMENTS: slim.deployment,
        REPLICASETS: slim.replicaset,
        PODS: pod_record,
        SERVICES: trim_service,
        ROLLOUTS: trim_rollout,
    }
