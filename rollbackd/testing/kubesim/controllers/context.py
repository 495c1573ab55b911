"""What every controller shares: the store, the clock, the queue, owner indexes, events.

The owner indexes are kept from the store's change stream by the controller
manager (``..controller``), so a sync reads the ReplicaSets of a Deployment
or the pods of a ReplicaSet without listing the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..store import Obj, Store, rfc3339
from .events import EventRecorder
from .objects import Item
from .workqueue import Timers, WorkQueue

NamespacedName = tuple[str, str]


@dataclass
class OwnerIndex:
    """Who owns whom, and the label sets Services select on, by namespace."""

    rs_by_deployment: dict[NamespacedName, set[str]] = field(default_factory=dict)
    rs_owner: dict[NamespacedName, str] = field(default_factory=dict)
    pods_by_rs: dict[NamespacedName, set[str]] = field(default_factory=dict)
    pod_owner: dict[NamespacedName, str] = field(default_factory=dict)
    pod_labels: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    services: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


class Context:
    """The shared state and the writes every controller makes the same way."""

    def __init__(
        self, store: Store, *, clock: Callable[[], datetime], pod_ready_delay: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.pod_ready_delay = pod_ready_delay
        self.index = OwnerIndex()
        self.timers = Timers()
        self.queue: WorkQueue | None = None
        self.current: Item | None = None  # the item a worker is syncing now
        self.events = EventRecorder(store, clock)

    def now(self) -> str:
        return rfc3339(self.clock())

    def enqueue(self, item: Item) -> None:
        if self.queue is not None:
            self.queue.add(item)

    def schedule(self, due: datetime, item: Item) -> None:
        self.timers.schedule(due, item)

    def schedule_in(self, seconds: float, item: Item) -> None:
        self.timers.schedule(self.clock() + timedelta(seconds=seconds), item)

    def save(self, key: str, obj: Obj, *, status: bool = False) -> None:
        """Write ``obj`` and carry the new resourceVersion back into it."""
        saved = self.store.update(key, obj, subresource="status" if status else None)
        obj["metadata"]["resourceVersion"] = saved["metadata"]["resourceVersion"]
        if "generation" in saved["metadata"]:
            obj["metadata"]["generation"] = saved["metadata"]["generation"]

    def record_event(
        self, obj: Mapping[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        self.events.record(obj, event_type, reason, message)
