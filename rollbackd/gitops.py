"""Pause the GitOps controller that owns a Deployment (safety rule 9 in docs/architecture.md).

A rollback of an Argo CD- or Flux-managed Deployment is undone by the
controller at its next reconcile, because Git still says "the bad version".
So before the template is patched, the owner object is told to stop applying:

- Argo CD: remove ``spec.syncPolicy.automated`` from the Application. That is
  Argo CD's documented way to turn auto-sync (and self-heal) off; a manual
  sync keeps working for the humans who revert Git.
- Flux: set ``spec.suspend: true`` on the Kustomization or HelmRelease, the
  documented suspend switch (what ``flux suspend`` does).

Both write ``rollbackd.io/paused-sync`` on the owner (JSON: rollback id and
what was switched off) so a human can restore it exactly once Git is fixed.
Every write is guarded by the owner's resourceVersion (safety rule 10) and
re-tried on a fresh read when the controller updated the object meanwhile.

Owner objects are handled as plain JSON through the adapter's one request
path, so their errors arrive typed and transient faults are retried like
every other call (:mod:`rollbackd.kube.errors`, :mod:`rollbackd.kube.retry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import quote

from rollbackd.kube.errors import ConflictError, InvalidError, KubeError, NotFoundError
from rollbackd.kube.patch import annotation_path, precondition
from rollbackd.model import Target
from rollbackd.revisions import ARGOCD_INSTANCE, ARGOCD_TRACKING_ID, metadata_value

__all__ = [
    "ANNOTATION_PAUSED_SYNC",
    "DEFAULT_ARGOCD_NAMESPACE",
    "GitOpsError",
    "OwnerObject",
    "PauseResult",
    "locate",
    "pause",
]

ANNOTATION_PAUSED_SYNC = "rollbackd.io/paused-sync"
# Where Argo CD keeps Applications unless "applications in any namespace" is used.
DEFAULT_ARGOCD_NAMESPACE = "argocd"
# Guarded writes tried before giving up on an owner the controller keeps updating.
PAUSE_ATTEMPTS = 3

# Flux labels its objects with the owner's namespace next to its name.
_FLUX_NAMESPACE_LABELS = {
    "kustomization": "kustomize.toolkit.fluxcd.io/namespace",
    "helmrelease": "helm.toolkit.fluxcd.io/namespace",
}


class GitOpsError(Exception):
    """The GitOps owner could not be found or paused; the rollback must not proceed."""

    def __init__(self, owner: str, message: str) -> None:
        super().__init__(f"{owner}: {message}")
        self.owner = owner


@dataclass(frozen=True)
class OwnerObject:
    """Where a GitOps owner lives in the API."""

    tool: str  # "argocd" | "flux"
    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class PauseResult:
    """What :func:`pause` did, for the timeline and the page."""

    owner: str  # as detected on the Deployment: "argocd:shop"
    kind: str  # "Application" | "Kustomization" | "HelmRelease"
    namespace: str
    name: str
    already_paused: bool
    # The rollback that paused it, when rollbackd did (now or earlier); None
    # when auto-sync was off for another reason (a human, or never enabled).
    paused_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _argocd_namespace(app: str, deployment: Mapping[str, Any], default: str) -> tuple[str, str]:
    """(namespace, name) of the Application.

    The tracking id is ``<app>:<group>/<kind>:<namespace>/<name>``, but that
    namespace is the tracked Deployment's, not the Application's. Argo CD
    encodes an Application outside its control-plane namespace as
    ``<namespace>_<name>`` in the app part (of the tracking id and of the
    instance label); names cannot contain ``_``, so the split is unambiguous.
    """
    tracking = metadata_value(deployment, ARGOCD_TRACKING_ID)
    instance = (
        tracking.split(":", 1)[0] if tracking else metadata_value(deployment, ARGOCD_INSTANCE)
    )
    for candidate in (app, instance or ""):
        namespace, sep, name = candidate.partition("_")
        if sep and namespace and name:
            return namespace, name
    return default, app


def locate(
    deployment: Mapping[str, Any],
    target: Target,
    owner: str,
    *,
    argocd_namespace: str = DEFAULT_ARGOCD_NAMESPACE,
) -> OwnerObject:
    """The owner object named by ``owner`` (``argocd:<app>`` / ``flux:<kind>/<name>``)."""
    tool, _, ref = owner.partition(":")
    if tool == "argocd" and ref:
        namespace, name = _argocd_namespace(ref, deployment, argocd_namespace)
        return OwnerObject(
            "argocd", "argoproj.io", "v1alpha1", "applications", "Application", namespace, name
        )
    kind, _, name = ref.partition("/")
    kind = kind.lower()
    if tool == "flux" and name and kind in _FLUX_NAMESPACE_LABELS:
        namespace = metadata_value(deployment, _FLUX_NAMESPACE_LABELS[kind]) or target.namespace
        if kind == "kustomization":
            return OwnerObject(
                "flux",
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "kustomizations",
                "Kustomization",
                namespace,
                name,
            )
        return OwnerObject(
            "flux", "helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease", namespace, name
        )
    raise GitOpsError(
        owner, "unrecognised GitOps owner (expected argocd:<app> or flux:<kind>/<name>)"
    )


def _paused_record(obj: Mapping[str, Any]) -> str | None:
    """The rollback id in an existing ``rollbackd.io/paused-sync`` annotation."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_PAUSED_SYNC)
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    if isinstance(record, dict) and record.get("rollback_id"):
        return str(record["rollback_id"])
    return None


def _argocd_automated(app: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The automated sync block while auto-sync is on, else None."""
    automated = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
    if not isinstance(automated, Mapping):
        return None
    # Newer Argo CD can keep the block but switch it off with enabled: false.
    if automated.get("enabled") is False:
        return None
    return automated


def _argocd_patch(app: Mapping[str, Any], record: str) -> tuple[str, Any]:
    meta = app.get("metadata") or {}
    ops: list[dict[str, Any]] = [
        precondition(meta.get("resourceVersion")),
        {"op": "remove", "path": "/spec/syncPolicy/automated"},
    ]
    if meta.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": annotation_path(ANNOTATION_PAUSED_SYNC),
            "value": record,
        }
    )
    return "application/json-patch+json", ops


def _flux_patch(obj: Mapping[str, Any], record: str) -> tuple[str, Any]:
    # A merge patch carrying metadata.resourceVersion is rejected with 409
    # when the object moved on: the same guard as a JSON patch test.
    body = {
        "metadata": {
            "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion"),
            "annotations": {ANNOTATION_PAUSED_SYNC: record},
        },
        "spec": {"suspend": True},
    }
    return "application/merge-patch+json", body


class OwnerApi(Protocol):
    """What pausing needs of the Kubernetes adapter."""

    async def request(
        self, method: str, path: str, *, body: Any = ..., content_type: str = ...
    ) -> dict[str, Any]: ...

    async def read_deployment(self, target: Target) -> dict[str, Any]: ...


def _why(exc: KubeError) -> str:
    return f"{exc.status} {exc.reason or exc}" if exc.status else str(exc)


class _Owners:
    """Reads and guarded writes of one owner object, errors mapped to GitOpsError."""

    def __init__(self, kube: OwnerApi, owner: str, ref: OwnerObject) -> None:
        self._kube = kube
        self._owner = owner
        self._ref = ref
        self._path = (
            f"/apis/{ref.group}/{ref.version}/namespaces/{quote(ref.namespace)}/"
            f"{ref.plural}/{quote(ref.name)}"
        )

    async def get(self) -> dict[str, Any]:
        try:
            return await self._kube.request("GET", self._path)
        except NotFoundError as exc:
            raise GitOpsError(self._owner, f"{self._ref} not found") from exc
        except KubeError as exc:
            raise GitOpsError(self._owner, f"reading {self._ref} failed: {_why(exc)}") from exc

    async def patch(self, content_type: str, body: Any, resource_version: str) -> bool:
        """Apply; False when the guard failed because the object moved on."""
        try:
            await self._kube.request("PATCH", self._path, body=body, content_type=content_type)
        except ConflictError:
            return False
        except InvalidError as exc:
            # A failed JSON patch ``test`` is a 422: a conflict when the object moved.
            current = await self.get()
            if (current.get("metadata") or {}).get("resourceVersion") != resource_version:
                return False
            raise GitOpsError(self._owner, f"pausing {self._ref} failed: {_why(exc)}") from exc
        except KubeError as exc:
            raise GitOpsError(self._owner, f"pausing {self._ref} failed: {_why(exc)}") from exc
        return True


async def pause(
    kube: OwnerApi,
    target: Target,
    owner: str,
    *,
    rollback_id: str,
    deployment: Mapping[str, Any] | None = None,
    argocd_namespace: str = DEFAULT_ARGOCD_NAMESPACE,
) -> PauseResult:
    """Stop ``owner`` from re-applying ``target``'s template; idempotent.

    ``deployment`` is the fresh object the caller planned from (read again
    when None): its labels say where the owner lives. Any object's metadata
    does, so a blue-green Service's own owner is paused the same way. Raises
    :class:`GitOpsError` when the owner cannot be found or paused.
    """
    if deployment is None:
        try:
            deployment = await kube.read_deployment(target)
        except KubeError as exc:
            raise GitOpsError(owner, f"reading {target} failed: {exc}") from exc
    ref = locate(deployment, target, owner, argocd_namespace=argocd_namespace)
    owners = _Owners(kube, owner, ref)
    for _ in range(PAUSE_ATTEMPTS):
        obj = await owners.get()
        if ref.tool == "argocd":
            automated = _argocd_automated(obj)
            if automated is None:
                return _result(owner, ref, already_paused=True, paused_by=_paused_record(obj))
            record: dict[str, Any] = {"rollback_id": rollback_id, "automated": dict(automated)}
            content_type, body = _argocd_patch(obj, json.dumps(record, sort_keys=True))
        else:
            if (obj.get("spec") or {}).get("suspend") is True:
                return _result(owner, ref, already_paused=True, paused_by=_paused_record(obj))
            record = {"rollback_id": rollback_id, "suspend": False}
            content_type, body = _flux_patch(obj, json.dumps(record, sort_keys=True))
        resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if await owners.patch(content_type, body, resource_version):
            return _result(owner, ref, already_paused=False, paused_by=rollback_id)
    raise GitOpsError(owner, f"{ref} kept changing: {PAUSE_ATTEMPTS} guarded writes conflicted")


def _result(
    owner: str, ref: OwnerObject, *, already_paused: bool, paused_by: str | None
) -> PauseResult:
    return PauseResult(owner, ref.kind, ref.namespace, ref.name, already_paused, paused_by)
