"""Readiness of a restored version, as plain arithmetic over Kubernetes JSON.

Pods Ready of the current template against the desired count, and the ready
endpoints of every Service that selects those pods. The adapter fetches the
objects; the counting here is pure, so it is tested without a cluster and
shared by the adapter and verification without either importing the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rollbackd.guard import templates_equal
from rollbackd.model import LABEL_POD_TEMPLATE_HASH


@dataclass(frozen=True)
class ServiceEndpoints:
    """A Service that selects the target's pods, and its ready endpoint count."""

    name: str
    ready_addresses: int


@dataclass(frozen=True)
class ReadinessReport:
    """Pods Ready versus desired, and whether selecting Services have endpoints."""

    desired: int
    ready: int
    services: tuple[ServiceEndpoints, ...] = ()

    @property
    def pods_ok(self) -> bool:
        return self.ready >= self.desired

    @property
    def endpoints_ok(self) -> bool:
        return all(s.ready_addresses > 0 for s in self.services) or self.desired == 0

    @property
    def ok(self) -> bool:
        return self.pods_ok and self.endpoints_ok

    @property
    def detail(self) -> str:
        parts = [f"{self.ready}/{self.desired} pods ready"]
        parts += [f"service {s.name}: {s.ready_addresses} ready endpoints" for s in self.services]
        return ", ".join(parts)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition; a pod being deleted is never ready."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def template_hash(obj: Mapping[str, Any]) -> str | None:
    """The ``pod-template-hash`` label of a ReplicaSet's template or of a pod."""
    template = (obj.get("spec") or {}).get("template")
    meta = (template or {}).get("metadata") if template is not None else obj.get("metadata")
    return ((meta or {}).get("labels") or {}).get(LABEL_POD_TEMPLATE_HASH)


def running_template_hash(
    replicasets: Iterable[Mapping[str, Any]], template: Mapping[str, Any]
) -> str:
    """The pod-template-hash of the ReplicaSet running ``template``; "" when none does."""
    for rs in replicasets:
        if templates_equal(rs["spec"]["template"], template):
            return str(template_hash(rs) or "")
    return ""


def desired_replicas(deployment: Mapping[str, Any]) -> int:
    """``spec.replicas``, which the API defaults to 1 when absent."""
    replicas = (deployment.get("spec") or {}).get("replicas")
    return int(replicas if replicas is not None else 1)


def ready_current_pods(
    deployment: Mapping[str, Any],
    replicasets: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
) -> int:
    """Ready pods whose ReplicaSet carries the Deployment's current template."""
    template = (deployment.get("spec") or {}).get("template") or {}
    current_hashes = {
        template_hash(rs)
        for rs in replicasets
        if templates_equal((rs.get("spec") or {}).get("template") or {}, template)
    }
    return sum(1 for pod in pods if pod_ready(pod) and template_hash(pod) in current_hashes)


def service_selects(deployment: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """The Service's selector matches the labels of the Deployment's pod template."""
    template = (deployment.get("spec") or {}).get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selecting_services(
    deployment: Mapping[str, Any],
    services: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]],
) -> tuple[ServiceEndpoints, ...]:
    """Services whose selector matches the pod template's labels, with ready addresses."""
    by_name = {ep.get("metadata", {}).get("name"): ep for ep in endpoints}
    selecting = []
    for service in services:
        if not service_selects(deployment, service):
            continue
        name = service.get("metadata", {}).get("name", "")
        subsets = (by_name.get(name) or {}).get("subsets") or []
        addresses = sum(len(subset.get("addresses") or []) for subset in subsets)
        selecting.append(ServiceEndpoints(name, addresses))
    return tuple(selecting)


def readiness_report(
    deployment: Mapping[str, Any],
    replicasets: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]],
) -> ReadinessReport:
    """Ready pods of the current template vs desired; endpoints of selecting Services."""
    return ReadinessReport(
        desired=desired_replicas(deployment),
        ready=ready_current_pods(deployment, replicasets, pods),
        services=selecting_services(deployment, services, endpoints),
    )
