"""Replica arithmetic of a Deployment, as pkg/controller/deployment/util computes it.

Desired counts, ``maxSurge``/``maxUnavailable`` resolved against the desired
count (IntOrString, percentages rounded as upstream), how far a new
ReplicaSet may grow now, and the API defaults the server applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..store import Obj

# API defaults the server applies to a Deployment; used when a field is absent.
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
MAX_INT32 = 2**31 - 1


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """An IntOrString resolved against ``total``: "25%" of 10 is 3 rounded up, 2 rounded down."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid int-or-percent {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """(surge, unavailable) as upstream: both zero means one pod may be unavailable."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, round_up=True)
    unavailable = scaled_value(
        max_unavailable if max_unavailable is not None else 0, desired, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def desired_replicas(d: Mapping[str, Any]) -> int:
    replicas = (d.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def rs_replicas(rs: Mapping[str, Any]) -> int:
    replicas = (rs.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def is_rolling_update(d: Mapping[str, Any]) -> bool:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    return strategy.get("type", "RollingUpdate") == "RollingUpdate"


def _rolling_params(d: Mapping[str, Any]) -> tuple[Any, Any]:
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return (
        rolling.get("maxSurge", DEFAULT_MAX_SURGE),
        rolling.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE),
    )


def max_surge(d: Mapping[str, Any]) -> int:
    if not is_rolling_update(d):
        return 0
    surge, unavailable = _rolling_params(d)
    return resolve_fenceposts(surge, unavailable, desired_replicas(d))[0]


def max_unavailable(d: Mapping[str, Any]) -> int:
    replicas = desired_replicas(d)
    if not is_rolling_update(d) or replicas == 0:
        return 0
    surge, unavailable = _rolling_params(d)
    return min(resolve_fenceposts(surge, unavailable, replicas)[1], replicas)


def progress_deadline(d: Mapping[str, Any]) -> int | None:
    """progressDeadlineSeconds, or None when the Deployment has no deadline."""
    value = (d.get("spec") or {}).get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    if value is None or int(value) == MAX_INT32:
        return None
    return int(value)


def min_ready_seconds(obj: Mapping[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("minReadySeconds") or 0)


def new_rs_new_replicas(d: Mapping[str, Any], all_rss: list[Obj], new_rs: Mapping[str, Any]) -> int:
    """How far the new ReplicaSet may grow now (NewRSNewReplicas)."""
    replicas = desired_replicas(d)
    if not is_rolling_update(d):
        return replicas
    current = sum(rs_replicas(rs) for rs in all_rss)
    max_total = replicas + max_surge(d)
    if current >= max_total:
        return rs_replicas(new_rs)
    scale_up = min(max_total - current, replicas - rs_replicas(new_rs))
    return rs_replicas(new_rs) + scale_up
