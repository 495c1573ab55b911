"""The resource types kubesim serves, with what discovery and routing need to know.

One table drives discovery documents, URL routing, defaulting and strategic
merge support, so adding a kind is one line here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import argorollouts, crdschema, httproutes
from .errors import ApiError
from .selectors import selector_from_label_selector_object


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
    # Custom resources: the CRD's structural schema (crdschema.py) and printer
    # columns as (name, type, dotted path), which ``kubectl get`` shows.
    schema: Mapping[str, Any] | None = None
    columns: tuple[tuple[str, str, str], ...] = ()

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
_NO_SPEC = frozenset(
    {
        "configmaps",
        "secrets",
        "endpoints",
        "events",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
    }
)

_ALL = "all"

_TYPES = (
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), ("status",)),
    ResourceType(
        "", "v1", "pods", "Pod", True, "pod", ("po",), ("status", "eviction"), categories=(_ALL,)
    ),
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
    # What a Helm chart installs next to its workload (stored, not enforced;
    # PodDisruptionBudgets are: see disruption.py).
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        "poddisruptionbudget",
        ("pdb",),
        ("status",),
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"
    ),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        "clusterrolebinding",
    ),
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
    ResourceType(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        True,
        "httproute",
        (),
        ("status",),
        custom=True,
        categories=("gateway-api",),
        schema=httproutes.SCHEMA,
        columns=(("Hostnames", "string", "spec.hostnames"),),
    ),
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "rollouts",
        "Rollout",
        True,
        "rollout",
        ("ro",),
        ("status",),
        custom=True,
        schema=argorollouts.SCHEMA,
        columns=(
            ("Desired", "integer", "spec.replicas"),
            ("Current", "integer", "status.replicas"),
            ("Up-to-date", "integer", "status.updatedReplicas"),
            ("Available", "integer", "status.availableReplicas"),
        ),
    ),
)

REGISTRY: dict[str, ResourceType] = {rtype.key: rtype for rtype in _TYPES}

_BY_GVR: dict[tuple[str, str, str], ResourceType] = {
    (rtype.group, rtype.version, rtype.plural): rtype for rtype in _TYPES
}


def by_gvr(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/apis/{group}/{version}/{plural}`` (group "" = ``/api/v1``)."""
    return _BY_GVR.get((group, version, plural))


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


def validate_status(rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Causes for a status write: a custom resource's schema covers its status too."""
    if rtype.schema is None:
        return []
    return crdschema.validate(rtype.schema, obj)


DEPLOYMENTS = REGISTRY["apps/v1/deployments"]
REPLICASETS = REGISTRY["apps/v1/replicasets"]
PODS = REGISTRY["v1/pods"]
NAMESPACES = REGISTRY["v1/namespaces"]


# ---------------------------------------------------------------------------
# Per-kind defaulting and validation, as the real API server applies them on
# every write (create, update and patch), so clients read back the fields they
# rely on (kubectl rollout reads strategy and progressDeadlineSeconds).

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)


def _default_container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    if "imagePullPolicy" not in container:
        tagged = "@" in image or ":" in image.rsplit("/", 1)[-1]
        latest = not tagged or image.endswith(":latest")
        container["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _default_container(container)


def _default_template_owner(obj: dict[str, Any], *, deployment: bool) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("replicas", 1)
    if deployment:
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        pod_spec = template.get("spec")
        if isinstance(pod_spec, dict):
            default_pod_spec(pod_spec)


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])


def apply_defaults(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Fill in the defaults the real server sets for ``rtype`` (in place)."""
    if rtype.schema is not None:
        crdschema.apply_defaults(rtype.schema, obj)
    elif rtype.key == "apps/v1/deployments":
        _default_template_owner(obj, deployment=True)
    elif rtype.key == "apps/v1/replicasets":
        _default_template_owner(obj, deployment=False)
    elif rtype.key == "v1/pods":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)
    elif rtype.key == "v1/services":
        _default_service(obj)
    elif rtype.key == "v1/namespaces":
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict) and meta.get("name"):
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def _go_map(labels: Any) -> str:
    """How Go prints a map[string]string in validation messages."""
    if not isinstance(labels, dict):
        return "map[string]string(nil)"
    inner = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return f"map[string]string{{{inner}}}"


def template_owner_causes(obj: dict[str, Any]) -> list[dict[str, str]]:
    """What the API server refuses in a Deployment's or ReplicaSet's replicas, selector, template."""
    causes: list[dict[str, str]] = []
    _validate_template_owner(obj, causes)
    return causes


def _validate_template_owner(obj: dict[str, Any], causes: list[dict[str, str]]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(_cause("spec", "Required value", "FieldValueRequired"))
        return
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(
            _cause(
                "spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"
            )
        )
    selector = spec.get("selector")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(_cause("spec.selector", "Required value", "FieldValueRequired"))
    else:
        try:
            matcher = selector_from_label_selector_object(selector)
        except ApiError:
            causes.append(_cause("spec.selector", "Invalid value: invalid label selector"))
        else:
            if not matcher.matches(labels if isinstance(labels, dict) else {}):
                causes.append(
                    _cause(
                        "spec.template.metadata.labels",
                        f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
                    )
                )
    pod_spec = template.get("spec") if isinstance(template, dict) else None
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    if not containers:
        causes.append(
            _cause("spec.template.spec.containers", "Required value", "FieldValueRequired")
        )
    else:
        for index, container in enumerate(containers):
            if not isinstance(container, dict) or not container.get("name"):
                causes.append(
                    _cause(
                        f"spec.template.spec.containers[{index}].name",
                        "Required value",
                        "FieldValueRequired",
                    )
                )
            elif not container.get("image"):
                causes.append(
                    _cause(
                        f"spec.template.spec.containers[{index}].image",
                        "Required value",
                        "FieldValueRequired",
                    )
                )


def validate(
    rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Validation causes for ``obj`` (empty when valid); ``old`` is set on updates."""
    causes: list[dict[str, str]] = []
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not name and not (isinstance(meta, dict) and meta.get("generateName")):
        causes.append(
            _cause(
                "metadata.name",
                "Required value: name or generateName is required",
                "FieldValueRequired",
            )
        )
    elif name and (not isinstance(name, str) or len(name) > 253 or not _NAME.match(name)):
        causes.append(_cause("metadata.name", f'Invalid value: "{name}": {_NAME_MESSAGE}'))
    if rtype.schema is not None:
        causes += crdschema.validate(rtype.schema, obj)
        if old is not None:
            causes += crdschema.immutable_changes(rtype.schema, obj, old)
    if rtype.key in ("apps/v1/deployments", "apps/v1/replicasets"):
        _validate_template_owner(obj, causes)
        if old is not None and (old.get("spec") or {}).get("selector") != (
            obj.get("spec") or {}
        ).get("selector"):
            causes.append(_cause("spec.selector", "Invalid value: field is immutable"))
    return causes
