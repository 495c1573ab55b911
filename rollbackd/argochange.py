"""The change an Argo Rollouts abort undoes, pure: the journal's ``plan`` event of an abort.

The Deployment path journals both pod templates when it plans
(:mod:`rollbackd.strategies.deployment`), so the postmortem shows what the bad
revision changed after its ReplicaSet is gone. An abort's plan names
ReplicaSets, not templates: this reads the canary's (the bad version) and the
stable's (the restored one) templates from their ReplicaSets, in the same
compact, secret-masked form and under the same keys.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from rollbackd.argo import HASH_LABEL, replicasets_by_name
from rollbackd.guard import images, template_diff_paths
from rollbackd.postmortem.change import compact_template
from rollbackd.strategies.argorollouts import ARGO_ROLLOUTS, AbortPlan

__all__ = ["REVISION_ANNOTATION", "abort_plan_event"]

# The Argo Rollouts controller numbers a Rollout's ReplicaSets here.
REVISION_ANNOTATION = "rollout.argoproj.io/revision"


def _template(rs: Mapping[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template without the controller's hash label ({} when absent)."""
    template = (rs.get("spec") or {}).get("template")
    if not isinstance(template, Mapping):
        return {}
    result = copy.deepcopy(dict(template))
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)  # differs by construction: not part of the change
    return result


def _revision(rs: Mapping[str, Any]) -> int | None:
    value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def abort_plan_event(plan: AbortPlan, replicasets: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """The message and data of the ``plan`` event of ``plan``, from the Rollout's ReplicaSets.

    A ReplicaSet not found (deleted, or a hostile object) leaves its side
    empty: the templates are then not journaled and the postmortem falls back
    to the images it has, or says the change was not recorded.
    """
    named = replicasets_by_name(replicasets)
    canary, stable = named.get(plan.canary_rs) or {}, named.get(plan.stable_rs) or {}
    bad, restored = _template(canary), _template(stable)
    data: dict[str, Any] = {
        "replicaset": plan.stable_rs,
        "template_hash": plan.stable_hash,
        "diff": template_diff_paths(bad, restored) if bad and restored else [],
        "images_from": list(images(bad)),
        "images_to": list(images(restored)),
        "from_revision": _revision(canary),
        "to_revision": _revision(stable),
        "strategy": ARGO_ROLLOUTS,
        "changes": plan.changes(),
    }
    if bad and restored:
        data["templates"] = {"bad": compact_template(bad), "restored": compact_template(restored)}
    return plan.summary, data
