"""The controller manager of kubesim: the controllers of a real cluster, over a ``Store``.

rollbackd's decisions hinge on what the deployment controller writes, and
kubectl and kubernetes-asyncio must see the same answers they would see from
a cluster; the controllers that do it live in ``controllers/``, one module
per concern as upstream (deployment, rolling, recreate, progress, replicaset,
endpoints, the kubelet, the event recorder). This module runs them.

Work is event driven and proportional to change: the store's change stream
feeds a de-duplicating work queue, owner indexes map pods to ReplicaSets to
Deployments, and timers (pod readiness, minReadySeconds, progress deadlines)
re-enqueue single objects. Nothing ever walks the whole cluster after start.
Pod deletion is immediate (no graceful termination).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from .controllers.context import Context
from .controllers.custom import WATCHED, CustomResources
from .controllers.deployment import DeploymentController
from .controllers.endpoints import EndpointsController
from .controllers.kubelet import Kubelet
from .controllers.objects import (
    DEPLOYMENTS,
    ENDPOINTS,
    PODS,
    REPLICASETS,
    SERVICES,
    Item,
    controller_ref,
    selects,
)
from .controllers.pods import is_pod_ready
from .controllers.replicaset import ReplicaSetController
from .controllers.workqueue import Requeue, WorkQueue
from .errors import ApiError
from .store import Obj, Store

log = logging.getLogger(__name__)

# A sync that asked to run again, or lost a race with a client write, runs after this.
RETRY_SECONDS = 1.0


class Controller:
    """Deployment + ReplicaSet + Endpoints controllers, the kubelet and an event recorder."""

    def __init__(
        self,
        store: Store,
        *,
        pod_ready_delay: float = 0.5,
        resync: float = 0.2,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._resync = resync
        self._ctx = Context(store, clock=clock or store.clock, pod_ready_delay=pod_ready_delay)
        kubelet = Kubelet(self._ctx)
        self._syncs: dict[str, Callable[[str, str], None]] = {
            "deployment": DeploymentController(self._ctx).sync,
            "replicaset": ReplicaSetController(self._ctx, kubelet).sync,
            "pod-ready": kubelet.make_ready,
            "pod-crash": kubelet.crashes.crash,
            "pod-restart": kubelet.crashes.restart,
            "endpoints": EndpointsController(self._ctx).sync,
        }
        # Argo Rollouts and HTTPRoute status (controllers/custom.py).
        self._custom = CustomResources(self._ctx)
        self._syncs.update(self._custom.syncs)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.errors = 0  # syncs that raised unexpectedly; tests assert it stays 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Index what exists, subscribe to changes, start the worker and the timer loop."""
        if self._tasks:
            raise RuntimeError("controller already started")
        self._ctx.queue = WorkQueue()
        self._unsubscribe = self._store.subscribe(self._on_change, copy=False)
        for key in (SERVICES, REPLICASETS, PODS, DEPLOYMENTS, *WATCHED):
            for obj in self._store.list(key, copy=False):
                self._on_change("ADDED", key, obj)
        self._tasks = [
            asyncio.create_task(self._work(), name="kubesim-controller-worker"),
            asyncio.create_task(self._tick(), name="kubesim-controller-timers"),
        ]

    async def stop(self) -> None:
        """Unsubscribe and cancel the background tasks, waiting for them to finish."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no reconcile is queued or running and no timer is due (for tests)."""
        queue = self._ctx.queue
        if queue is None or not self._tasks:
            raise RuntimeError("controller not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"controller did not settle within {timeout}s")
            await asyncio.wait_for(queue.idle.wait(), remaining)
            # Let the worker finish the item it may have just taken.
            await asyncio.sleep(0)
            if self._fire_due_timers() == 0 and queue.idle.is_set() and self._ctx.current is None:
                return

    # ---------------------------------------------------- change routing

    def _fire_due_timers(self) -> int:
        fired = self._ctx.timers.pop_due(self._ctx.clock())
        for item in fired:
            self._ctx.enqueue(item)
        return len(fired)

    def _on_change(self, event_type: str, key: str, obj: Obj) -> None:
        """Route one committed change to the syncs it affects; never does work inline."""
        self._custom.on_change(event_type, key, obj)
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        name = meta["name"]
        deleted = event_type == "DELETED"
        if key == DEPLOYMENTS:
            # Its own status writes re-enqueue it too, as upstream: the next pass sees the
            # completed status and cleans up old ReplicaSets.
            if not deleted:
                self._ctx.enqueue(("deployment", namespace, name))
        elif key == REPLICASETS:
            self._route_replicaset(namespace, name, obj, deleted)
        elif key == PODS:
            self._route_pod(namespace, name, obj, deleted)
        elif key == SERVICES:
            services = self._ctx.index.services.setdefault(namespace, {})
            if deleted:
                services.pop(name, None)
            else:
                services[name] = dict((obj.get("spec") or {}).get("selector") or {})
            self._ctx.enqueue(("endpoints", namespace, name))
        elif key == ENDPOINTS and deleted and name in self._ctx.index.services.get(namespace, {}):
            self._ctx.enqueue(("endpoints", namespace, name))

    def _route_replicaset(self, namespace: str, name: str, obj: Obj, deleted: bool) -> None:
        index, enqueue = self._ctx.index, self._ctx.enqueue
        ref = controller_ref(obj)
        owner = ref["name"] if ref and ref.get("kind") == "Deployment" and not deleted else None
        previous = _reown(index.rs_owner, index.rs_by_deployment, (namespace, name), owner)
        if previous is not None and previous != owner:
            enqueue(("deployment", namespace, previous))
        if owner is not None:
            enqueue(("deployment", namespace, owner))
        if not deleted and self._ctx.current != ("replicaset", namespace, name):
            enqueue(("replicaset", namespace, name))

    def _route_pod(self, namespace: str, name: str, obj: Obj, deleted: bool) -> None:
        index, enqueue = self._ctx.index, self._ctx.enqueue
        ref = controller_ref(obj)
        owner = ref["name"] if ref and ref.get("kind") == "ReplicaSet" and not deleted else None
        previous = _reown(index.pod_owner, index.pods_by_rs, (namespace, name), owner)
        for rs_name in {previous, owner}:
            # The ReplicaSet's own sync already accounts for the pods it creates or deletes.
            if rs_name is not None and self._ctx.current != ("replicaset", namespace, rs_name):
                enqueue(("replicaset", namespace, rs_name))
        # Endpoints of every Service whose selector matched before or matches now.
        labels_in_ns = index.pod_labels.setdefault(namespace, {})
        old_labels = labels_in_ns.pop(name, None)
        new_labels = None if deleted else dict(obj["metadata"].get("labels") or {})
        if new_labels is not None:
            labels_in_ns[name] = new_labels
        elif not labels_in_ns:
            del index.pod_labels[namespace]
        for service, selector in index.services.get(namespace, {}).items():
            if selector and any(
                labels is not None and selects(selector, labels)
                for labels in (old_labels, new_labels)
            ):
                enqueue(("endpoints", namespace, service))

    # ------------------------------------------------------- worker loops

    async def _work(self) -> None:
        queue = self._ctx.queue
        assert queue is not None
        while True:
            item = await queue.get()
            self._ctx.current = item
            try:
                self._process(item)
            except Requeue:
                self._ctx.schedule_in(RETRY_SECONDS, item)
            except ApiError as error:
                # A concurrent client write or deletion: the next event or retry resolves it.
                log.debug("kubesim controller: %s %s/%s: %s", *item, error.message)
                self._ctx.schedule_in(RETRY_SECONDS, item)
            except Exception:
                self.errors += 1
                log.exception("kubesim controller: sync of %s %s/%s failed", *item)
            finally:
                self._ctx.current = None
            # Yield so the API server stays responsive while a large batch drains.
            await asyncio.sleep(0)

    async def _tick(self) -> None:
        while True:
            self._fire_due_timers()
            delay = self._resync
            next_due = self._ctx.timers.next_due()
            if next_due is not None:
                until_next = (next_due - self._ctx.clock()).total_seconds()
                delay = min(delay, max(until_next, 0.005))
            await asyncio.sleep(delay)

    def _process(self, item: Item) -> None:
        kind, namespace, name = item
        sync = self._syncs.get(kind)
        if sync is not None:
            sync(namespace, name)


def _reown(
    owners: dict[tuple[str, str], str],
    members: dict[tuple[str, str], set[str]],
    key: tuple[str, str],
    owner: str | None,
) -> str | None:
    """Index ``key`` (namespace, name) under ``owner`` (None: no owner); the previous owner."""
    namespace, name = key
    previous = owners.pop(key, None)
    if previous is not None and previous != owner:
        siblings = members.get((namespace, previous))
        if siblings is not None:
            siblings.discard(name)
            if not siblings:
                del members[(namespace, previous)]
    if owner is not None:
        owners[key] = owner
        members.setdefault((namespace, owner), set()).add(name)
    return previous


# bench/_timeline.py reads pod readiness from here.
__all__ = ["Controller", "is_pod_ready"]
