"""Argo Rollouts ``Rollout`` (argoproj.io/v1alpha1) as its CRD declares it to the API server.

``SCHEMA`` is the subset of Argo Rollouts' manifests/crds/rollout-crd.yaml
that matters here: integer replicas and setWeight, boolean paused and abort,
int-or-string pause durations, containers with names, an immutable
selector. A violation is refused with 422 on create, update, patch and
status writes alike. Everything else is accepted; the controller judges it
(``controllers/rolloutspec.py``) and says so in the Rollout's status.
"""

from __future__ import annotations

from .crdschema import IMMUTABLE, Schema

ROLLOUTS = "argoproj.io/v1alpha1/rollouts"

_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_STRING = {"type": "string"}
_INT_OR_STRING = {"x-kubernetes-int-or-string": True}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_STEP = {
    "type": "object",
    "properties": {
        "setWeight": _INT,
        "pause": {"type": "object", "properties": {"duration": _INT_OR_STRING}},
        "setCanaryScale": {"type": "object"},
        "analysis": {"type": "object"},
        "experiment": {"type": "object"},
        "plugin": {"type": "object"},
    },
}
_TEMPLATE = {
    "type": "object",
    "properties": {
        "metadata": {
            "type": "object",
            "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": _STRING, "image": _STRING},
                    },
                }
            },
        },
    },
}
_SPEC = {
    "type": "object",
    "properties": {
        "replicas": _INT,
        "paused": _BOOL,
        "minReadySeconds": _INT,
        "revisionHistoryLimit": _INT,
        "progressDeadlineSeconds": _INT,
        "selector": {
            "type": "object",
            IMMUTABLE: True,
            "properties": {
                "matchLabels": _STRING_MAP,
                "matchExpressions": {"type": "array", "items": {"type": "object"}},
            },
        },
        "template": _TEMPLATE,
        "strategy": {
            "type": "object",
            "properties": {
                "canary": {
                    "type": "object",
                    "properties": {
                        "steps": {"type": "array", "items": _STEP},
                        "maxSurge": _INT_OR_STRING,
                        "maxUnavailable": _INT_OR_STRING,
                        "stableService": _STRING,
                        "canaryService": _STRING,
                        "trafficRouting": {"type": "object"},
                    },
                },
                "blueGreen": {"type": "object", "required": ["activeService"]},
            },
        },
    },
}
STATUS_SCHEMA: Schema = {
    "type": "object",
    "properties": {
        "abort": _BOOL,
        "promoteFull": _BOOL,
        "controllerPause": _BOOL,
        "currentStepIndex": _INT,
        "pauseConditions": {"type": "array", "items": {"type": "object"}},
        "stableRS": _STRING,
        "currentPodHash": _STRING,
        "phase": _STRING,
        "message": _STRING,
        "observedGeneration": _STRING,
    },
}
SCHEMA: Schema = {
    "type": "object",
    "required": ["spec"],
    "properties": {"spec": _SPEC, "status": STATUS_SCHEMA},
}

__all__ = ["ROLLOUTS", "SCHEMA", "STATUS_SCHEMA"]
