"""The resource types kubesim serves, with what discovery and routing need to know.

One table drives discovery documents, URL routing, defaulting and strategic
merge support, so adding a kind is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (``apps/v1 deployments``)."""

    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Custom resources: no strategic merge patch, returned object on delete.
    custom: bool = False
    categories: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Store key: ``apps/v1/deployments`` or ``v1/pods``."""
        return f"{self.api_version}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def has_spec(self) -> bool:
        """Kinds whose ``metadata.generation`` tracks changes to ``.spec``."""
        return self.plural not in _NO_SPEC

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


# Kinds without a .spec: generation is not maintained for them.
_NO_SPEC = frozenset({"configmaps", "secrets", "endpoints", "events"})

_ALL = "all"

_TYPES = (
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), ("status",)),
    ResourceType("", "v1", "pods", "Pod", True, "pod", ("po",), ("status",), categories=(_ALL,)),
    ResourceType(
        "", "v1", "services", "Service", True, "service", ("svc",), ("status",), categories=(_ALL,)
    ),
    ResourceType("", "v1", "endpoints", "Endpoints", True, "endpoints", ("ep",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType("", "v1", "events", "Event", True, "event", ("ev",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        "deployment",
        ("deploy",),
        ("status", "scale"),
        categories=(_ALL,),
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        "replicaset",
        ("rs",),
        ("status", "scale"),
        categories=(_ALL,),
    ),
    ResourceType("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "applications",
        "Application",
        True,
        "application",
        ("app", "apps"),
        ("status",),
        custom=True,
    ),
    ResourceType(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "kustomizations",
        "Kustomization",
        True,
        "kustomization",
        ("ks",),
        ("status",),
        custom=True,
    ),
    ResourceType(
        "helm.toolkit.fluxcd.io",
        "v2",
        "helmreleases",
        "HelmRelease",
        True,
        "helmrelease",
        ("hr",),
        ("status",),
        custom=True,
    ),
)

REGISTRY: dict[str, ResourceType] = {rtype.key: rtype for rtype in _TYPES}

_BY_GVR: dict[tuple[str, str, str], ResourceType] = {
    (rtype.group, rtype.version, rtype.plural): rtype for rtype in _TYPES
}
_BY_KIND: dict[tuple[str, str], ResourceType] = {
    (rtype.api_version, rtype.kind): rtype for rtype in _TYPES
}


def by_gvr(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/apis/{group}/{version}/{plural}`` (group "" = ``/api/v1``)."""
    return _BY_GVR.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    """The type for an object's ``apiVersion`` and ``kind``."""
    return _BY_KIND.get((api_version, kind))


def group_versions() -> dict[str, list[str]]:
    """Every served group with its versions, in registry order (core is "")."""
    groups: dict[str, list[str]] = {}
    for rtype in _TYPES:
        versions = groups.setdefault(rtype.group, [])
        if rtype.version not in versions:
            versions.append(rtype.version)
    return groups


def types_in(group: str, version: str) -> list[ResourceType]:
    return [rtype for rtype in _TYPES if rtype.group == group and rtype.version == version]


DEPLOYMENTS = REGISTRY["apps/v1/deployments"]
REPLICASETS = REGISTRY["apps/v1/replicasets"]
PODS = REGISTRY["v1/pods"]
NAMESPACES = REGISTRY["v1/namespaces"]
CORE_EVENTS = REGISTRY["v1/events"]
