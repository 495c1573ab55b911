"""Gateway API ``HTTPRoute`` (gateway.networking.k8s.io/v1): schema, status and the weight split.

kubesim serves HTTPRoutes as the CRD does (``SCHEMA`` is the subset of the
standard channel's schema its clients touch: backendRef weights 0..1000000,
default 1; a Service backendRef needs a port; at most 16 rules, 16
backendRefs each) and plays the part of a gateway controller for every
parent the route names, whether or not a Gateway object exists:

* ``status.parents[]`` per ``spec.parentRefs[]``: ``Accepted`` True, and
  ``ResolvedRefs`` True, or False with ``BackendNotFound`` (a Service that does
  not exist), ``InvalidKind`` (a backend that is not a core Service) or
  ``RefNotPermitted`` (another namespace: kubesim serves no ReferenceGrant);
* the traffic: ``routed_rps`` gives each pod behind a backend its share of
  the route's requests, which ``workload.py`` counts instead of the pod's own
  ``kubesim.rollbackd.io/rps``. The route carries ``kubesim.rollbackd.io/rps``
  requests per second (annotation on the HTTPRoute), by default the sum of the
  own rps of every pod behind its backends, so shifting weight moves requests
  without creating or losing any. Rules with backendRefs share that equally;
  within a rule a backend gets ``weight / sum(weights)``, split evenly over the
  ready endpoints of its Service.

What a real gateway answers 500 (a backend that does not resolve, or a rule
whose weights are all 0) reaches no pod, so no pod counts it: kubesim has no
gateway metrics. Matches, filters and hostnames do not change the split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .crdschema import RULES, Schema

if TYPE_CHECKING:  # the store imports the registry, which imports this schema
    from .store import Store

Obj = dict[str, Any]

HTTPROUTES = "gateway.networking.k8s.io/v1/httproutes"
CONTROLLER_NAME = "kubesim.rollbackd.io/gateway-controller"
ROUTE_RPS = "kubesim.rollbackd.io/rps"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_GROUP = {
    "type": "string",
    "maxLength": 253,
    "pattern": rf"^$|^{_DNS_LABEL}(\.{_DNS_LABEL})*$",
}
_KIND = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_NAMESPACE = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": rf"^{_DNS_LABEL}$"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _service_has_port(ref: Mapping[str, Any]) -> bool:
    """The CRD's CEL rule on backendRefs: a core Service reference names a port."""
    is_service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
    return not is_service or ref.get("port") is not None


_PARENT_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "group": {**_GROUP, "default": "gateway.networking.k8s.io"},
        "kind": {**_KIND, "default": "Gateway"},
        "name": _NAME,
        "namespace": _NAMESPACE,
        "port": _PORT,
        "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
    },
}
_BACKEND_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "group": {**_GROUP, "default": ""},
        "kind": {**_KIND, "default": "Service"},
        "name": _NAME,
        "namespace": _NAMESPACE,
        "port": _PORT,
        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 1},
    },
    RULES: [(_service_has_port, "Must have port for Service reference")],
}
_RULE = {
    "type": "object",
    "properties": {
        "matches": {"type": "array", "maxItems": 64, "items": {"type": "object"}},
        "filters": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
        "backendRefs": {"type": "array", "maxItems": 16, "items": _BACKEND_REF},
    },
}
SCHEMA: Schema = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "pattern": rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*$",
                    },
                },
                "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REF},
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": _RULE,
                    "default": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
                },
            },
        },
    },
}


# ------------------------------------------------------------------ status


def _resolved_refs(route: Mapping[str, Any], store: Store) -> tuple[str, str, str]:
    """(status, reason, message) of the ResolvedRefs condition: the first backend that fails."""
    namespace = route["metadata"].get("namespace") or ""
    for ref in _backend_refs(route):
        name = str(ref.get("name"))
        if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
            kind = f"{ref.get('group', '')}/{ref.get('kind', 'Service')}".lstrip("/")
            return "False", "InvalidKind", f"backendRef {name}: unsupported kind {kind}"
        if (ref.get("namespace") or namespace) != namespace:
            return "False", "RefNotPermitted", f"backendRef {name}: no ReferenceGrant allows it"
        if store.peek("v1/services", namespace, name) is None:
            return "False", "BackendNotFound", f'Service "{name}" not found'
    return "True", "ResolvedRefs", "Resolved all the Object references for the Route"


def parent_statuses(route: Mapping[str, Any], store: Store, now: str) -> list[Obj]:
    """``status.parents``: one entry per parentRef, transition times kept from the last status."""
    generation = route["metadata"].get("generation", 1)
    resolved = _resolved_refs(route, store)
    previous = {
        repr(sorted((entry.get("parentRef") or {}).items())): entry
        for entry in (route.get("status") or {}).get("parents") or []
        if isinstance(entry, dict)
    }
    parents = []
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        old = previous.get(repr(sorted(ref.items()))) or {}
        old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
        conditions = []
        for cond_type, (status, reason, message) in (
            ("Accepted", ("True", "Accepted", "Route is accepted")),
            ("ResolvedRefs", resolved),
        ):
            before = old_conditions.get(cond_type) or {}
            since = before.get("lastTransitionTime") if before.get("status") == status else None
            conditions.append(
                {
                    "type": cond_type,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": since or now,
                }
            )
        parents.append(
            {"parentRef": dict(ref), "controllerName": CONTROLLER_NAME, "conditions": conditions}
        )
    return parents


def names_service(route: Mapping[str, Any], service: str) -> bool:
    """Whether a backendRef of ``route`` names the Service ``service``."""
    return any(ref.get("name") == service for ref in _backend_refs(route))


# ----------------------------------------------------------------- traffic


def _backend_refs(route: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in (rule or {}).get("backendRefs") or []:
            if isinstance(ref, dict):
                yield ref


def _ready_pods(store: Store, namespace: str, service: str) -> list[Obj]:
    """The pods behind the Service's ready endpoint addresses (what a gateway routes to)."""
    pods: dict[str, Obj] = {}
    endpoints = store.peek("v1/endpoints", namespace, service) or {}
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            name = (address.get("targetRef") or {}).get("name", "")
            pod = store.peek("v1/pods", namespace, name)
            if pod is not None:
                pods[name] = pod
    return [pods[name] for name in sorted(pods)]


def _rule_backends(
    store: Store, namespace: str, rule: Mapping[str, Any]
) -> list[tuple[int, list[Obj]]]:
    """(weight, ready pods) per backendRef; a backend that does not resolve has no pods."""
    backends = []
    for ref in (rule or {}).get("backendRefs") or []:
        weight = ref.get("weight", 1)
        weight = weight if isinstance(weight, int) and weight > 0 else 0
        same_namespace = (ref.get("namespace") or namespace) == namespace
        core_service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
        pods = _ready_pods(store, namespace, str(ref.get("name"))) if same_namespace else []
        backends.append((weight, pods if core_service else []))
    return backends


def _route_rps(
    route: Mapping[str, Any], pods: list[Obj], base_rps: Callable[[Obj], float]
) -> float:
    text = ((route["metadata"].get("annotations") or {}).get(ROUTE_RPS) or "").strip()
    try:
        given = float(text) if text else None
    except ValueError:
        given = None
    if given is not None and given >= 0:
        return given
    distinct = {pod["metadata"]["name"]: pod for pod in pods}
    return sum(base_rps(pod) for pod in distinct.values())


def routed_rps(store: Store, base_rps: Callable[[Obj], float]) -> dict[tuple[str, str], float]:
    """Requests per second each pod behind an HTTPRoute backend receives, by (namespace, pod).

    Pods behind no route are absent: they keep their own rps.
    """
    result: dict[tuple[str, str], float] = {}
    for route in store.list(HTTPROUTES, copy=False):
        namespace = route["metadata"].get("namespace") or ""
        rules = [
            _rule_backends(store, namespace, rule)
            for rule in (route.get("spec") or {}).get("rules") or []
            if isinstance(rule, dict) and rule.get("backendRefs")
        ]
        every_pod = [pod for rule in rules for _, pods in rule for pod in pods]
        route_rps = _route_rps(route, every_pod, base_rps)
        for pod in every_pod:
            result.setdefault((namespace, pod["metadata"]["name"]), 0.0)
        for backends in rules:
            total_weight = sum(weight for weight, _ in backends)
            for weight, pods in backends:
                if not pods or total_weight == 0:
                    continue
                share = route_rps / len(rules) * weight / total_weight / len(pods)
                for pod in pods:
                    result[(namespace, pod["metadata"]["name"])] += share
    return result


__all__ = [
    "CONTROLLER_NAME",
    "HTTPROUTES",
    "ROUTE_RPS",
    "SCHEMA",
    "names_service",
    "parent_statuses",
    "routed_rps",
]
