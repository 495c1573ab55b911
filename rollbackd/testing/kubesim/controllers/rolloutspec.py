"""The Argo Rollouts controller's spec checks (pkg/apis/rollouts/validation), on plain objects.

The CRD schema lets through what the controller refuses: negative replicas,
a selector that does not match the template, a step with no or two kinds,
a setWeight outside 0..100, a bad pause duration. The first error becomes
the ``InvalidSpec`` condition (phase ``Degraded``, message ``InvalidSpec:
The Rollout "x" is invalid: <error>``), in the controller's words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ApiError
from ..resources import template_owner_causes
from ..selectors import selector_from_label_selector_object

STEP_KINDS = ("experiment", "setWeight", "setCanaryScale", "plugin", "pause", "analysis")
_INVALID_STEP = "Step must have one of the following set: experiment, setWeight, setCanaryScale, plugin or pause"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|m|s|ms))+$")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(value: Any) -> float | None:
    """A pause duration: an integer (seconds), ``"30"``, or a Go duration (``"1m30s"``); None if invalid."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    if not _DURATION.match(text):
        return None
    return sum(
        float(amount) * _UNIT_SECONDS[unit]
        for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    )


def _step_error(index: int, step: Any) -> str | None:
    path = f"spec.strategy.canary.steps[{index}]"
    if not isinstance(step, dict) or sum(1 for kind in STEP_KINDS if kind in step) != 1:
        return f"{path}: Invalid value: {step!r}: {_INVALID_STEP}"
    weight = step.get("setWeight")
    if weight is not None and not 0 <= weight <= 100:
        return f"{path}.setWeight: Invalid value: {weight}: SetWeight needs to be between 0 and 100"
    if "pause" in step and (step["pause"] or {}).get("duration") is not None:
        seconds = duration_seconds(step["pause"]["duration"])
        if seconds is None or seconds < 0:
            return f"{path}.pause.duration: Invalid value: {step['pause']['duration']!r}: Duration needs to be greater than 0"
    return None


def _selector_error(spec: Mapping[str, Any]) -> str | None:
    selector = spec.get("selector")
    if selector is None:
        return "spec.selector: Required value: Rollout has missing field '.spec.selector'"
    if not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return "spec.selector: Invalid value: {}: empty selector is invalid for deployment"
    try:
        selector_from_label_selector_object(selector)
    except ApiError:
        return "spec.selector: Invalid value: invalid label selector"
    return None


def invalid_spec(rollout: Mapping[str, Any]) -> str | None:
    """The first spec error the Argo Rollouts controller reports, or None for a valid Rollout."""
    spec = rollout.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if replicas is not None and replicas < 0:
        return f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
    error = _selector_error(spec)
    if error is not None:
        return error
    for cause in template_owner_causes({"spec": {**spec, "replicas": max(replicas or 0, 0)}}):
        return f"{cause['field']}: {cause['message']}"
    strategy = spec.get("strategy") or {}
    if "canary" not in strategy and "blueGreen" not in strategy:
        return "spec.strategy: Required value: Rollout has missing field '.spec.strategy.canary or .spec.strategy.blueGreen'"
    if "canary" in strategy and "blueGreen" in strategy:
        return "spec.strategy: Invalid value: strategy: Multiple Strategies can not be listed"
    for index, step in enumerate((strategy.get("canary") or {}).get("steps") or []):
        error = _step_error(index, step)
        if error is not None:
            return error
    return None


__all__ = ["STEP_KINDS", "duration_seconds", "invalid_spec"]
