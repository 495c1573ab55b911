"""The Argo Rollouts controller's spec checks (pkg/apis/rollouts/validation), on plain objects.

The CRD schema lets through what the controller refuses: negative replicas,
a selector that does not match the template, a step with no or two kinds,
a setWeight outside 0..100, a bad pause duration. The first error becomes
the ``InvalidSpec`` condition (phase ``Degraded``, message ``InvalidSpec:
The Rollout "x" is invalid: <error>``), in the controller's words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ....durations import parse_duration
from ..errors import ApiError
from ..resources import template_owner_causes
from ..selectors import selector_from_label_selector_object

STEP_KINDS = ("experiment", "setWeight", "setCanaryScale", "plugin", "pause", "analysis")
_INVALID_STEP = "Step must have one of the following set: experiment, setWeight, setCanaryScale, plugin or pause"


def duration_seconds(value: Any) -> float | None:
    """A pause duration: an integer (seconds), ``"30"``, or a Go duration (``"1m30s"``); None if invalid."""
    try:
        return parse_duration(value).total_seconds()
    except ValueError:
        return None


def _step_error(index: int, step: Any) -> str | None:
    path = f"spec.strategy.canary.steps[{index}]"
    if not isinstance(step, dict) or sum(1 for kind in STEP_KINDS if kind in step) != 1:
        return f"{path}: Invalid value: {step!r}: {_INVALID_STEP}"
    weight = step.get("setWeight")
    if weight is not None and (not isinstance(weight, int) or not 0 <= weight <= 100):
        return f"{path}.setWeight: Invalid value: {weight}: SetWeight needs to be between 0 and 100"
    if "pause" in step and not isinstance(step["pause"] or {}, dict):
        return f"{path}.pause: Invalid value: {step['pause']!r}: must be an object"
    if "pause" in step and (step["pause"] or {}).get("duration") is not None:
        seconds = duration_seconds(step["pause"]["duration"])
        if seconds is None or seconds < 0:
            return f"{path}.pause.duration: Invalid value: {step['pause']['duration']!r}: Duration needs to be greater than 0"
    return None


def _selector_error(spec: Mapping[str, Any]) -> str | None:
    selector = spec.get("selector")
    if selector is None:
        return "spec.selector: Required value: Rollout has missing field '.spec.selector'"
    if not isinstance(selector, dict):
        return "spec.selector: Invalid value: invalid label selector"
    if not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
    try:
        selector_from_label_selector_object(selector)
    except ApiError:
        return "spec.selector: Invalid value: invalid label selector"
    return None


def invalid_spec(rollout: Mapping[str, Any]) -> str | None:
    """The first spec error the Argo Rollouts controller reports, or None for a valid Rollout."""
    spec = rollout.get("spec")
    if not isinstance(spec, dict):
        return "spec: Required value"
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int | None) or isinstance(replicas, bool):
        return f"spec.replicas: Invalid value: {replicas!r}: must be an integer"
    if replicas is not None and replicas < 0:
        return f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
    error = _selector_error(spec)
    if error is not None:
        return error
    for cause in template_owner_causes({"spec": {**spec, "replicas": max(replicas or 0, 0)}}):
        return f"{cause['field']}: {cause['message']}"
    strategy = spec.get("strategy") or {}
    if not isinstance(strategy, dict):
        strategy = {}
    if "canary" not in strategy and "blueGreen" not in strategy:
        return "spec.strategy: Required value: Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'"
    if "canary" in strategy and "blueGreen" in strategy:
        return "spec.strategy: Invalid value: strategy: Multiple Strategies can not be listed"
    steps = (strategy.get("canary") or {}).get("steps") or []
    for index, step in enumerate(steps if isinstance(steps, list) else [steps]):
        error = _step_error(index, step)
        if error is not None:
            return error
    return None


__all__ = ["STEP_KINDS", "duration_seconds", "invalid_spec"]
