"""The watch cache's kinds, and what it keeps of a Service.

Deployments, ReplicaSets and pods are cut down in :mod:`rollbackd.kube.slim`;
a Service keeps what the blue-green facts read, and managedFields only where
they say something rollbackd reads (a Service selector's owner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEPLOYMENTS = "deployments"
REPLICASETS = "replicasets"
PODS = "pods"
SERVICES = "services"


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
