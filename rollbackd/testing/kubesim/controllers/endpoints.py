"""The Endpoints controller (pkg/controller/endpoint): a selector Service's pods, by readiness.

Every pod with an IP that the Service selects is an address: Ready pods under
``addresses``, the others under ``notReadyAddresses``, with the Service's
ports resolved against the pods (named target ports looked up on the pod).
A Service without a selector keeps the Endpoints its user wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ..errors import ApiError
from ..store import Obj, clone
from .context import Context
from .kubelet import NODE_NAME
from .objects import ENDPOINTS, PODS, SERVICES, selects
from .pods import is_pod_ready


class EndpointsController:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, namespace: str, name: str) -> None:
        store = self._ctx.store
        service = store.peek(SERVICES, namespace, name)
        existing = store.peek(ENDPOINTS, namespace, name)
        if service is None:
            if existing is not None:
                with contextlib.suppress(ApiError):
                    store.delete(ENDPOINTS, namespace, name)
            return
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return  # Endpoints of a selector-less Service belong to the user.
        subsets = self._subsets(service, namespace, selector)
        endpoints = _desired(service, namespace, name, subsets)
        if existing is None:
            store.create(ENDPOINTS, endpoints)
        elif existing.get("subsets") != endpoints.get("subsets") or existing["metadata"].get(
            "labels"
        ) != endpoints["metadata"].get("labels"):
            store.update(ENDPOINTS, _updated(existing, endpoints))

    def _subsets(
        self, service: Mapping[str, Any], namespace: str, selector: Mapping[str, str]
    ) -> list[Obj]:
        """One subset of the selected pods' addresses, or none when no pod has an IP."""
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        first_pod: Mapping[str, Any] | None = None
        for pod_name, labels in sorted(self._ctx.index.pod_labels.get(namespace, {}).items()):
            if not selects(selector, labels):
                continue
            pod = self._ctx.store.peek(PODS, namespace, pod_name)
            address = _address(pod) if pod is not None else None
            if pod is None or address is None:
                continue
            first_pod = first_pod or pod
            (ready if is_pod_ready(pod) else not_ready).append(address)
        if not (ready or not_ready):
            return []
        subset: Obj = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        subset["ports"] = endpoint_ports(service, first_pod)
        return [subset]


def _desired(service: Mapping[str, Any], namespace: str, name: str, subsets: list[Obj]) -> Obj:
    """The Endpoints object the Service should have: its labels and the subsets."""
    endpoints: Obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
    }
    labels = service["metadata"].get("labels")
    if labels:
        endpoints["metadata"]["labels"] = clone(labels)
    if subsets:
        endpoints["subsets"] = subsets
    return endpoints


def _address(pod: Mapping[str, Any]) -> Obj | None:
    """The pod as an endpoint address; None while it is deleted or has no IP."""
    if pod["metadata"].get("deletionTimestamp"):
        return None
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    return {
        "ip": ip,
        "nodeName": (pod.get("spec") or {}).get("nodeName", NODE_NAME),
        "targetRef": {
            "kind": "Pod",
            "namespace": pod["metadata"]["namespace"],
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        },
    }


def _updated(existing: Mapping[str, Any], endpoints: Obj) -> Obj:
    """``existing`` with the desired labels and subsets (its other metadata kept)."""
    updated = clone(existing)
    updated["metadata"]["labels"] = endpoints["metadata"].get("labels")
    if updated["metadata"]["labels"] is None:
        del updated["metadata"]["labels"]
    updated.pop("subsets", None)
    if "subsets" in endpoints:
        updated["subsets"] = endpoints["subsets"]
    return updated


def endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any] | None) -> list[Obj]:
    """Service ports resolved to the pods' target ports (named ports looked up on the pod)."""
    named: dict[str, int] = {}
    for container in ((pod or {}).get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name"):
                named[port["name"]] = int(port["containerPort"])
    ports: list[Obj] = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            if target not in named:
                continue
            target = named[target]
        entry: Obj = {"port": int(target), "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            entry = {"name": port["name"], **entry}
        ports.append(entry)
    return ports
