"""The Argo Rollouts canary arithmetic (utils/replicaset/canary.go, utils/rollout), pure.

The weight of the current step, the canary/stable replica counts that best
approximate it, and the phase a Rollout's status shows. Plain values in,
plain values out, so the controller (``rollouts.py``) stays a thin loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_SURGE = "25%"

PHASE_HEALTHY = "Healthy"
PHASE_PROGRESSING = "Progressing"
PHASE_PAUSED = "Paused"
PHASE_DEGRADED = "Degraded"
REASON_ABORTED = "RolloutAborted"
REASON_INVALID_SPEC = "InvalidSpec"
PAUSE_STEP = "CanaryPauseStep"


def steps_of(rollout: Mapping[str, Any]) -> list[dict[str, Any]]:
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    return list(canary.get("steps") or [])


def replicas_of(rollout: Mapping[str, Any]) -> int:
    """spec.replicas, 1 when unset (defaults.GetReplicasOrDefault)."""
    replicas = (rollout.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def step_index(rollout: Mapping[str, Any]) -> int:
    return int((rollout.get("status") or {}).get("currentStepIndex") or 0)


def current_weight(rollout: Mapping[str, Any]) -> int:
    """GetCurrentSetWeight: 0 when aborted, 100 past the last step, else the last setWeight so far."""
    if (rollout.get("status") or {}).get("abort"):
        return 0
    steps = steps_of(rollout)
    index = step_index(rollout)
    if index >= len(steps):
        return 100
    for step in reversed(steps[: index + 1]):
        if step.get("setWeight") is not None:
            return int(step["setWeight"])
    return 0


def max_surge(rollout: Mapping[str, Any]) -> int:
    """canary.maxSurge against spec.replicas; a percentage rounds up."""
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    value = canary.get("maxSurge", DEFAULT_MAX_SURGE)
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(replicas_of(rollout) * int(value[:-1]) / 100)
        except ValueError:
            return 0
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _tied(weight: int, total: int) -> bool:
    return math.modf(total * weight / 100)[0] == 0.5


def replica_counts(replicas: int, weight: int, surge: int) -> tuple[int, int]:
    """(canary, stable): approximateWeightedCanaryStableReplicaCounts.

    The candidates are the floor and ceiling of ``replicas x weight``, over
    ``replicas`` and (with surge) ``replicas + 1`` pods; the closest to the
    weight wins, the first on a tie. Between 1 and 99 % with two pods or
    more, neither side is ever 0.
    """
    if replicas <= 0:
        return 0, 0
    ceil = math.ceil(replicas * weight / 100)
    floor = math.floor(replicas * weight / 100)
    zero_allowed = weight in (0, 100) or (replicas == 1 and surge == 0)
    options: list[tuple[int, int]] = []
    if ceil < replicas or zero_allowed:
        options.append((ceil, replicas))
    if not _tied(weight, replicas) and (floor != 0 or zero_allowed):
        options.append((floor, replicas))
    if surge > 0:
        options.append((ceil, replicas + 1))
        if not _tied(weight, replicas + 1) and (floor != 0 or zero_allowed):
            options.append((floor, replicas + 1))
    if not options:
        return 0, replicas
    best = min(options, key=lambda option: abs(option[0] * 100 / option[1] - weight))
    return best[0], best[1] - best[0]


def _phase_from_conditions(status: Mapping[str, Any]) -> tuple[str, str] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == REASON_INVALID_SPEC:
            return PHASE_DEGRADED, f"{REASON_INVALID_SPEC}: {condition.get('message', '')}"
        if condition.get("reason") in (REASON_ABORTED, "ProgressDeadlineExceeded"):
            return PHASE_DEGRADED, f"{condition['reason']}: {condition.get('message', '')}"
    return None


def phase(rollout: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[str, str]:
    """(phase, message): CalculateRolloutPhase for a basic canary."""
    from_conditions = _phase_from_conditions(status)
    if from_conditions is not None:
        return from_conditions
    if (rollout.get("spec") or {}).get("paused"):
        return PHASE_PAUSED, "manually paused"
    for pause in status.get("pauseConditions") or []:
        return PHASE_PAUSED, str(pause.get("reason", ""))
    updated = int(status.get("updatedReplicas") or 0)
    if updated < replicas_of(rollout):
        return PHASE_PROGRESSING, "more replicas need to be updated"
    if int(status.get("availableReplicas") or 0) < updated:
        return PHASE_PROGRESSING, "updated replicas are still becoming available"
    if int(status.get("replicas") or 0) > updated:
        return PHASE_PROGRESSING, "old replicas are pending termination"
    if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
        return PHASE_PROGRESSING, "waiting for all steps to complete"
    return PHASE_HEALTHY, ""


__all__ = [
    "PAUSE_STEP",
    "PHASE_DEGRADED",
    "PHASE_HEALTHY",
    "PHASE_PAUSED",
    "PHASE_PROGRESSING",
    "REASON_ABORTED",
    "REASON_INVALID_SPEC",
    "current_weight",
    "max_surge",
    "phase",
    "replica_counts",
    "replicas_of",
    "step_index",
    "steps_of",
]
