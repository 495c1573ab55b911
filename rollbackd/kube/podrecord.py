"""What the watch cache keeps of a pod: its ReplicaSet's name, and its trouble when it has any.

Pods are the bulk of a cluster. Two readers need them: the resolver (an
alert's pod -> its ReplicaSet -> its Deployment) and pod health (crash loops,
image pulls, lost readiness of a fresh rollout's pods). A pod that pod health
could hold nothing against (Ready, every container running and never
restarted, init containers completed) is kept as the interned name of its
ReplicaSet, one shared string, which is what a healthy fleet costs. Any other
pod is kept as the few fields :mod:`rollbackd.podhealth` reads, in the pod's
own JSON shape, so the judging reads a cached pod and a listed one alike. A
pod moves between the two forms with its watch events.

Pods are input: a status of an unexpected shape is kept as it came (the
judging skips a pod it cannot read), never an error here. Records are
read-only, like everything the cache holds: :func:`pod_json` hands out the
cached dict itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["PodRecord", "pod_json", "pod_owner", "pod_record"]

# The settled form (the ReplicaSet's name, "" for a pod no ReplicaSet controls)
# or the trimmed pod.
PodRecord = str | dict[str, Any]

_WORDS_MAX = 128
# Values that repeat across pods (reasons, kinds, a ReplicaSet's name and uid); not times.
_WORDS = frozenset({"apiVersion", "kind", "name", "uid", "reason", "type", "status"})
_OWNER = ("apiVersion", "kind", "name", "uid", "controller")
_META = ("name", "creationTimestamp", "deletionTimestamp")
_CONTAINER = ("name", "ready", "restartCount")
_STATE = {"waiting": ("reason",), "terminated": ("reason", "exitCode", "finishedAt")}
_CONDITION = ("type", "status", "lastTransitionTime")


def pod_record(pod: Mapping[str, Any]) -> PodRecord:
    """The cache's record of ``pod`` (a decoded API object)."""
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        return ""
    owner = _replicaset_owner(meta.get("ownerReferences"))
    if owner is None:
        return ""  # not a ReplicaSet's pod: nothing here judges or resolves it
    if _settled(pod):
        return owner["name"]
    kept = {k: meta[k] for k in _META if k in meta}
    kept["ownerReferences"] = [owner]
    return {"metadata": kept, "status": _status(pod.get("status"))}


def pod_owner(record: PodRecord) -> str:
    """The name of the ReplicaSet controlling the pod of ``record`` ("" when none)."""
    if isinstance(record, str):
        return record
    return str(record["metadata"]["ownerReferences"][0]["name"])


def pod_json(name: str, record: PodRecord) -> dict[str, Any]:
    """``record`` as pod JSON for the judging: a settled pod is one that reports no trouble."""
    if isinstance(record, dict):
        return record
    owner = {"kind": "ReplicaSet", "name": record, "controller": True}
    return {"metadata": {"name": name, "ownerReferences": [owner]}, "status": {}}


def _replicaset_owner(refs: Any) -> dict[str, Any] | None:
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller"):
            if ref.get("kind") != "ReplicaSet":
                return None
            owner = _pick(ref, _OWNER)
            owner["name"] = _word(str(owner.get("name") or ""))
            return owner
    return None


def _settled(pod: Mapping[str, Any]) -> bool:
    """Nothing pod health could hold against the pod, whatever its rules and the time."""
    status = pod.get("status")
    if (pod.get("metadata") or {}).get("deletionTimestamp") or not isinstance(status, dict):
        return False
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in _items(status.get("conditions"))
    )
    containers = _items(status.get("containerStatuses"))
    return (
        ready
        and bool(containers)
        and all(_running_clean(c) for c in containers)
        and all(
            _running_clean(c) or _completed_clean(c)
            for c in _items(status.get("initContainerStatuses"))
        )
    )


def _running_clean(container: Any) -> bool:
    """Ready, running, never restarted: the only state of a container that says nothing."""
    return (
        isinstance(container, dict)
        and container.get("ready") is True
        and container.get("restartCount") == 0
        and _only(container.get("state"), "running")
        and not _terminated_before(container)
    )


def _completed_clean(container: Any) -> bool:
    """An init container that ran once and exited 0."""
    if not isinstance(container, dict) or container.get("restartCount") != 0:
        return False
    state = container.get("state")
    ended = state["terminated"] if isinstance(state, dict) and _only(state, "terminated") else None
    return (
        isinstance(ended, dict) and ended.get("exitCode") == 0 and not _terminated_before(container)
    )


def _only(state: Any, key: str) -> bool:
    return isinstance(state, dict) and list(state) == [key]


def _terminated_before(container: Mapping[str, Any]) -> bool:
    last = container.get("lastState")
    return bool(last.get("terminated")) if isinstance(last, dict) else last is not None


def _status(status: Any) -> Any:
    """The fields pod health reads; a status of another shape as it came."""
    if not isinstance(status, dict):
        return status
    kept: dict[str, Any] = {}
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        kept["conditions"] = [
            _pick(c, _CONDITION)
            for c in conditions
            if isinstance(c, dict) and c.get("type") == "Ready"
        ]
    elif conditions is not None:
        kept["conditions"] = conditions
    for key in ("initContainerStatuses", "containerStatuses"):
        containers = status.get(key)
        if containers is not None:
            kept[key] = (
                [_container(c) for c in containers] if isinstance(containers, list) else containers
            )
    return kept


def _container(container: Any) -> Any:
    if not isinstance(container, dict):
        return container
    kept = _pick(container, _CONTAINER)
    for key in ("state", "lastState"):
        state = container.get(key)
        if isinstance(state, dict):
            kept[key] = {
                name: _pick(value, _STATE.get(name, ())) if isinstance(value, dict) else value
                for name, value in state.items()
            }
        elif state is not None:
            kept[key] = state
    return kept


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``keys`` of ``source`` that are present; words interned, times and counts as they are."""
    return {k: _word(source[k]) if k in _WORDS else source[k] for k in keys if k in source}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _word(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) and len(value) <= _WORDS_MAX else value
