"""PodDisruptionBudgets as a cluster enforces them: the disruption controller and the Eviction API.

A node drain evicts pods through ``POST .../pods/NAME/eviction``; the API
server refuses (429) an eviction the pod's budget does not allow. Whether a
chart's PDB lets a drain through is plain arithmetic over its pods, the same
the real disruption controller does and writes into the PDB's status
(``kubectl get pdb`` shows it as ALLOWED DISRUPTIONS):

- expected pods: for an integer ``minAvailable`` the selected pods; else the
  scale of their controllers (a Deployment's replicas);
- desired healthy: ``minAvailable`` (a percentage rounded up), or expected
  minus ``maxUnavailable`` (a percentage rounded up);
- disruptions allowed: ready pods (not being deleted) minus desired healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .controllers.objects import controller_ref
from .controllers.pods import is_pod_ready
from .errors import ApiError, bad_request, not_found
from .selectors import selector_from_label_selector_object
from .store import Obj, Store, clone

PDBS = "policy/v1/poddisruptionbudgets"
PODS = "v1/pods"
REPLICASETS = "apps/v1/replicasets"
DEPLOYMENTS = "apps/v1/deployments"
_WATCHED = frozenset({PDBS, PODS, REPLICASETS, DEPLOYMENTS})

__all__ = ["DisruptionController", "budget_status", "evict"]


def _ready(pod: Mapping[str, Any]) -> bool:
    """Ready and not being deleted: the pods a budget counts as healthy."""
    return not pod.get("metadata", {}).get("deletionTimestamp") and is_pod_ready(pod)


def _scaled(value: Any, total: int) -> int:
    """An IntOrString against ``total``; percentages round up, as upstream."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def _expected_from_controllers(store: Store, namespace: str, pods: Sequence[Obj]) -> int:
    """The desired scale of the pods' controllers, each counted once."""
    scales: dict[tuple[str, str], int] = {}
    for pod in pods:
        ref = controller_ref(pod)
        if ref is None:
            continue
        owner: Obj | None = None
        key = (str(ref.get("kind")), str(ref.get("name")))
        if ref.get("kind") == "ReplicaSet":
            rs = store.peek(REPLICASETS, namespace, str(ref.get("name")))
            rs_ref = controller_ref(rs) if rs is not None else None
            if rs_ref is not None and rs_ref.get("kind") == "Deployment":
                key = ("Deployment", str(rs_ref.get("name")))
                owner = store.peek(DEPLOYMENTS, namespace, key[1])
            else:
                owner = rs
        if owner is not None:
            scales[key] = int((owner.get("spec") or {}).get("replicas", 1) or 0)
    return sum(scales.values()) if scales else len(pods)


def selected_pods(store: Store, pdb: Mapping[str, Any]) -> list[Obj]:
    namespace = pdb["metadata"].get("namespace") or ""
    selector = selector_from_label_selector_object((pdb.get("spec") or {}).get("selector"))
    return [
        pod
        for pod in store.list(PODS, namespace, copy=False)
        if selector.matches(pod["metadata"].get("labels") or {})
    ]


def budget_status(store: Store, pdb: Mapping[str, Any]) -> dict[str, Any]:
    """The status the disruption controller writes for ``pdb`` now."""
    spec = pdb.get("spec") or {}
    namespace = pdb["metadata"].get("namespace") or ""
    pods = selected_pods(store, pdb)
    healthy = sum(1 for pod in pods if _ready(pod))
    min_available = spec.get("minAvailable")
    if min_available is not None and not isinstance(min_available, str):
        expected = len(pods)
        desired = int(min_available)
    else:
        expected = _expected_from_controllers(store, namespace, pods)
        if min_available is not None:
            desired = _scaled(min_available, expected)
        else:
            desired = max(0, expected - _scaled(spec.get("maxUnavailable", 0), expected))
    allowed = max(0, healthy - desired)
    previous = {
        c.get("type"): c for c in (pdb.get("status") or {}).get("conditions") or [] if c
    }.get("DisruptionAllowed")
    status_value = "True" if allowed > 0 else "False"
    condition = {
        "type": "DisruptionAllowed",
        "status": status_value,
        "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
        "message": "",
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "lastTransitionTime": (
            previous["lastTransitionTime"]
            if previous and previous.get("status") == status_value
            else _now(store)
        ),
    }
    return {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "disruptedPods": (pdb.get("status") or {}).get("disruptedPods") or {},
        "conditions": [condition],
    }


def _now(store: Store) -> str:
    return store.clock().strftime("%Y-%m-%dT%H:%M:%SZ")


def evict(store: Store, namespace: str, name: str, body: Any) -> Obj:
    """``POST pods/NAME/eviction``: delete the pod unless a budget forbids it (429)."""
    if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
        raise bad_request("the request body must be an Eviction")
    pod = store.peek(PODS, namespace, name)
    if pod is None:
        raise not_found("pods", name)
    labels = pod["metadata"].get("labels") or {}
    budgets = [
        pdb
        for pdb in store.list(PDBS, namespace, copy=False)
        if selector_from_label_selector_object((pdb.get("spec") or {}).get("selector")).matches(
            labels
        )
    ]
    if len(budgets) > 1:
        raise ApiError(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support.",
        )
    for pdb in budgets:
        status = budget_status(store, pdb)
        # An unready pod may go while the budget holds without it (IfHealthyBudget).
        unready_ok = not _ready(pod) and status["currentHealthy"] >= status["desiredHealthy"]
        if status["disruptionsAllowed"] <= 0 and not unready_ok:
            message = (
                f"The disruption budget {pdb['metadata']['name']} needs "
                f"{status['desiredHealthy']} healthy pods and has "
                f"{status['currentHealthy']} currently"
            )
            raise ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                details={"causes": [{"reason": "DisruptionBudget", "message": message}]},
            )
    store.delete(PODS, namespace, name)
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }


class DisruptionController:
    """Keeps every PDB's status in step with its pods (the kube-controller-manager loop)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_change, copy=False)
        for pdb in self._store.list(PDBS, copy=False):
            self._mark(pdb["metadata"].get("namespace") or "")
        self._task = asyncio.create_task(self._run(), name="kubesim-disruption-controller")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_change(self, event_type: str, key: str, obj: Obj) -> None:
        if key in _WATCHED:
            self._mark(obj["metadata"].get("namespace") or "")

    def _mark(self, namespace: str) -> None:
        self._dirty.add(namespace)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for namespace in dirty:
                self.sync(namespace)
            await asyncio.sleep(0)

    def sync(self, namespace: str) -> None:
        for pdb in self._store.list(PDBS, namespace):
            status = budget_status(self._store, pdb)
            if status == pdb.get("status"):
                continue
            updated = clone(pdb)
            updated["status"] = status
            with contextlib.suppress(ApiError):  # changed meanwhile: the next event redoes it
                self._store.update(PDBS, updated, subresource="status")
