"""core/v1 Events as client-go's recorder writes them: repeats aggregate into a count."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..store import Store, rfc3339
from .objects import EVENTS

COMPONENT = "deployment-controller"
# The upstream event correlator keeps this many distinct events for aggregation.
EVENT_CACHE_SIZE = 4096


class EventRecorder:
    """Records Events on objects; the same (object, type, reason, message) counts up."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._events: OrderedDict[tuple[str, str, str, str], str] = OrderedDict()
        self._event_seq = itertools.count()

    def record(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """An aggregated core/v1 Event on ``obj``, as client-go's recorder writes it."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        now = rfc3339(self._clock())
        cache_key = (meta["uid"], event_type, reason, message)
        existing_name = self._events.get(cache_key)
        if existing_name is not None:
            event = self._store.try_get(EVENTS, namespace, existing_name)
            if event is not None:
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = now
                self._store.update(EVENTS, event, check_resource_version=False)
                self._events.move_to_end(cache_key)
                return
        stamp = int(self._clock().timestamp() * 1e9) + next(self._event_seq)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{stamp:x}", "namespace": namespace},
            "involvedObject": {
                "kind": obj.get("kind"),
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj.get("apiVersion"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": COMPONENT,
            "reportingInstance": "",
        }
        created = self._store.create(EVENTS, event)
        self._events[cache_key] = created["metadata"]["name"]
        if len(self._events) > EVENT_CACHE_SIZE:
            self._events.popitem(last=False)
