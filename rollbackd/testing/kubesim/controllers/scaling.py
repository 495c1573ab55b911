"""Proportional scaling: how a Deployment's size change is shared among its ReplicaSets.

The rules of ``DeploymentController.scale`` and ``GetReplicaSetProportion``:
a single active ReplicaSet takes the whole size; a saturated new one lets the
old ones go to zero; otherwise each active ReplicaSet gets its share of the
change, by its size relative to the ``max-replicas`` it was annotated with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..store import Obj
from .objects import by_creation, int_annotation, status_int
from .replicas import desired_replicas, is_rolling_update, max_surge, rs_replicas
from .revisions import DESIRED_REPLICAS, MAX_REPLICAS

if TYPE_CHECKING:
    from .deployment import DeploymentController


def active_replica_sets(replica_sets: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in replica_sets if rs is not None and rs_replicas(rs) > 0]


def neg_key(key: tuple[str, str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sort key that orders (timestamp, name) newest first."""
    return (tuple(-ord(c) for c in key[0]), tuple(-ord(c) for c in key[1]))


def find_active_or_latest(new_rs: Obj | None, old: list[Obj]) -> Obj | None:
    if new_rs is None and not old:
        return None
    newest_first = sorted(old, key=by_creation, reverse=True)
    active = active_replica_sets([*newest_first, new_rs])
    if len(active) == 0:
        return new_rs if new_rs is not None else newest_first[0]
    if len(active) == 1:
        return active[0]
    return None


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    if rs is None:
        return False
    desired = int_annotation(rs, DESIRED_REPLICAS)
    if desired is None:
        return False
    replicas = desired_replicas(d)
    return (
        rs_replicas(rs) == replicas
        and desired == replicas
        and status_int(rs, "availableReplicas") == replicas
    )


def _round_half_away(value: float) -> int:
    return int(value - 0.5) if value < 0 else int(value + 0.5)


def replica_set_proportion(
    d: Mapping[str, Any], rs: Mapping[str, Any], to_add: int, added: int
) -> int:
    """GetReplicaSetProportion: this ReplicaSet's share of a proportional scale."""
    if rs_replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if desired_replicas(d) == 0:
        fraction = -rs_replicas(rs)
    else:
        deployment_max = desired_replicas(d) + max_surge(d)
        annotated = int_annotation(rs, MAX_REPLICAS)
        if annotated is None or annotated == 0:
            annotated = status_int(d, "replicas")
        if annotated == 0:
            fraction = 0
        else:
            fraction = _round_half_away(rs_replicas(rs) * deployment_max / annotated) - rs_replicas(
                rs
            )
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def scale(ctl: DeploymentController, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
    """Proportional scaling across active ReplicaSets (DeploymentController.scale)."""
    replicas = desired_replicas(d)
    active_or_latest = find_active_or_latest(new_rs, old)
    if active_or_latest is not None:
        if rs_replicas(active_or_latest) != replicas:
            ctl.scale_rs_and_record(d, active_or_latest, replicas)
        return
    if is_saturated(d, new_rs):
        for rs in active_replica_sets(old):
            ctl.scale_rs_and_record(d, rs, 0)
        return
    if not is_rolling_update(d):
        return
    active = active_replica_sets([*old, new_rs])
    allowed = replicas + max_surge(d) if replicas > 0 else 0
    to_add = allowed - sum(rs_replicas(rs) for rs in active)
    operation = ""
    if to_add > 0:
        active.sort(key=lambda rs: (-rs_replicas(rs), neg_key(by_creation(rs))))
        operation = "up"
    elif to_add < 0:
        active.sort(key=lambda rs: (-rs_replicas(rs), by_creation(rs)))
        operation = "down"
    added = 0
    sizes: dict[str, int] = {}
    for rs in active:
        if to_add != 0:
            proportion = replica_set_proportion(d, rs, to_add, added)
            sizes[rs["metadata"]["name"]] = rs_replicas(rs) + proportion
            added += proportion
        else:
            sizes[rs["metadata"]["name"]] = rs_replicas(rs)
    for index, rs in enumerate(active):
        name = rs["metadata"]["name"]
        if index == 0 and to_add != 0:
            sizes[name] = max(sizes[name] + to_add - added, 0)
        ctl.scale_rs(d, rs, sizes[name], operation)
