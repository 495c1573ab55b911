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
        self.syncs: dict[str, Callable[[str, str], None]] = {
            "rollout": RolloutController(ctx).sync,
            "httproute": RouteStatusController(ctx).sync,
        }

    def on_change(self, event_type: str, key: str, obj: Obj) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        if key == ROLLOUTS and event_type != "DELETED":
            self._ctx.enqueue(("rollout", namespace, meta["name"]))
        elif key == HTTPROUTES and event_type != "DELETED":
            self._ctx.enqueue(("httproute", namespace, meta["name"]))
        elif key == REPLICASETS:
            ref = controller_ref(obj)
            if ref is not None and ref.get("kind") == "Rollout":
                self._ctx.enqueue(("rollout", namespace, str(ref.get("name"))))
        elif key == SERVICES and event_type in ("ADDED", "DELETED"):
            for route in self._ctx.store.list(HTTPROUTES, namespace, copy=False):
                if names_service(route, meta["name"]):
                    self._ctx.enqueue(("httproute", namespace, route["metadata"]["name"]))


__all__ = ["WATCHED", "CustomResources", "RouteStatusController"]
