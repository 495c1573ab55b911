"""A Recreate step (recreate.go): all old pods gone before the new ReplicaSet scales up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Obj
from .objects import PODS, status_int
from .progress import deployment_complete, sync_rollout_status
from .replicas import desired_replicas
from .scaling import active_replica_sets

if TYPE_CHECKING:
    from .deployment import DeploymentController


def rollout_recreate(ctl: DeploymentController, d: Obj, rs_list: list[Obj]) -> None:
    new_rs, old = ctl.get_all_rss(d, rs_list, create=False)
    all_rss = [*old, new_rs] if new_rs is not None else list(old)
    scaled_down = False
    for rs in active_replica_sets(old):
        scaled_down = ctl.scale_rs_and_record(d, rs, 0) or scaled_down
    if scaled_down or _old_pods_running(ctl, d, new_rs, old):
        sync_rollout_status(ctl.ctx, all_rss, new_rs, d)
        return
    if new_rs is None:
        new_rs, old = ctl.get_all_rss(d, rs_list, create=True)
        assert new_rs is not None
        all_rss = [*old, new_rs]
    ctl.scale_rs_and_record(d, new_rs, desired_replicas(d))
    if deployment_complete(d, d["status"]):
        ctl.cleanup(d, old)
    sync_rollout_status(ctl.ctx, all_rss, new_rs, d)


def _old_pods_running(
    ctl: DeploymentController, d: Obj, new_rs: Obj | None, old: list[Obj]
) -> bool:
    if sum(status_int(rs, "replicas") for rs in old) > 0:
        return True
    namespace = d["metadata"]["namespace"]
    for rs in old:
        for pod_name in ctl.ctx.index.pods_by_rs.get((namespace, rs["metadata"]["name"]), ()):
            pod = ctl.ctx.store.peek(PODS, namespace, pod_name)
            if pod is not None and (pod.get("status") or {}).get("phase") not in (
                "Failed",
                "Succeeded",
            ):
                return True
    return False
