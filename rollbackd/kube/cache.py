"""The watch cache: list+watch of Deployments, ReplicaSets, Pods and Services, in memory.

Reads for decisions come from here (one query per alert would not scale, and
a watch cache answers in microseconds). Objects pass through a per-kind
transform before they are stored (client-go's ``SetTransform``,
:mod:`rollbackd.kube.transforms`): each kind is cut down to the fields
rollbackd reads, pod templates whole and shared when equal
(:mod:`rollbackd.kube.slim`). Pods are the bulk of a cluster: a pod with
nothing wrong is kept as the name of its ReplicaSet (what resolving an
alert's pod needs), any other as the few status fields pod health reads
(:mod:`rollbackd.kube.podrecord`), so pod health judges a fleet-wide rollout
without one API call per Deployment. Readiness and images are read on demand
for one Deployment's pods (see :mod:`rollbackd.kube.adapter`). Lists are
paginated (:mod:`~rollbackd.kube.pager`). ReplicaSets are indexed by their
controller's UID, so the facts of one Deployment never scan the cluster.
Services are kept trimmed to what the blue-green facts read: annotations,
the selector, and the managedFields entries that own the selector (when it
was switched, and by whom). Each kind says whether it is current (listed,
and its watch not failing since), so a reader can refuse a stale view.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from rollbackd.kube.cursor import WatchCursor, expired
from rollbackd.kube.nsindex import NamespaceIndex
from rollbackd.kube.pager import PAGE_SIZE, POD_PAGE_SIZE, ListCall, list_all
from rollbackd.kube.podrecord import PodRecord, pod_json, pod_owner
from rollbackd.kube.rawwatch import RawWatch
from rollbackd.kube.retry import RetryBudget, budget_scope
from rollbackd.kube.slim import share_pod_spec
from rollbackd.kube.transforms import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    ROLLOUTS,
    SERVICES,
    Transform,
    slim_transforms,
)
from rollbackd.kube.watchspec import Key, WatchSpec, object_key, watch_specs
from rollbackd.loopslice import LoopSlices
from rollbackd.model import Target
from rollbackd.revisions import controller_uid
from rollbackd.supervision import cancel_and_wait

log = structlog.get_logger("rollbackd.kube")

JSON = "application/json"
# open_watch(path, accept=..., **lister keywords) -> the raw streaming response
OpenWatch = Callable[..., Awaitable[Any]]


class WatchCache:
    """In-memory Deployments, ReplicaSets, pod records and Services, fed by list+watch."""

    def __init__(
        self,
        list_call: ListCall,
        open_watch: OpenWatch,
        *,
        watch_timeout: int = 300,
        page_size: int = PAGE_SIZE,
        transforms: Mapping[str, Transform] | None = None,
    ) -> None:
        self._list = list_call
        self._open_watch = open_watch
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._transforms = dict(transforms if transforms is not None else slim_transforms())
        # Deployments and ReplicaSets as slim dicts; pods as records (kube/podrecord.py).
        self._objects: dict[str, dict[Key, Any]] = {
            DEPLOYMENTS: {},
            REPLICASETS: {},
            PODS: {},
            SERVICES: {},
            ROLLOUTS: {},
        }
        # A list, not a set: a handful of ReplicaSets per owner (a set costs 3x the bytes).
        self._rs_by_owner: dict[str, list[Key]] = {}
        self._index = NamespaceIndex((SERVICES, DEPLOYMENTS), declaring_kind=SERVICES)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending_sync: set[tuple[str, str | None]] = set()
        # Per loop: listed, and no failure of its watch or list since.
        self._current: dict[tuple[str, str | None], bool] = {}
        self._synced = asyncio.Event()
        self._waiters: dict[Key, set[asyncio.Event]] = {}

    def start(self, namespaces: Sequence[str] | None = None, *, rollouts: bool = False) -> None:
        """Start list+watch loops (all namespaces when None); returns at once."""
        if self._tasks:
            raise RuntimeError("watches already started")
        specs = watch_specs(namespaces, rollouts=rollouts)
        self._pending_sync = {(s.kind, s.namespace) for s in specs}
        self._current = dict.fromkeys(self._pending_sync, False)
        self._synced.clear()
        for spec in specs:
            name = f"kube-watch-{spec.kind}-{spec.namespace or 'all'}"
            self._tasks.append(asyncio.create_task(self._watch_loop(spec), name=name))

    async def stop(self) -> None:
        """Cancel the loops and wait for them to end."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    @property
    def synced(self) -> bool:
        """True once every watched resource has been listed at least once."""
        return self._synced.is_set()

    def current(self, kind: str) -> bool:
        """True while every loop of ``kind`` has listed and its watch has not failed since.

        False from a failed (or hung, see :func:`rollbackd.kube.client.watch_timeout`)
        watch or list until the next list succeeds or a watch reopens from the
        last resourceVersion: meanwhile the cache holds its last view, which
        may be minutes old.
        """
        loops = [current for (k, _), current in self._current.items() if k == kind]
        return bool(loops) and all(loops)

    async def wait_synced(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    # ----------------------------------------------------------------- loops

    async def _watch_loop(self, spec: WatchSpec) -> None:
        """List, then watch from the list's resourceVersion; never returns until cancelled."""
        # The loop backs off on its own; a per-request retry would only delay that.
        with budget_scope(RetryBudget(0.0)):
            await self._list_and_watch(spec)

    async def _list_and_watch(self, spec: WatchSpec) -> None:
        cursor = WatchCursor()
        while True:
            try:
                if cursor.resource_version is None:
                    cursor.resource_version = await self._relist(spec)
                await self._watch(spec, cursor)
                # The server ended the watch (timeout or dropped stream): resume.
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._current[(spec.kind, spec.namespace)] = False
                if expired(exc):
                    cursor.resource_version = None
                    if isinstance(exc, ApiException):
                        log.info("watch_expired_relisting", kind=spec.kind, status=410)
                        continue
                reason = exc.reason if isinstance(exc, ApiException) else repr(exc)
                log.warning("watch_failed", kind=spec.kind, error=reason)
                await cursor.back_off()

    async def _relist(self, spec: WatchSpec) -> str:
        """List in pages, each item transformed as its page arrives; the list's resourceVersion."""

        def keyed(obj: dict[str, Any]) -> tuple[Key, Any]:
            return object_key(obj, shared_name=spec.kind != PODS), self._transform(spec.kind, obj)

        page_size = min(self._page_size, POD_PAGE_SIZE) if spec.kind == PODS else self._page_size
        items, resource_version = await list_all(
            self._list, spec.path, JSON, keyed, page_size=page_size
        )
        self._replace(spec.kind, spec.namespace, items)
        self._pending_sync.discard((spec.kind, spec.namespace))
        self._current[(spec.kind, spec.namespace)] = True
        if not self._pending_sync:
            self._synced.set()
        return resource_version

    async def _watch(self, spec: WatchSpec, cursor: WatchCursor) -> None:
        """Apply events until the server ends the stream, moving ``cursor`` along."""

        async def open_stream(**params: Any) -> Any:
            """One watch request; Watch passes the keywords a typed lister takes."""
            response = await self._open_watch(spec.path, accept=JSON, **params)
            # Resumed from the last resourceVersion seen: nothing was missed.
            self._current[(spec.kind, spec.namespace)] = True
            return response

        # Events stay the decoded dicts (no model round trip).
        async with RawWatch() as stream:
            async for event in stream.stream(
                open_stream,
                resource_version=cursor.resource_version,
                timeout_seconds=self._watch_timeout,
                allow_watch_bookmarks=True,
            ):
                obj = event["raw_object"]
                cursor.advance(obj.get("metadata", {}).get("resourceVersion"))
                self._apply_event(spec.kind, event["type"], obj)

    # ----------------------------------------------------------------- store

    def _replace(self, kind: str, namespace: str | None, items: list[tuple[Key, Any]]) -> None:
        """Swap in a fresh list of (already transformed) items for ``kind`` in ``namespace``."""
        store = self._objects[kind]
        fresh = {key for key, _ in items}
        for key in [
            k for k in store if (namespace is None or k[0] == namespace) and k not in fresh
        ]:
            self._store(kind, key, None)
        for key, item in items:
            self._store(kind, key, item)
        if kind == DEPLOYMENTS:
            for key in list(self._waiters):
                self._notify(key)

    def _apply_event(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "BOOKMARK":
            return
        key = object_key(obj, shared_name=kind != PODS)
        if event_type == "DELETED":
            self._put(kind, key, None)
        elif event_type in ("ADDED", "MODIFIED"):
            self._put(kind, key, obj)
        if kind == DEPLOYMENTS:
            self._notify(key)

    def _put(self, kind: str, key: Key, obj: dict[str, Any] | None) -> None:
        """Transform and store, or (None) drop, one object from a watch event."""
        self._store(kind, key, None if obj is None else self._transform(kind, obj))

    def _transform(self, kind: str, obj: dict[str, Any]) -> Any:
        return self._transforms.get(kind, _same)(obj)

    def _store(self, kind: str, key: Key, obj: Any) -> None:
        """Store or (None) drop one object, keeping the ReplicaSet owner index in step."""
        store = self._objects[kind]
        if obj is not None and kind in (DEPLOYMENTS, REPLICASETS):
            share_pod_spec(obj, self._family(kind, key, obj))
        if kind == REPLICASETS:
            self._reindex_owner(key, store.get(key), obj)
        self._index.update(kind, key, obj)
        if obj is None:
            store.pop(key, None)
        else:
            store[key] = obj

    def _family(self, kind: str, key: Key, obj: Mapping[str, Any]) -> list[Any]:
        """The cached objects whose pod spec ``obj``'s may equal: its Deployment, or its ReplicaSets."""
        if kind == DEPLOYMENTS:
            uid = obj.get("metadata", {}).get("uid", "")
            return self.owned_replicasets(uid, key[0]) if uid else []
        owner = _controller_name(obj, "Deployment")
        return [self._objects[DEPLOYMENTS].get((key[0], owner))] if owner else []

    def _reindex_owner(
        self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        old_owner = controller_uid(old or {})
        owned = self._rs_by_owner.get(old_owner or "")
        if owned is not None and key in owned:
            owned.remove(key)
            if not owned:
                del self._rs_by_owner[old_owner or ""]
        new_owner = controller_uid(new or {})
        if new_owner:
            owned = self._rs_by_owner.setdefault(new_owner, [])
            if key not in owned:
                owned.append(key)

    # ----------------------------------------------------------- subscribers

    def _notify(self, key: Key) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, target: Target) -> Iterator[asyncio.Event]:
        """An event set whenever ``target``'s Deployment changes in the cache."""
        key = (target.namespace, target.name)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            self._waiters[key].discard(event)
            if not self._waiters[key]:
                del self._waiters[key]

    # ----------------------------------------------------------------- reads

    def targets(self) -> list[Target]:
        return sorted(Target(ns, name) for ns, name in self._objects[DEPLOYMENTS])

    def rollout_targets(self) -> list[Target]:
        return sorted(Target(ns, name) for ns, name in self._objects[ROLLOUTS])

    def deployment_items(self) -> list[tuple[Key, dict[str, Any]]]:
        """Every cached Deployment by (namespace, name), unsorted: a cheap scan of the fleet."""
        return list(self._objects[DEPLOYMENTS].items())

    def deployment(self, target: Target) -> dict[str, Any] | None:
        return self._objects[DEPLOYMENTS].get((target.namespace, target.name))

    def rollout(self, target: Target) -> dict[str, Any] | None:
        """The cached Argo Rollout of that name (None: none, or Rollouts not served)."""
        return self._objects[ROLLOUTS].get((target.namespace, target.name))

    def services(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's cached Services (trimmed, see :func:`trim_service`)."""
        return self._in_namespace(SERVICES, namespace)

    def declaring_services(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Services that declare ``rollbackd.io/strategy`` (indexed)."""
        store = self._objects[SERVICES]
        return [store[key] for key in self._index.declaring(namespace) if key in store]

    def namespace_deployments(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's cached Deployments (indexed: no scan of the cluster)."""
        return self._in_namespace(DEPLOYMENTS, namespace)

    def _in_namespace(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        store = self._objects[kind]
        return [store[key] for key in self._index.keys(kind, namespace) if key in store]

    def owned_replicasets(self, uid: str, namespace: str) -> list[dict[str, Any]]:
        """Cached ReplicaSets controlled by ``uid`` (indexed: no scan of the cluster)."""
        store = self._objects[REPLICASETS]
        return [
            store[key]
            for key in self._rs_by_owner.get(uid, ())
            if key[0] == namespace and key in store
        ]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """What the cache knows of a pod, as metadata (name, namespace, controller), or None."""
        record = self._objects[PODS].get((namespace, name))
        if record is None:
            return None
        owner = pod_owner(record)
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if owner:
            meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "controller": True}]
        return {"metadata": meta}

    def resolve_pod(self, namespace: str, pod: str) -> Target | None:
        """Pod -> ReplicaSet -> Deployment through controller ownerReferences."""
        record = self._objects[PODS].get((namespace, pod))
        rs_name = pod_owner(record) if record is not None else ""
        if not rs_name:
            return None
        rs = self._objects[REPLICASETS].get((namespace, rs_name))
        if rs is None:
            return None
        deployment = _controller_name(rs, "Deployment")
        return Target(namespace, deployment) if deployment else None

    async def replicaset_pods(self, wanted: set[Key]) -> dict[Key, list[dict[str, Any]]]:
        """The cached pods of each (namespace, ReplicaSet name) in ``wanted``, as pod JSON.

        One pass over the cached pods (an index by ReplicaSet would cost
        memory for every pod of the fleet, all the time), yielding to the
        event loop by the clock.
        """
        found: dict[Key, list[dict[str, Any]]] = {key: [] for key in wanted}
        if not found:
            return found  # no recent rollout: a quiet fleet costs no scan
        records: list[tuple[Key, PodRecord]] = list(self._objects[PODS].items())
        slices = LoopSlices()
        for (namespace, name), record in records:
            await slices.pause_if_due()
            pods = found.get((namespace, pod_owner(record)))
            if pods is not None:
                pods.append(pod_json(name, record))
        return found


def _same(obj: dict[str, Any]) -> Any:
    return obj


def _controller_name(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None
