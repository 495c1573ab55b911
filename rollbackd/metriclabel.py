"""The metric label that names a workload (``prometheus.deployment_label``).

Series name the workload they measure with a label: ``deployment`` for most
exporters and rollbackd's defaults, often ``rollout`` for an Argo Rollouts
fleet or ``app`` elsewhere. rollbackd's own queries group by
``(namespace, <label>)``, it reads the workload's name from that label in
every answer, narrows verification queries to one target with it, and fills
``{deployment_label}`` in every query template (signals, data assertions,
the postmortem's impact) with it. One label, not a list: a query must be
grouped by a label known before it is sent.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_DEPLOYMENT_LABEL", "LABEL_PLACEHOLDER", "label_problem"]

DEFAULT_DEPLOYMENT_LABEL = "deployment"
# The placeholder filled with the label in query templates.
LABEL_PLACEHOLDER = "deployment_label"

# Prometheus's label name syntax; a leading "__" is reserved for its internal labels.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels the built-in queries already group by for something else.
_TAKEN = {
    "namespace": "it names the namespace",
    "le": "it is the histogram bucket label the latency signal groups by",
}


def label_problem(name: str) -> str | None:
    """Why ``name`` cannot be the workload label, or None when it can."""
    if not _LABEL_NAME.fullmatch(name):
        return f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    if name.startswith("__"):
        return f"{name!r}: label names starting with __ are reserved by Prometheus"
    if name in _TAKEN:
        return f"{name!r} cannot name the workload: {_TAKEN[name]}"
    return None
