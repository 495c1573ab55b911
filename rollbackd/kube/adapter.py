"""The Kubernetes adapter: the only module that talks to the API server.

Reads for decisions come from an in-memory cache fed by list+watch of
Deployments, ReplicaSets and Pods (one query per alert would not scale, and a
watch cache answers in microseconds). Every write starts from a fresh GET and
carries a resourceVersion precondition (safety rule 10), so a human's
concurrent deploy surfaces as ConflictError instead of being overwritten.

Every failure leaves as a typed :class:`KubeError` built from the Status body
(:mod:`rollbackd.kubeerrors`); transient ones (429, 5xx, connection errors,
timeouts) are retried first, within the retry budget in scope
(:mod:`rollbackd.kuberetry`: a rollback brings its own).

Objects are handled as plain Kubernetes JSON (camelCase dicts): pod templates
are compared and restored byte-for-byte, which typed models would obscure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.fencing import Fence, check_state_term
from rollbackd.fencing import install as install_fence
from rollbackd.guard import templates_equal
from rollbackd.kubeerrors import (
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
    error_from_exception,
    error_from_response,
)
from rollbackd.kuberetry import RetryBudget, budget_scope, current_budget, with_retries
from rollbackd.lease import LeaseElector, LeaseProblem, LeaseSettings
from rollbackd.model import (
    ANNOTATION_RESTORED,
    ANNOTATION_ROLLBACK,
    LABEL_POD_TEMPLATE_HASH,
    ClusterFacts,
    RevisionInfo,
    Target,
)
from rollbackd.state import RollbackState, decode_state, encode_state
from rollbackd.strategies import RolloutOutcome, RolloutStatus
from rollbackd.strategies.rolling import (
    RollingStrategy,
    controller_uid,
    revision_history,
    revision_of,
    strip_hash,
)
from rollbackd.verify import ReadinessReport, ServiceEndpoints

__all__ = [
    "ConflictError",
    "ConnectionFailedError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "Kube",
    "KubeError",
    "NotFoundError",
    "ReadinessReport",
    "RetryBudget",
    "RolloutOutcome",
    "RolloutStatus",
    "ServerError",
    "TooManyRequestsError",
    "gitops_owner",
]

log = logging.getLogger(__name__)

DEPLOYMENTS = "deployments"
REPLICASETS = "replicasets"
PODS = "pods"

_GITOPS_LABELS: tuple[tuple[str, str], ...] = (
    ("argocd.argoproj.io/instance", "argocd:{}"),
    ("kustomize.toolkit.fluxcd.io/name", "flux:kustomization/{}"),
    ("helm.toolkit.fluxcd.io/name", "flux:helmrelease/{}"),
)
_ARGOCD_TRACKING_ID = "argocd.argoproj.io/tracking-id"


@dataclass(frozen=True)
class _WatchSpec:
    kind: str
    list_path: Callable[[str | None], str]
    lister: Callable[..., Awaitable[Any]]  # typed list function, used by watch.Watch
    namespace: str | None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


def _trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what the resolver and readiness need; pods are the bulk of the cache."""
    meta = pod.get("metadata", {})
    status = pod.get("status") or {}
    return {
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion")
            if k in meta
        },
        "status": {
            "conditions": status.get("conditions") or [],
            "containerStatuses": status.get("containerStatuses") or [],
        },
    }


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _template_images(template: Mapping[str, Any]) -> tuple[str, ...]:
    spec = template.get("spec") or {}
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    return tuple(str(c.get("image", "")) for c in containers)


def gitops_owner(deployment: Mapping[str, Any]) -> str | None:
    """``argocd:<app>`` / ``flux:<kind>/<name>`` when a GitOps controller manages the object."""
    meta = deployment.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    for label, fmt in _GITOPS_LABELS:
        value = labels.get(label) or annotations.get(label)
        if value:
            return fmt.format(value)
    tracking = annotations.get(_ARGOCD_TRACKING_ID)
    if tracking:
        # "<app>:<group>/<kind>:<namespace>/<name>": the application is the first part.
        return f"argocd:{tracking.split(':', 1)[0]}"
    return None


def _restored_record(deployment: Mapping[str, Any]) -> dict[str, Any] | None:
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_RESTORED)
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        log.warning("ignoring unparsable %s annotation", ANNOTATION_RESTORED)
        return None
    return record if isinstance(record, dict) else None


def _recorded_state(deployment: Mapping[str, Any]) -> RollbackState | None:
    text = (deployment.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_ROLLBACK)
    if not text:
        return None
    try:
        return decode_state(text)
    except ValueError as exc:
        log.warning("ignoring unreadable %s annotation: %s", ANNOTATION_ROLLBACK, exc)
        return None


def _tested_resource_version(ops: Sequence[Mapping[str, Any]]) -> str | None:
    for op in ops:
        if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion":
            return str(op.get("value"))
    return None


def _generation(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("generation", 0))
    except (TypeError, ValueError):
        return 0


def _escape_pointer(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


class Kube:
    """kubernetes-asyncio adapter with a watch cache; create with :meth:`connect`."""

    def __init__(
        self,
        api: ApiClient,
        *,
        request_timeout: float = 30.0,
        watch_timeout: int = 300,
        identity: str | None = None,
        retry_budget: float = 0.0,
    ) -> None:
        self._api = api
        # Seconds a call outside any budget_scope may spend on transient
        # faults; a rollback brings its own budget (see kuberetry).
        self._retry_budget = retry_budget
        self._apps = client.AppsV1Api(api)
        self._core = client.CoreV1Api(api)
        self._request_timeout = request_timeout
        self._watch_timeout = watch_timeout
        self._identity = identity or socket.gethostname()
        self._strategy = RollingStrategy()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            DEPLOYMENTS: {},
            REPLICASETS: {},
            PODS: {},
        }
        self._rs_by_owner: dict[str, set[tuple[str, str]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_sync: set[tuple[str, str | None]] = set()
        self._synced = asyncio.Event()
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        # Safety rule 13: every write this client sends asks the fence first
        # (open until leader election turns it on).
        self.fence = Fence()
        install_fence(api, self.fence)
        self.election: LeaseElector | None = None

    @classmethod
    async def connect(
        cls,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        retry_budget: float = 0.0,
    ) -> Kube:
        """Connect with a kubeconfig file, or the in-cluster service account when None.

        ``retry_budget``: seconds a call made outside a rollback's
        :func:`~rollbackd.kuberetry.budget_scope` may spend retrying
        transient faults (0: fail on the first one).
        """
        if kubeconfig is None:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = ApiClient(configuration=configuration)
        else:
            api = await config.new_client_from_config(config_file=kubeconfig, context=context)
        return cls(api, retry_budget=retry_budget)

    async def close(self) -> None:
        """Stop the watches (awaiting them) and close the HTTP session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._api.close()

    @property
    def api_client(self) -> ApiClient:
        """The shared ApiClient, for adapters of other resources (GitOps owners)."""
        return self._api

    @property
    def request_timeout(self) -> float:
        return self._request_timeout

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ HTTP

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call returning the decoded JSON body; transient faults are retried.

        Retries draw on the budget in scope (a rollback's), else on a fresh
        budget of the adapter's default. Every failure surfaces as a typed
        :class:`KubeError`.
        """
        budget = current_budget() or RetryBudget(self._retry_budget)
        return await with_retries(
            lambda: self._request_once(method, path, query, body, content_type),
            budget=budget,
            describe=f"{method} {path}",
        )

    async def _request_once(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Any,
        content_type: str,
    ) -> dict[str, Any]:
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self._request_timeout,
            )
        except ApiException as exc:
            # Raised before sending (a request the client cannot encode).
            raise KubeError(f"{method} {path}: {exc.reason}", exc.status or 0) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_from_exception(method, path, exc) from exc
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise error_from_exception(method, path, exc) from exc
        finally:
            response.release()
        status = response.status
        if not 200 <= status < 300:
            raise error_from_response(method, path, status, raw, response.headers)
        try:
            data = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KubeError(f"{method} {path}: {status} with a body that is not JSON") from exc
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _deployment_path(target: Target) -> str:
        return (
            f"/apis/apps/v1/namespaces/{quote(target.namespace)}/deployments/{quote(target.name)}"
        )

    # --------------------------------------------------------------- watches

    async def start_watches(self, namespaces: Sequence[str] | None = None) -> None:
        """Start list+watch loops (all namespaces when None); returns at once."""
        if self._tasks:
            raise RuntimeError("watches already started")
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        specs: list[_WatchSpec] = []
        for ns in scopes:
            specs += [
                _WatchSpec(
                    DEPLOYMENTS,
                    lambda n: f"/apis/apps/v1{self._ns_prefix(n)}/deployments",
                    self._apps.list_namespaced_deployment
                    if ns
                    else self._apps.list_deployment_for_all_namespaces,
                    ns,
                ),
                _WatchSpec(
                    REPLICASETS,
                    lambda n: f"/apis/apps/v1{self._ns_prefix(n)}/replicasets",
                    self._apps.list_namespaced_replica_set
                    if ns
                    else self._apps.list_replica_set_for_all_namespaces,
                    ns,
                ),
                _WatchSpec(
                    PODS,
                    lambda n: f"/api/v1{self._ns_prefix(n)}/pods",
                    self._core.list_namespaced_pod
                    if ns
                    else self._core.list_pod_for_all_namespaces,
                    ns,
                ),
            ]
        self._pending_sync = {(s.kind, s.namespace) for s in specs}
        self._synced.clear()
        for spec in specs:
            name = f"kube-watch-{spec.kind}-{spec.namespace or 'all'}"
            self._tasks.append(asyncio.create_task(self._watch_loop(spec), name=name))

    @staticmethod
    def _ns_prefix(namespace: str | None) -> str:
        return f"/namespaces/{quote(namespace)}" if namespace else ""

    @property
    def synced(self) -> bool:
        """True once every watched resource has been listed at least once."""
        return self._synced.is_set()

    # The contract names the deadline `timeout`; it is a plain bound, not a cancel scope.
    async def wait_synced(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    async def _watch_loop(self, spec: _WatchSpec) -> None:
        """List, then watch from the list's resourceVersion; never returns until cancelled."""
        # The loop backs off on its own; a per-request retry would only delay that.
        with budget_scope(RetryBudget(0.0)):
            await self._list_and_watch(spec)

    async def _list_and_watch(self, spec: _WatchSpec) -> None:
        backoff = 0.2
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    listing = await self._request("GET", spec.list_path(spec.namespace))
                    resource_version = listing.get("metadata", {}).get("resourceVersion", "")
                    self._replace(spec.kind, spec.namespace, listing.get("items") or [])
                    self._pending_sync.discard((spec.kind, spec.namespace))
                    if not self._pending_sync:
                        self._synced.set()
                args = (spec.namespace,) if spec.namespace else ()
                async with watch.Watch(return_type="object") as stream:
                    async for event in stream.stream(
                        spec.lister,
                        *args,
                        resource_version=resource_version,
                        timeout_seconds=self._watch_timeout,
                        allow_watch_bookmarks=True,
                    ):
                        obj = event["raw_object"]
                        rv = obj.get("metadata", {}).get("resourceVersion")
                        if rv:
                            resource_version = rv
                        self._apply_event(spec.kind, event["type"], obj)
                        backoff = 0.2
                # The server ended the watch (timeout or dropped stream): resume.
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch %s expired (410 Gone): re-listing", spec.kind)
                    resource_version = None
                    continue
                log.warning("watch %s failed: %s", spec.kind, exc.reason)
                backoff = await self._backoff(backoff)
            except Exception as exc:
                log.warning("watch %s failed: %r", spec.kind, exc)
                if isinstance(exc, GoneError):
                    resource_version = None
                backoff = await self._backoff(backoff)

    @staticmethod
    async def _backoff(current: float) -> float:
        # Full jitter keeps many replicas from reconnecting in lock-step.
        await asyncio.sleep(random.uniform(current / 2, current))
        return min(current * 2, 10.0)

    def _replace(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        store = self._objects[kind]
        for key in [k for k in store if namespace is None or k[0] == namespace]:
            self._put(kind, key, None)
        for item in items:
            self._put(kind, _key(item), item)
        if kind == DEPLOYMENTS:
            for key in list(self._waiters):
                self._notify(key)

    def _apply_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "BOOKMARK":
            return
        if event_type == "DELETED":
            self._put(kind, _key(obj), None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._put(kind, _key(obj), obj)
        if kind == DEPLOYMENTS:
            self._notify(_key(obj))

    def _put(self, kind: str, key: tuple[str, str], obj: dict[str, Any] | None) -> None:
        """Store or (None) drop one object, keeping the ReplicaSet owner index in step."""
        store = self._objects[kind]
        if kind == REPLICASETS:
            old_owner = controller_uid(store.get(key) or {})
            if old_owner and old_owner in self._rs_by_owner:
                self._rs_by_owner[old_owner].discard(key)
                if not self._rs_by_owner[old_owner]:
                    del self._rs_by_owner[old_owner]
            new_owner = controller_uid(obj or {})
            if new_owner:
                self._rs_by_owner.setdefault(new_owner, set()).add(key)
        if obj is None:
            store.pop(key, None)
        else:
            store[key] = _trim_pod(obj) if kind == PODS else obj

    def _notify(self, key: tuple[str, str]) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    @contextlib.contextmanager
    def _subscribe(self, target: Target) -> Iterator[asyncio.Event]:
        key = (target.namespace, target.name)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            self._waiters[key].discard(event)
            if not self._waiters[key]:
                del self._waiters[key]

    # ------------------------------------------------------------ cache reads

    def targets(self) -> list[Target]:
        return sorted(Target(ns, name) for ns, name in self._objects[DEPLOYMENTS])

    def cached_deployment(self, target: Target) -> dict[str, Any] | None:
        return self._objects[DEPLOYMENTS].get((target.namespace, target.name))

    def _owned_cached_replicasets(self, uid: str, namespace: str) -> list[dict[str, Any]]:
        # Indexed by owner UID: facts() must not scan every ReplicaSet in the cluster.
        store = self._objects[REPLICASETS]
        return [
            store[key]
            for key in self._rs_by_owner.get(uid, ())
            if key[0] == namespace and key in store
        ]

    def resolve_pod(self, namespace: str, pod: str) -> Target | None:
        """Pod -> ReplicaSet -> Deployment through controller ownerReferences, from the cache."""
        cached = self._objects[PODS].get((namespace, pod))
        if cached is None:
            return None
        rs_name = self._controller_name(cached, "ReplicaSet")
        rs = self._objects[REPLICASETS].get((namespace, rs_name or ""))
        if rs is None:
            return None
        deployment = self._controller_name(rs, "Deployment")
        return Target(namespace, deployment) if deployment else None

    @staticmethod
    def _controller_name(obj: Mapping[str, Any], kind: str) -> str | None:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == kind:
                return str(ref.get("name"))
        return None

    def facts(self, target: Target, *, now: datetime) -> ClusterFacts:
        """What the watch cache says about ``target`` (no API call)."""
        deployment = self.cached_deployment(target)
        if deployment is None:
            return ClusterFacts(target=target, exists=False)
        meta = deployment.get("metadata", {})
        spec = deployment.get("spec", {})
        replicasets = self._owned_cached_replicasets(meta.get("uid", ""), target.namespace)
        revisions = self._revisions(deployment, replicasets, now)
        current = revisions[0] if revisions else None
        rollout_started_at = None
        if current is not None and templates_equal(current.template, spec.get("template") or {}):
            rollout_started_at = self._start_times(deployment, replicasets).get(current.revision)
        return ClusterFacts(
            target=target,
            exists=True,
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            generation=int(meta.get("generation", 0)),
            annotations=dict(meta.get("annotations") or {}),
            template=spec.get("template") or {},
            paused=bool(spec.get("paused", False)),
            revisions=revisions,
            rollout_started_at=rollout_started_at,
            gitops_owner=gitops_owner(deployment),
        )

    def _start_times(
        self, deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
    ) -> dict[int, datetime | None]:
        """When each revision number's rollout began, where it is known.

        A revision that created its ReplicaSet began at the RS's creation. A
        reused ReplicaSet (``kubectl rollout undo``) records no promotion time;
        the only one known is rollbackd's own, from its state annotation.
        """
        restored = _restored_record(deployment) or {}
        state = _recorded_state(deployment)
        starts: dict[int, datetime | None] = {}
        for rs in replicasets:
            current = revision_of(rs)
            if current is None:
                continue
            numbers = [*revision_history(rs), current]
            created = _parse_time(rs.get("metadata", {}).get("creationTimestamp"))
            for number in numbers:
                starts[number] = created if number == min(numbers) else None
            labels = rs.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
            ours = (
                state is not None
                and restored.get("rollback_id") == state.rollback_id
                and restored.get("template_hash") == labels.get(LABEL_POD_TEMPLATE_HASH)
            )
            if ours and current != min(numbers) and state is not None:
                starts[current] = state.started_at
        return starts

    def _revisions(
        self,
        deployment: Mapping[str, Any],
        replicasets: Sequence[Mapping[str, Any]],
        now: datetime,
    ) -> tuple[RevisionInfo, ...]:
        starts = self._start_times(deployment, replicasets)
        numbers = sorted(starts)
        restored = _restored_record(deployment) or {}
        infos = []
        for rs in replicasets:
            revision = revision_of(rs)
            if revision is None:
                continue
            meta = rs.get("metadata", {})
            template = rs.get("spec", {}).get("template") or {}
            later = [n for n in numbers if n > revision]
            labels = (template.get("metadata") or {}).get("labels") or {}
            restored_by = None
            if restored.get("template_hash") and restored["template_hash"] == labels.get(
                LABEL_POD_TEMPLATE_HASH
            ):
                restored_by = str(restored.get("rollback_id") or "") or None
            status = rs.get("status") or {}
            infos.append(
                RevisionInfo(
                    revision=revision,
                    replicaset=meta.get("name", ""),
                    uid=meta.get("uid", ""),
                    created_at=_parse_time(meta.get("creationTimestamp")) or now,
                    template=strip_hash(template),
                    images=_template_images(template),
                    replaced_at=starts.get(later[0]) if later else None,
                    restored_by=restored_by,
                    replicas=int(status.get("replicas", 0) or 0),
                    available_replicas=int(status.get("availableReplicas", 0) or 0),
                )
            )
        return tuple(sorted(infos, key=lambda info: info.revision, reverse=True))

    # ---------------------------------------------------------- fresh reads

    async def read_deployment(self, target: Target) -> dict[str, Any]:
        """A fresh GET: every write path starts here."""
        return await self._request("GET", self._deployment_path(target))

    async def list_replicasets(self, target: Target) -> list[dict[str, Any]]:
        """ReplicaSets controlled by the Deployment's UID, freshly listed."""
        deployment = await self.read_deployment(target)
        listing = await self._request(
            "GET",
            f"/apis/apps/v1/namespaces/{quote(target.namespace)}/replicasets",
            query=self._selector_query(deployment),
        )
        uid = deployment.get("metadata", {}).get("uid")
        return [rs for rs in listing.get("items") or [] if controller_uid(rs) == uid]

    @staticmethod
    def _selector_query(deployment: Mapping[str, Any]) -> list[tuple[str, str]]:
        match = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if not match:
            return []
        return [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(match.items())))]

    async def _target_pods(self, target: Target) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        deployment = await self.read_deployment(target)
        listing = await self._request(
            "GET",
            f"/api/v1/namespaces/{quote(target.namespace)}/pods",
            query=self._selector_query(deployment),
        )
        return deployment, list(listing.get("items") or [])

    async def pod_images(self, target: Target) -> dict[str, list[str]]:
        """Container name -> distinct image IDs (digests) the target's pods run now."""
        _, pods = await self._target_pods(target)
        images: dict[str, set[str]] = {}
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                image_id = status.get("imageID") or status.get("image")
                if image_id:
                    images.setdefault(status.get("name", "?"), set()).add(str(image_id))
        return {name: sorted(ids) for name, ids in sorted(images.items())}

    async def readiness(self, target: Target) -> ReadinessReport:
        """Ready pods of the current template vs desired; endpoints of selecting Services."""
        deployment, pods = await self._target_pods(target)
        spec = deployment.get("spec", {})
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        template = spec.get("template") or {}
        current_hashes = {
            (rs.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}).get(
                LABEL_POD_TEMPLATE_HASH
            )
            for rs in await self.list_replicasets(target)
            if templates_equal(rs.get("spec", {}).get("template") or {}, template)
        }
        ready = sum(
            1
            for pod in pods
            if _pod_ready(pod)
            and (pod.get("metadata", {}).get("labels") or {}).get(LABEL_POD_TEMPLATE_HASH)
            in current_hashes
        )
        labels = (template.get("metadata") or {}).get("labels") or {}
        ns = quote(target.namespace)
        services = (await self._request("GET", f"/api/v1/namespaces/{ns}/services")).get("items")
        endpoints = {
            ep.get("metadata", {}).get("name"): ep
            for ep in (await self._request("GET", f"/api/v1/namespaces/{ns}/endpoints")).get(
                "items"
            )
            or []
        }
        selecting = []
        for service in services or []:
            selector = (service.get("spec") or {}).get("selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            name = service.get("metadata", {}).get("name", "")
            subsets = (endpoints.get(name) or {}).get("subsets") or []
            addresses = sum(len(subset.get("addresses") or []) for subset in subsets)
            selecting.append(ServiceEndpoints(name, addresses))
        return ReadinessReport(desired=desired, ready=ready, services=tuple(selecting))

    # ----------------------------------------------------------------- writes

    async def patch_deployment(self, target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch; a failed resourceVersion ``test`` raises ConflictError."""
        try:
            return await self._request(
                "PATCH",
                self._deployment_path(target),
                body=ops,
                content_type="application/json-patch+json",
            )
        except InvalidError as exc:
            tested = _tested_resource_version(ops)
            if tested is None:
                raise
            # 422 is any op that cannot apply; it is a conflict when our
            # resourceVersion test is what failed, i.e. the object moved on.
            current = await self.read_deployment(target)
            if current.get("metadata", {}).get("resourceVersion") != tested:
                raise ConflictError(
                    f"{target} changed since resourceVersion {tested}", 409, reason="Conflict"
                ) from exc
            raise

    def check_state_term(self, deployment: Mapping[str, Any], what: str) -> None:
        """Raise StaleTermError when ``deployment`` carries state from a later term than ours.

        Call it on the fresh read a guarded write is based on: the
        resourceVersion precondition then makes the check hold at the write.
        """
        recorded = _recorded_state(deployment)
        if recorded is not None:
            check_state_term(self.fence, recorded.holder, recorded.term, what)

    async def write_state(
        self,
        target: Target,
        state: RollbackState | None,
        *,
        resource_version: str,
        extra: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """Set (or, with None, remove) the rollbackd.io/rollback annotation.

        ``extra`` sets or removes (None) further annotations in the same write.
        Guarded by ``resource_version`` like every write.
        """
        deployment = await self.read_deployment(target)
        if deployment.get("metadata", {}).get("resourceVersion") != resource_version:
            raise ConflictError(
                f"{target} changed since resourceVersion {resource_version}", 409, reason="Conflict"
            )
        self.check_state_term(deployment, f"state write on {target}")
        changes: dict[str, str | None] = {
            ANNOTATION_ROLLBACK: encode_state(state) if state else None
        }
        changes.update(extra or {})
        existing = deployment.get("metadata", {}).get("annotations")
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}
        ]
        if existing is None:
            ops.append(
                {
                    "op": "add",
                    "path": "/metadata/annotations",
                    "value": {k: v for k, v in changes.items() if v is not None},
                }
            )
        else:
            for key, value in changes.items():
                path = f"/metadata/annotations/{_escape_pointer(key)}"
                if value is not None:
                    ops.append({"op": "add", "path": path, "value": value})
                elif key in existing:
                    ops.append({"op": "remove", "path": path})
        return await self.patch_deployment(target, ops)

    async def emit_event(
        self,
        target: Target,
        *,
        reason: str,
        message: str,
        type: str = "Normal",
        uid: str | None = None,
    ) -> None:
        """A core/v1 Event on the Deployment; failures are logged, never raised.

        Transient faults are retried, but only for a request timeout's worth
        of the budget in scope: an Event is worth less than the rollback's
        next step.
        """
        try:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{target.name}.{uuid.uuid4().hex[:16]}",
                    "namespace": target.namespace,
                },
                "involvedObject": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": target.name,
                    "namespace": target.namespace,
                    **({"uid": uid} if uid else {}),
                },
                "reason": reason,
                "message": message[:1024],
                "type": type,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": "rollbackd", "host": self._identity},
                "reportingComponent": "rollbackd",
                "reportingInstance": self._identity,
            }
            budget = (current_budget() or RetryBudget(self._retry_budget)).child(
                self._request_timeout
            )
            with budget_scope(budget):
                await self._request(
                    "POST", f"/api/v1/namespaces/{quote(target.namespace)}/events", body=body
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an Event is best effort, whatever went wrong
            log.warning("could not emit event %s on %s: %r", reason, target, exc)

    # ------------------------------------------------------------- rollouts

    # `timeout` is the contract's name for the rollout deadline (kubectl --timeout).
    async def wait_rollout_complete(
        self,
        target: Target,
        *,
        timeout: float,
        poll_interval: float = 2.0,
    ) -> RolloutOutcome:
        """Wait like ``kubectl rollout status``: woken by the watch, polled as a safety net.

        Cached objects older than the generation seen at the start are ignored,
        so a stale "complete" from before the patch never counts.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = RolloutOutcome(RolloutStatus.PROGRESSING, "not yet observed")
        with self._subscribe(target) as changed:
            try:
                deployment = await self.read_deployment(target)
            except NotFoundError:
                return RolloutOutcome(RolloutStatus.GONE, f"deployment {target} not found")
            min_generation = int(deployment.get("metadata", {}).get("generation", 0))
            while True:
                last = self._strategy.rollout_status(deployment)
                if last.finished:
                    return last
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return RolloutOutcome(
                        RolloutStatus.TIMEOUT, f"timed out after {timeout:g}s: {last.message}"
                    )
                changed.clear()
                woke = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, poll_interval)):
                        await changed.wait()
                        woke = True
                cached = self.cached_deployment(target)
                if (
                    woke
                    and cached is not None
                    and int(cached.get("metadata", {}).get("generation", 0)) >= min_generation
                ):
                    deployment = cached
                    continue
                try:
                    deployment = await self.read_deployment(target)
                except NotFoundError:
                    return RolloutOutcome(RolloutStatus.GONE, f"deployment {target} not found")
                except KubeError as exc:
                    log.warning("rollout status read failed for %s: %s", target, exc)

    async def wait_template_change(
        self,
        target: Target,
        template: Mapping[str, Any],
        *,
        poll_interval: float = 5.0,
    ) -> dict[str, Any]:
        """Return the Deployment once its pod template is no longer ``template``.

        The watch cache wakes us and a fresh GET decides: the cache may still
        hold the object from before rollbackd's own write. Only a newer
        ``metadata.generation`` can carry a spec change, so status churn
        during a rollout costs no request; a poll every ``poll_interval`` is
        the safety net for a broken watch. Raises NotFoundError when the
        Deployment is deleted; other read errors wait for the next poll.
        """
        checked = -1  # the generation whose template was last confirmed unchanged
        with self._subscribe(target) as changed:
            due = True
            while True:
                changed.clear()
                cached = self.cached_deployment(target)
                if cached is None or _generation(cached) > checked:
                    due = True
                if due:
                    due = False
                    try:
                        current = await self.read_deployment(target)
                    except NotFoundError:
                        raise
                    except KubeError as exc:
                        log.warning("template check of %s failed: %s", target, exc)
                    else:
                        if not templates_equal(
                            current.get("spec", {}).get("template") or {}, template
                        ):
                            return current
                        checked = _generation(current)
                try:
                    async with asyncio.timeout(poll_interval):
                        await changed.wait()
                except TimeoutError:
                    due = True

    # -------------------------------------------------------- leader election

    async def run_leader_election(
        self,
        *,
        namespace: str,
        lease_name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
        on_problem: Callable[[LeaseProblem | None], None] | None = None,
    ) -> None:
        """Campaign for the Lease until cancelled; ``on_started`` runs while leading.

        Turns fencing on: from here, this client writes only while the Lease
        is certainly held (see :mod:`rollbackd.fencing` and
        :mod:`rollbackd.lease`). A replica that loses the Lease becomes a
        standby and campaigns again. ``on_problem`` hears about a Lease that
        cannot be used as configured (None once it can).
        """
        self.fence.require_lease()
        # Audit logs (and kubesim's request log) tell the replicas apart.
        self._api.user_agent = f"rollbackd/{_version()} ({identity})"
        self._identity = identity
        self.election = LeaseElector(
            self._lease_request,
            self.fence,
            LeaseSettings(
                namespace=namespace,
                name=lease_name,
                identity=identity,
                lease_duration=max(1, math.ceil(lease_duration)),
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            ),
        )
        await self.election.run(on_started, on_stopped, on_problem=on_problem)

    async def _lease_request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        # No retries inside one attempt: the elector retries every retry
        # period, and a renewal must not outlive the renew deadline waiting.
        with budget_scope(RetryBudget(0.0)):
            return await self._request(method, path, body=body)


def _version() -> str:
    from rollbackd import __version__

    return __version__
