"""Pod readiness facts, as the controllers read them from a pod's status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..store import rfc3339
from .objects import get_condition, parse_time


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    condition = get_condition(pod.get("status") or {}, "Ready")
    return condition is not None and condition.get("status") == "True"


def pod_ready_since(pod: Mapping[str, Any]) -> datetime | None:
    condition = get_condition(pod.get("status") or {}, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def is_pod_available(pod: Mapping[str, Any], min_ready: int, now: datetime) -> bool:
    """Ready for longer than minReadySeconds (strictly, as upstream)."""
    if not is_pod_ready(pod):
        return False
    if min_ready == 0:
        return True
    since = pod_ready_since(pod)
    return since is not None and since + timedelta(seconds=min_ready) < now


def deletion_rank(pod: Mapping[str, Any]) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Pods to delete first: not ready, then most recently ready, then newest (ActivePodsWithRanks)."""
    since = pod_ready_since(pod)
    ready_key = tuple(-ord(c) for c in (rfc3339(since) if since else ""))
    created = tuple(-ord(c) for c in (pod["metadata"].get("creationTimestamp") or ""))
    return (1 if is_pod_ready(pod) else 0, ready_key, created)
