"""A Deployment's status and conditions (progress.go, sync.go's calculateStatus).

Counts summed over its ReplicaSets, Available by minimum availability, and
Progressing: NewReplicaSetAvailable when complete, ReplicaSetUpdated while
it moves, ProgressDeadlineExceeded once it has not moved for
``progressDeadlineSeconds`` (checked again when the deadline can next expire).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ..store import Obj, clone, rfc3339
from .context import Context
from .objects import (
    DEPLOYMENTS,
    get_condition,
    new_condition,
    parse_time,
    remove_condition,
    set_condition,
    status_int,
)
from .replicas import desired_replicas, max_unavailable, progress_deadline, rs_replicas

# Condition types, reasons and messages exactly as pkg/controller/deployment/util.
PROGRESSING = "Progressing"
AVAILABLE = "Available"
REASON_NEW_RS = "NewReplicaSetCreated"
REASON_FOUND_RS = "FoundNewReplicaSet"
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


def deployment_complete(d: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    replicas = desired_replicas(d)
    return (
        int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
        and int(status.get("availableReplicas") or 0) == replicas
        and int(status.get("observedGeneration") or 0) >= int(d["metadata"].get("generation") or 0)
    )


def deployment_progressing(d: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = d.get("status") or {}

    def num(status: Mapping[str, Any], field: str) -> int:
        return int(status.get(field) or 0)

    old_old = num(old, "replicas") - num(old, "updatedReplicas")
    new_old = num(new, "replicas") - num(new, "updatedReplicas")
    return (
        num(new, "updatedReplicas") > num(old, "updatedReplicas")
        or new_old < old_old
        or num(new, "readyReplicas") > num(old, "readyReplicas")
        or num(new, "availableReplicas") > num(old, "availableReplicas")
    )


def deployment_timed_out(d: Mapping[str, Any], new: Mapping[str, Any], now: datetime) -> bool:
    deadline = progress_deadline(d)
    if deadline is None:
        return False
    condition = get_condition(new, PROGRESSING)
    if condition is None or condition.get("reason") == REASON_NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == REASON_TIMED_OUT:
        return True
    since = parse_time(condition.get("lastUpdateTime"))
    return since is not None and since + timedelta(seconds=deadline) < now


def calculate_status(ctx: Context, all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> Obj:
    available = sum(status_int(rs, "availableReplicas") for rs in all_rss)
    total = sum(rs_replicas(rs) for rs in all_rss)
    counts = {
        "observedGeneration": int(d["metadata"].get("generation") or 0),
        "replicas": sum(status_int(rs, "replicas") for rs in all_rss),
        "updatedReplicas": status_int(new_rs, "replicas") if new_rs is not None else 0,
        "readyReplicas": sum(status_int(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
    }
    # Zero counts are omitted, as the real server's JSON (omitempty) does.
    status: Obj = {key: value for key, value in counts.items() if value}
    conditions = clone(d["status"].get("conditions") or [])
    if conditions:
        status["conditions"] = conditions
    if d["status"].get("collisionCount") is not None:
        status["collisionCount"] = d["status"]["collisionCount"]
    now = ctx.now()
    if available >= desired_replicas(d) - max_unavailable(d):
        condition = new_condition(
            AVAILABLE, "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", now
        )
    else:
        condition = new_condition(
            AVAILABLE,
            "False",
            REASON_MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    set_condition(status, condition)
    return status


def sync_rollout_status(ctx: Context, all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> None:
    new_status = calculate_status(ctx, all_rss, new_rs, d)
    deadline = progress_deadline(d)
    if deadline is None:
        remove_condition(new_status, PROGRESSING)
    current = get_condition(d["status"], PROGRESSING)
    complete_before = (
        int(new_status.get("replicas") or 0) == int(new_status.get("updatedReplicas") or 0)
        and current is not None
        and current.get("reason") == REASON_NEW_RS_AVAILABLE
    )
    now_time = ctx.clock()
    now = rfc3339(now_time)
    rs_name = new_rs["metadata"]["name"] if new_rs is not None else None
    if deadline is not None and not complete_before:
        if deployment_complete(d, new_status):
            message = (
                f'ReplicaSet "{rs_name}" has successfully progressed.'
                if rs_name
                else f'Deployment "{d["metadata"]["name"]}" has successfully progressed.'
            )
            set_condition(
                new_status,
                new_condition(PROGRESSING, "True", REASON_NEW_RS_AVAILABLE, message, now),
            )
        elif deployment_progressing(d, new_status):
            message = (
                f'ReplicaSet "{rs_name}" is progressing.'
                if rs_name
                else f'Deployment "{d["metadata"]["name"]}" is progressing.'
            )
            condition = new_condition(PROGRESSING, "True", REASON_RS_UPDATED, message, now)
            if current is not None:
                if current.get("status") == "True":
                    condition["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(new_status, PROGRESSING)
            set_condition(new_status, condition)
        elif deployment_timed_out(d, new_status, now_time):
            message = (
                f'ReplicaSet "{rs_name}" has timed out progressing.'
                if rs_name
                else f'Deployment "{d["metadata"]["name"]}" has timed out progressing.'
            )
            set_condition(
                new_status, new_condition(PROGRESSING, "False", REASON_TIMED_OUT, message, now)
            )
    if new_status == d["status"]:
        requeue_stuck(ctx, d, new_status)
        return
    d["status"] = new_status
    ctx.save(DEPLOYMENTS, d, status=True)
    requeue_stuck(ctx, d, new_status)


def requeue_stuck(ctx: Context, d: Obj, new_status: Obj) -> None:
    """Check the deadline again when it can next expire (requeueStuckDeployment)."""
    deadline = progress_deadline(d)
    current = get_condition(d["status"], PROGRESSING)
    if deadline is None or current is None:
        return
    if deployment_complete(d, new_status) or current.get("reason") == REASON_TIMED_OUT:
        return
    since = parse_time(current.get("lastUpdateTime"))
    if since is None:
        return
    due = since + timedelta(seconds=deadline + 1)
    ctx.schedule(due, ("deployment", d["metadata"]["namespace"], d["metadata"]["name"]))
