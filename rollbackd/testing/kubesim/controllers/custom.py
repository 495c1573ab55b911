"""The controllers of kubesim's custom resources, and which changes wake them.

* ``rollout``: Argo Rollouts (``rollouts.py``), woken by its Rollout and by
  the ReplicaSets it owns (their status follows their pods);
* ``httproute``: the gateway controller's part of HTTPRoute status
  (``..httproutes``), woken by the route and by a Service it names coming or
  going. The traffic split needs no controller: the workload metrics compute
  it at each scrape.

The controller manager (``..controller``) hands every change to
``CustomResources.on_change`` and runs the syncs it lists.
"""

from __future__ import annotations

from collections.abc import Callable

from ..httproutes import HTTPROUTES, names_service, parent_statuses
from ..store import Obj, clone
from .context import Context
from .objects import REPLICASETS, SERVICES, controller_ref
from .rollouts import ROLLOUTS, RolloutController

WATCHED = (ROLLOUTS, HTTPROUTES)


class RouteStatusController:
    """Writes ``status.parents`` of an HTTPRoute when it changes."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def sync(self, namespace: str, name: str) -> None:
        stored = self._ctx.store.peek(HTTPROUTES, namespace, name)
        if stored is None:
            return
        parents = parent_statuses(stored, self._ctx.store, self._ctx.now())
        if (stored.get("status") or {}).get("parents", []) == parents:
            return
        route = clone(stored)
        route["status"] = {"parents": parents}
        self._ctx.save(HTTPROUTES, route, status=True)


class CustomResources:
    """Routes store changes to the custom resources' syncs."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        # (namespace, rollout) -> names of the ReplicaSets it controls, so a sync
        # reads its own ReplicaSets without listing the namespace.
        self._owned: dict[tuple[str, str], set[str]] = {}
        self._owner: dict[tuple[str, str], str] = {}
        self.syncs: dict[str, Callable[[str, str], None]] = {
            "rollout": RolloutController(ctx, self.replica_sets_of).sync,
            "httproute": RouteStatusController(ctx).sync,
        }

    def replica_sets_of(self, namespace: str, rollout: str) -> list[str]:
        return sorted(self._owned.get((namespace, rollout), ()))

    def _index_replica_set(self, namespace: str, name: str, owner: str | None) -> str | None:
        """Index a ReplicaSet under its Rollout (None: none); the Rollout it had before."""
        previous = self._owner.pop((namespace, name), None)
        if previous is not None:
            siblings = self._owned.get((namespace, previous), set())
            siblings.discard(name)
            if not siblings:
                self._owned.pop((namespace, previous), None)
        if owner is not None:
            self._owner[(namespace, name)] = owner
            self._owned.setdefault((namespace, owner), set()).add(name)
        return previous

    def on_change(self, event_type: str, key: str, obj: Obj) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        if key == ROLLOUTS and event_type != "DELETED":
            self._ctx.enqueue(("rollout", namespace, meta["name"]))
        elif key == HTTPROUTES and event_type != "DELETED":
            self._ctx.enqueue(("httproute", namespace, meta["name"]))
        elif key == REPLICASETS:
            ref = controller_ref(obj)
            is_rollout = ref is not None and ref.get("kind") == "Rollout"
            owner = str(ref.get("name")) if ref and is_rollout and event_type != "DELETED" else None
            previous = self._index_replica_set(namespace, meta["name"], owner)
            for rollout in {previous, owner} - {None}:
                self._ctx.enqueue(("rollout", namespace, str(rollout)))
        elif key == SERVICES and event_type in ("ADDED", "DELETED"):
            for route in self._ctx.store.list(HTTPROUTES, namespace, copy=False):
                if names_service(route, meta["name"]):
                    self._ctx.enqueue(("httproute", namespace, route["metadata"]["name"]))


__all__ = ["WATCHED", "CustomResources", "RouteStatusController"]
