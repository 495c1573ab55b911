"""A RollingUpdate step (rolling.go): grow the new ReplicaSet within maxSurge, shrink old
ones within maxUnavailable, unavailable old pods first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Obj
from .objects import by_creation, status_int
from .progress import deployment_complete, sync_rollout_status
from .replicas import desired_replicas, max_unavailable, new_rs_new_replicas, rs_replicas
from .scaling import active_replica_sets

if TYPE_CHECKING:
    from .deployment import DeploymentController


def rollout_rolling(ctl: DeploymentController, d: Obj, rs_list: list[Obj]) -> None:
    new_rs, old = ctl.get_all_rss(d, rs_list, create=True)
    assert new_rs is not None
    all_rss = [*old, new_rs]
    if _reconcile_new_rs(ctl, d, all_rss, new_rs):
        sync_rollout_status(ctl.ctx, all_rss, new_rs, d)
        return
    if _reconcile_old_rss(ctl, d, all_rss, active_replica_sets(old), new_rs):
        sync_rollout_status(ctl.ctx, all_rss, new_rs, d)
        return
    if deployment_complete(d, d["status"]):
        ctl.cleanup(d, old)
    sync_rollout_status(ctl.ctx, all_rss, new_rs, d)


def _reconcile_new_rs(ctl: DeploymentController, d: Obj, all_rss: list[Obj], new_rs: Obj) -> bool:
    replicas = desired_replicas(d)
    if rs_replicas(new_rs) == replicas:
        return False
    if rs_replicas(new_rs) > replicas:
        return ctl.scale_rs_and_record(d, new_rs, replicas)
    return ctl.scale_rs_and_record(d, new_rs, new_rs_new_replicas(d, all_rss, new_rs))


def _reconcile_old_rss(
    ctl: DeploymentController, d: Obj, all_rss: list[Obj], old: list[Obj], new_rs: Obj
) -> bool:
    if sum(rs_replicas(rs) for rs in old) == 0:
        return False
    min_available = desired_replicas(d) - max_unavailable(d)
    new_unavailable = rs_replicas(new_rs) - status_int(new_rs, "availableReplicas")
    max_scaled_down = sum(rs_replicas(rs) for rs in all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return False
    cleaned = _cleanup_unhealthy(ctl, d, old, max_scaled_down)
    scaled = _scale_down_old_for_rolling(ctl, d, [*old, new_rs], old)
    return cleaned + scaled > 0


def _cleanup_unhealthy(ctl: DeploymentController, d: Obj, old: list[Obj], max_cleanup: int) -> int:
    """Scale away old pods that are not available first: they block nothing if removed."""
    total = 0
    for rs in sorted(old, key=by_creation):
        if total >= max_cleanup:
            break
        unhealthy = rs_replicas(rs) - status_int(rs, "availableReplicas")
        if rs_replicas(rs) == 0 or unhealthy <= 0:
            continue
        count = min(max_cleanup - total, unhealthy)
        ctl.scale_rs_and_record(d, rs, rs_replicas(rs) - count)
        total += count
    return total


def _scale_down_old_for_rolling(
    ctl: DeploymentController, d: Obj, all_rss: list[Obj], old: list[Obj]
) -> int:
    min_available = desired_replicas(d) - max_unavailable(d)
    available = sum(status_int(rs, "availableReplicas") for rs in all_rss)
    if available <= min_available:
        return 0
    budget = available - min_available
    total = 0
    for rs in sorted(old, key=by_creation):
        if total >= budget:
            break
        if rs_replicas(rs) == 0:
            continue
        count = min(rs_replicas(rs), budget - total)
        ctl.scale_rs_and_record(d, rs, rs_replicas(rs) - count)
        total += count
    return total
