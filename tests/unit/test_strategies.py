"""The Strategy interface: the factory, and the rolling strategy's plan and status."""

from __future__ import annotations

from typing import Any

import pytest

from rollbackd.strategies import PlanError, RolloutStatus, Strategy
from rollbackd.strategies.factory import DEFAULT, by_name
from rollbackd.strategies.rolling import RollingStrategy

UID = "d-uid"


def template(image: str, pod_hash: str | None = None) -> dict[str, Any]:
    labels = {"app": "web"} | ({"pod-template-hash": pod_hash} if pod_hash else {})
    return {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def rs(revision: int, image: str, pod_hash: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{pod_hash}",
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"controller": True, "uid": UID}],
        },
        "spec": {"template": template(image, pod_hash)},
    }


DEPLOYMENT = {
    "metadata": {"name": "web", "uid": UID, "resourceVersion": "7"},
    "spec": {"template": template("web:3")},
}
HISTORY = [rs(1, "web:1", "h1"), rs(2, "web:2", "h2"), rs(3, "web:3", "h3")]


def test_the_factory_knows_the_rolling_strategy_by_name() -> None:
    strategy: Strategy = by_name(DEFAULT)
    assert isinstance(strategy, RollingStrategy) and strategy.name == "rolling"
    with pytest.raises(KeyError, match=r"unknown strategy 'recreate'.*rolling"):
        by_name("recreate")


def test_rolling_plans_the_previous_revision_and_predicts_its_new_number() -> None:
    restore = RollingStrategy().plan(DEPLOYMENT, HISTORY, None)
    assert (restore.to_revision, restore.template_hash, restore.predicted_revision) == (2, "h2", 4)
    # The template that will run: the old one without the controller's hash label.
    assert restore.template == template("web:2")


def test_rolling_refuses_a_plan_with_nothing_to_restore() -> None:
    with pytest.raises(PlanError) as caught:
        RollingStrategy().plan(DEPLOYMENT, HISTORY[2:], None)
    assert caught.value.reason_code == "no_previous_revision"


def test_the_patch_is_guarded_and_restores_the_planned_template() -> None:
    strategy = RollingStrategy()
    restore = strategy.plan(DEPLOYMENT, HISTORY, 1)
    ops = strategy.patch(DEPLOYMENT, restore, annotations={"rollbackd.io/rollback": "{}"})
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert ops[1] == {"op": "replace", "path": "/spec/template", "value": template("web:1")}
    assert ops[2]["value"]["rollbackd.io/rollback"] == "{}"


def test_status_is_kubectls_rollout_status() -> None:
    done = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 1}}
    done["status"] = {"updatedReplicas": 1, "replicas": 1, "availableReplicas": 1}
    assert RollingStrategy().status(done).status is RolloutStatus.COMPLETE
    done["status"] = {"updatedReplicas": 0, "replicas": 1, "availableReplicas": 1}
    assert RollingStrategy().status(done).status is RolloutStatus.PROGRESSING
