"""The object store: what etcd plus the generic registry do in a real API server.

All methods are synchronous: kubesim runs on one event loop, so a method that
never awaits is atomic without locks, and the resourceVersion counter, the
indexes and the watch history always agree.

Stored objects are never mutated in place: every write stores a fresh dict.
That lets the bounded watch history keep references instead of copies, and
lets read-only consumers (watch streams) skip copying. Everything handed to
callers that may mutate it is a copy.
"""

from __future__ import annotations

import builtins
import marshal
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, already_exists, bad_request, conflict, gone, not_found
from .resources import NAMESPACES, REGISTRY, ResourceType
from .selectors import exact_field, parse_field_selector, parse_label_selector

Obj = dict[str, Any]
Subscriber = Callable[[str, str, Obj], None]

DEFAULT_HISTORY = 20_000
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def clone(value: Any) -> Any:
    """Deep copy of a JSON value.

    A marshal round trip, about twice as fast as walking the value in Python
    (and many times faster than ``copy.deepcopy``): every read and write of
    the simulated API copies objects. A value marshal cannot carry is walked.
    """
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:
        return _walk_clone(value)


def _walk_clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _walk_clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_clone(v) for v in value]
    return value


def rfc3339(moment: datetime) -> str:
    """Kubernetes timestamps: second precision, UTC, ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One committed change, as kept in the history for watch resumption."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    key: str
    namespace: str
    obj: Obj  # the stored object itself: read-only
    previous: Obj | None = None  # the version a MODIFIED or DELETED event replaced (read-only)


def _rtype(key: str) -> ResourceType:
    try:
        return REGISTRY[key]
    except KeyError:
        raise bad_request(f"unknown resource {key!r}") from None


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return meta


def _position(obj: Obj) -> tuple[str, str]:
    """Where an object sorts in a list: (namespace, name)."""
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _owner_uids(obj: Obj) -> set[str]:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return {ref["uid"] for ref in refs if isinstance(ref, dict) and ref.get("uid")}


class Store:
    """In-memory objects indexed by resource key, namespace and name."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {key: {} for key in REGISTRY}
        # owner uid -> dependents (key, namespace, name), for garbage collection.
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}
        self._history: deque[WatchEvent] = deque(maxlen=history)
        self._subscribers: list[tuple[Subscriber, bool]] = []
        self._rv = 0
        self._random = random.Random()

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> int:
        return self._rv

    def try_get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        obj = self._objects[_rtype(key).key].get(namespace or "", {}).get(name)
        return None if obj is None else clone(obj)

    def get(self, key: str, namespace: str | None, name: str) -> Obj:
        obj = self.try_get(key, namespace, name)
        if obj is None:
            rtype = _rtype(key)
            raise not_found(rtype.plural, name, rtype.group)
        return obj

    def peek(self, key: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object itself, not a copy: callers must not mutate it."""
        return self._objects[_rtype(key).key].get(namespace or "", {}).get(name)

    def list(
        self,
        key: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        copy: bool = True,
    ) -> list[Obj]:
        """Matching objects sorted by (namespace, name); ``copy=False`` returns stored dicts."""
        rtype = _rtype(key)
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rtype.key)
        by_namespace = self._objects[rtype.key]
        # Index lookups for the selectors clients use most: namespace and name.
        namespace = namespace or exact_field(field_selector, "metadata.namespace") or None
        pinned_name = exact_field(field_selector, "metadata.name")
        if namespace is not None or not rtype.namespaced:
            namespaces = [namespace or ""]
        else:
            namespaces = sorted(by_namespace)
        result: list[Obj] = []
        for ns in namespaces:
            objects = by_namespace.get(ns, {})
            if pinned_name is not None:
                candidates = [objects[pinned_name]] if pinned_name in objects else []
            else:
                candidates = [objects[name] for name in sorted(objects)]
            for obj in candidates:
                if labels is not None and not labels.matches(obj["metadata"].get("labels")):
                    continue
                if fields is not None and not fields(obj):
                    continue
                result.append(clone(obj) if copy else obj)
        return result

    def list_at(
        self,
        key: str,
        resource_version: int,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        """Matching objects as they were at ``resource_version`` (stored dicts, read-only).

        What etcd gives a continued list: the snapshot of the first page.
        Rebuilt from the current objects by undoing the history after
        ``resource_version``; 410 Gone once that history has been compacted.
        """
        rtype = _rtype(key)
        undone: dict[tuple[str, str], Obj | None] = {}
        # Newest first, so the oldest change after the snapshot decides.
        for event in reversed(list(self.events_since(resource_version))):
            if event.key == rtype.key:
                undone[(event.namespace, event.obj["metadata"]["name"])] = event.previous
        current = self.list(
            key, namespace, label_selector=label_selector, field_selector=field_selector, copy=False
        )
        if not undone:
            return current
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector, rtype.key)
        namespace = namespace or exact_field(field_selector, "metadata.namespace") or None
        kept = [obj for obj in current if _position(obj) not in undone]
        for (ns, _name), obj in undone.items():
            if obj is None or (namespace is not None and ns != namespace):
                continue
            if labels is not None and not labels.matches(obj["metadata"].get("labels")):
                continue
            if fields is None or fields(obj):
                kept.append(obj)
        return sorted(kept, key=_position)

    @property
    def last_event(self) -> WatchEvent | None:
        """The newest committed change; inside a subscriber, the one being delivered."""
        return self._history[-1] if self._history else None

    def events_since(self, resource_version: int) -> Iterator[WatchEvent]:
        """History after ``resource_version``; 410 Gone when it has been compacted away."""
        if resource_version >= self._rv:
            return iter(())
        if not self._history or resource_version < self._history[0].resource_version - 1:
            oldest = self._history[0].resource_version if self._history else self._rv
            raise gone(f"too old resource version: {resource_version} ({oldest})")
        # resourceVersions are contiguous in the history: one per committed change.
        start = resource_version - self._history[0].resource_version + 1
        return (self._history[i] for i in range(max(start, 0), len(self._history)))

    # ----------------------------------------------------------------- writes

    def create(
        self, key: str, obj: Obj, *, dry_run: bool = False, manager: str | None = None
    ) -> Obj:
        rtype = _rtype(key)
        new = clone(obj)
        meta = _meta(new)
        namespace = self._namespace_of(rtype, meta)
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise bad_request("metadata.name or metadata.generateName is required")
            name = self._generate_name(rtype, namespace, prefix)
            meta["name"] = name
        if name in self._objects[rtype.key].get(namespace, {}):
            raise already_exists(rtype.plural, name, rtype.group)
        if rtype.namespaced and namespace not in self._objects[NAMESPACES.key].get("", {}):
            raise not_found("namespaces", namespace)
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.clock())
        meta.pop("deletionTimestamp", None)
        meta.pop("managedFields", None)
        if manager and rtype.key == SERVICES_KEY:
            meta["managedFields"] = selector_owners(None, new, manager, meta["creationTimestamp"])
        if rtype.has_spec:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if dry_run:
            return new
        self._commit("ADDED", rtype, namespace, name, new)
        return clone(new)

    def update(
        self,
        key: str,
        obj: Obj,
        *,
        subresource: str | None = None,
        check_resource_version: bool = True,
        dry_run: bool = False,
        manager: str | None = None,
    ) -> Obj:
        rtype = _rtype(key)
        meta = obj.get("metadata") or {}
        namespace = self._namespace_of(rtype, dict(meta))
        name = meta.get("name") or ""
        stored = self._objects[rtype.key].get(namespace, {}).get(name)
        if stored is None:
            raise not_found(rtype.plural, name, rtype.group)
        given_rv = meta.get("resourceVersion")
        if (
            check_resource_version
            and given_rv
            and str(given_rv) != stored["metadata"]["resourceVersion"]
        ):
            raise conflict(rtype.plural, name, group=rtype.group)
        if subresource == "status":
            new = {k: v for k, v in stored.items() if k != "status"}
            new["metadata"] = dict(stored["metadata"])  # never mutate the stored dict
            if "status" in obj:
                new["status"] = clone(obj["status"])
        elif subresource is None:
            new = clone(obj)
            new["apiVersion"] = rtype.api_version
            new["kind"] = rtype.kind
            if rtype.has_status:
                new.pop("status", None)
                if "status" in stored:
                    new["status"] = stored["status"]
            new_meta = _meta(new)
            old_meta = stored["metadata"]
            for preserved in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if preserved in old_meta:
                    new_meta[preserved] = old_meta[preserved]
                else:
                    new_meta.pop(preserved, None)
            new_meta["namespace"] = old_meta.get("namespace")
            if not rtype.namespaced:
                new_meta.pop("namespace", None)
            new_meta.pop("managedFields", None)
            if rtype.key == SERVICES_KEY:
                self._track_managers(stored, new, manager)
            if rtype.has_spec and new.get("spec") != stored.get("spec"):
                new_meta["generation"] = int(old_meta.get("generation", 0)) + 1
        else:
            raise bad_request(f"unsupported subresource {subresource!r}")
        new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        if new == stored:
            return clone(stored)
        if dry_run:
            return clone(new)
        old_owners = _owner_uids(stored)
        self._commit(
            "MODIFIED", rtype, namespace, name, new, old_owners=old_owners, previous=stored
        )
        return clone(new)

    def delete(
        self,
        key: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        dry_run: bool = False,
    ) -> Obj:
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"unsupported propagationPolicy {propagation!r}")
        rtype = _rtype(key)
        ns = (namespace or "") if rtype.namespaced else ""
        objects = self._objects[rtype.key].get(ns, {})
        if dry_run:
            return self.get(rtype.key, ns, name)
        stored = objects.pop(name, None)
        if stored is None:
            raise not_found(rtype.plural, name, rtype.group)
        if not objects:
            self._objects[rtype.key].pop(ns, None)
        self._unindex_owner(rtype.key, ns, name, _owner_uids(stored))
        deleted = {**stored, "metadata": dict(stored["metadata"])}
        self._rv += 1
        deleted["metadata"]["resourceVersion"] = str(self._rv)
        self._record("DELETED", rtype.key, ns, deleted, previous=stored)
        self._collect_dependents(stored["metadata"]["uid"], propagation)
        if rtype is NAMESPACES:
            self._delete_namespace_contents(name)
        return clone(deleted)

    def subscribe(self, callback: Subscriber, *, copy: bool = True) -> Callable[[], None]:
        """Call ``callback(type, key, obj)`` after every committed change.

        ``copy=False`` hands over the stored object itself: for read-only
        consumers such as watch streams, where a copy per change would cost
        O(watchers) allocations.
        """
        entry = (callback, copy)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    # -------------------------------------------------------------- internals

    def _namespace_of(self, rtype: ResourceType, meta: dict[str, Any]) -> str:
        if not rtype.namespaced:
            meta.pop("namespace", None)
            return ""
        namespace = meta.get("namespace") or "default"
        meta["namespace"] = namespace
        return str(namespace)

    def _generate_name(self, rtype: ResourceType, namespace: str, prefix: str) -> str:
        existing = self._objects[rtype.key].get(namespace, {})
        while True:
            suffix = "".join(self._random.choice(_GENERATE_ALPHABET) for _ in range(5))
            if prefix + suffix not in existing:
                return prefix + suffix

    def _track_managers(self, stored: Obj, new: Obj, manager: str | None) -> None:
        """Carry a Service's managedFields over, moved on by ``manager``'s change."""
        old = stored["metadata"].get("managedFields")
        if manager and _changed(stored, new):
            new["metadata"]["managedFields"] = selector_owners(
                stored, new, manager, rfc3339(self.clock())
            )
        elif old:
            new["metadata"]["managedFields"] = old

    def _commit(
        self,
        event_type: str,
        rtype: ResourceType,
        namespace: str,
        name: str,
        new: Obj,
        *,
        old_owners: set[str] | None = None,
        previous: Obj | None = None,
    ) -> None:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[rtype.key].setdefault(namespace, {})[name] = new
        new_owners = _owner_uids(new)
        if old_owners:
            self._unindex_owner(rtype.key, namespace, name, old_owners - new_owners)
        for uid in new_owners:
            self._dependents.setdefault(uid, set()).add((rtype.key, namespace, name))
        self._record(event_type, rtype.key, namespace, new, previous)

    def _record(
        self, event_type: str, key: str, namespace: str, obj: Obj, previous: Obj | None = None
    ) -> None:
        self._history.append(WatchEvent(self._rv, event_type, key, namespace, obj, previous))
        for callback, copy in list(self._subscribers):
            callback(event_type, key, clone(obj) if copy else obj)

    def _unindex_owner(self, key: str, namespace: str, name: str, owners: set[str]) -> None:
        for uid in owners:
            dependents = self._dependents.get(uid)
            if dependents is not None:
                dependents.discard((key, namespace, name))
                if not dependents:
                    del self._dependents[uid]

    def _collect_dependents(self, owner_uid: str, propagation: str) -> None:
        for key, namespace, name in sorted(self._dependents.pop(owner_uid, set())):
            dependent = self._objects[key].get(namespace, {}).get(name)
            if dependent is None:
                continue
            if propagation == "Orphan":
                orphaned = clone(dependent)
                refs = orphaned["metadata"].get("ownerReferences") or []
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                if remaining:
                    orphaned["metadata"]["ownerReferences"] = remaining
                else:
                    orphaned["metadata"].pop("ownerReferences", None)
                self.update(key, orphaned, check_resource_version=False)
            else:
                self.delete(key, namespace or None, name, propagation=propagation)

    def _delete_namespace_contents(self, namespace: str) -> None:
        for key, by_namespace in self._objects.items():
            if not REGISTRY[key].namespaced:
                continue
            for name in sorted(by_namespace.get(namespace, {})):
                if name in by_namespace.get(namespace, {}):
                    self.delete(key, namespace, name)


__all__ = ["ApiError", "Obj", "Store", "WatchEvent", "clone", "rfc3339"]


# managedFields, for Services only (blue-green reads when the selector last
# changed): one Update entry per field manager, with the real API server's
# rule for ``time``: it moves when that manager changes a field; the
# selector's ownership moves to whoever changed it last. Other fields are
# summarised as ``f:metadata`` ownership, which is all rollbackd reads.
SERVICES_KEY = "v1/services"
_SELECTOR: dict[str, Any] = {"f:spec": {"f:selector": {}}}


def _changed(old: Obj, new: Obj) -> bool:
    strip = ("resourceVersion", "managedFields")
    meta_old = {k: v for k, v in (old.get("metadata") or {}).items() if k not in strip}
    meta_new = {k: v for k, v in (new.get("metadata") or {}).items() if k not in strip}
    return meta_old != meta_new or old.get("spec") != new.get("spec")


def selector_owners(old: Obj | None, new: Obj, manager: str, now: str) -> list[Obj]:
    """The Service's managedFields after ``manager`` wrote ``new`` over ``old`` at ``now``."""
    entries = [dict(e) for e in ((old or {}).get("metadata") or {}).get("managedFields") or []]
    selector_moved = old is None or (old.get("spec") or {}).get("selector") != (
        new.get("spec") or {}
    ).get("selector")
    if selector_moved:
        for entry in entries:  # the selector changes hands
            if entry["manager"] != manager:
                entry["fieldsV1"] = {"f:metadata": {}}
    mine = next((e for e in entries if e["manager"] == manager), None)
    if mine is None:
        mine = {"manager": manager, "operation": "Update", "apiVersion": "v1"}
        mine["fieldsType"] = "FieldsV1"
        mine["fieldsV1"] = {"f:metadata": {}}
        entries.append(mine)
    if selector_moved:
        mine["fieldsV1"] = {"f:metadata": {}, **_SELECTOR}
    mine["time"] = now
    return entries
