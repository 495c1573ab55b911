"""Watch fan-out: open watch streams, fed synchronously by the store.

Each change is matched only against the watchers of its resource and
namespace and serialised once for all plain-JSON watchers, so a change costs
O(interested watchers), never O(objects).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from .resources import ResourceType
from .selectors import FieldMatcher, LabelSelector
from .store import Obj, Store

WATCH_BACKLOG_LIMIT = 50_000  # a watcher this far behind is cut off, as the real server does


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Watcher:
    """One open watch stream: its filter and its queue of encoded lines."""

    def __init__(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldMatcher | None,
        path: str,
        encoder: Callable[[str, Obj], bytes] | None = None,
        *,
        share_key: str | None = "json",
    ) -> None:
        self.rtype = rtype
        # None: the plain JSON encoding.
        self.encoder = encoder
        # Watchers with the same key get the same bytes for one change, encoded
        # once; None: this watcher's encoding is its own (a Table's header state).
        self.share_key = share_key if encoder is None or share_key != "json" else None
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.path = path
        self.lines: deque[bytes] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False

    def wants(self, obj: Obj) -> bool:
        if self.labels is not None and not self.labels.matches(obj["metadata"].get("labels")):
            return False
        return self.fields is None or self.fields(obj)

    def event_type(self, event_type: str, obj: Obj, previous: Obj | None) -> str | None:
        """What this watcher sees of a change, or None.

        As in the real server, an object that starts matching the selectors
        arrives as ADDED and one that stops matching leaves as DELETED.
        """
        now = self.wants(obj)
        if event_type != "MODIFIED" or previous is None:
            return event_type if now else None
        before = self.wants(previous)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def encode(self, event_type: str, obj: Obj) -> bytes:
        return (self.encoder or event_line)(event_type, obj)

    def offer(self, line: bytes) -> None:
        if self.closed:
            return
        self.lines.append(line)
        if len(self.lines) > WATCH_BACKLOG_LIMIT:
            self.close()  # the client re-lists, as after a real server drops a slow watch
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


def event_line(event_type: str, obj: Obj) -> bytes:
    return _dumps({"type": event_type, "object": obj}) + b"\n"


class WatchHub:
    """Fans store changes out to open watches, indexed by resource key and namespace.

    A change costs O(watchers of that resource in that namespace), never
    O(objects) or O(all watchers), and is serialised once however many
    watchers receive it.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._watchers: dict[str, dict[str | None, set[Watcher]]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._store.subscribe(self._on_change, copy=False)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.drop(None)

    def add(self, watcher: Watcher) -> None:
        self._watchers.setdefault(watcher.rtype.key, {}).setdefault(watcher.namespace, set()).add(
            watcher
        )

    def remove(self, watcher: Watcher) -> None:
        by_namespace = self._watchers.get(watcher.rtype.key, {})
        watchers = by_namespace.get(watcher.namespace)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del by_namespace[watcher.namespace]

    def drop(self, pattern: re.Pattern[str] | None) -> int:
        """Close open watches whose URL path matches ``pattern`` (None: all)."""
        dropped = 0
        for by_namespace in self._watchers.values():
            for watchers in by_namespace.values():
                for watcher in list(watchers):
                    if not watcher.closed and (pattern is None or pattern.search(watcher.path)):
                        watcher.close()
                        dropped += 1
        return dropped

    def _on_change(self, event_type: str, key: str, obj: Obj) -> None:
        by_namespace = self._watchers.get(key)
        if not by_namespace:
            return
        namespace = obj["metadata"].get("namespace")
        event = self._store.last_event
        previous = event.previous if event is not None and event.obj is obj else None
        shared: dict[tuple[str, str], bytes] = {}
        for group in (by_namespace.get(namespace), by_namespace.get(None) if namespace else None):
            for watcher in group or ():
                seen_as = watcher.event_type(event_type, obj, previous)
                if seen_as is None:
                    continue
                if watcher.share_key is None:
                    watcher.offer(watcher.encode(seen_as, obj))
                    continue
                encoding = (watcher.share_key, seen_as)
                if encoding not in shared:
                    shared[encoding] = watcher.encode(seen_as, obj)
                watcher.offer(shared[encoding])
