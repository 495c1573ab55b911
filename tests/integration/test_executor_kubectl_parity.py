"""rollbackd's rolling rollback leaves a Deployment exactly as ``kubectl rollout undo`` does.

Two identical Deployments go v1 -> v2; the real kubectl (v1.33) undoes one,
rollbackd's plan + patch undoes the other. Their templates, the ReplicaSet
reuse and the revision bookkeeping must come out the same.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from rollbackd.kube import Kube
from rollbackd.model import ANNOTATION_REVISION, ANNOTATION_REVISION_HISTORY, Target
from rollbackd.strategies import PlanError, RolloutStatus
from rollbackd.strategies.rolling import RollingStrategy, select_replicaset, templates_equal
from rollbackd.testing.kubesim import KubeSim
from tests.kubesim.kubectl_helpers import make_kubectl

pytestmark = pytest.mark.integration

NAMESPACE = "default"


def manifest(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def v1_then_v2(apps: client.AppsV1Api, kube: Kube, name: str) -> None:
    await apps.create_namespaced_deployment(NAMESPACE, manifest(name, "web:1.0"))
    outcome = await kube.wait_rollout_complete(Target(NAMESPACE, name), timeout=20)
    assert outcome.status is RolloutStatus.COMPLETE, outcome.message
    await apps.patch_namespaced_deployment(
        name,
        NAMESPACE,
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:2.0"}],
        _content_type="application/json-patch+json",
    )
    outcome = await kube.wait_rollout_complete(Target(NAMESPACE, name), timeout=20)
    assert outcome.status is RolloutStatus.COMPLETE, outcome.message


def renamed(template: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The template with the Deployment's own name replaced, to compare two Deployments."""
    result: dict[str, Any] = json.loads(json.dumps(template).replace(name, "NAME"))
    return result


def revisions_by_image(sim: KubeSim, name: str) -> dict[str, tuple[str, str]]:
    result = {}
    for rs in sim.store.list("apps/v1/replicasets", NAMESPACE):
        if not rs["metadata"]["name"].startswith(f"{name}-"):
            continue
        annotations = rs["metadata"].get("annotations") or {}
        image = rs["spec"]["template"]["spec"]["containers"][0]["image"]
        result[image] = (
            annotations.get(ANNOTATION_REVISION, ""),
            annotations.get(ANNOTATION_REVISION_HISTORY, ""),
        )
    return result


async def test_rollback_matches_kubectl_rollout_undo(tmp_path: pathlib.Path) -> None:
    async with KubeSim(kubeconfig_path=tmp_path / "kubeconfig", pod_ready_delay=0.1) as sim:
        kubectl = await make_kubectl(sim.kubeconfig, tmp_path / "cache")
        api = await config.new_client_from_config(config_file=str(sim.kubeconfig))
        async with api, await Kube.connect(kubeconfig=str(sim.kubeconfig)) as kube:
            apps = client.AppsV1Api(api)
            await asyncio.gather(
                v1_then_v2(apps, kube, "by-kubectl"), v1_then_v2(apps, kube, "ours")
            )

            await kubectl.run("rollout", "undo", "deployment/by-kubectl", "-n", NAMESPACE)

            target = Target(NAMESPACE, "ours")
            deployment = await kube.read_deployment(target)
            chosen = select_replicaset(deployment, await kube.list_replicasets(target), None)
            strategy = RollingStrategy()
            await kube.patch_deployment(
                target, strategy.build_patch(deployment, chosen, annotations={})
            )

            for name in ("by-kubectl", "ours"):
                outcome = await kube.wait_rollout_complete(Target(NAMESPACE, name), timeout=20)
                assert outcome.status is RolloutStatus.COMPLETE, outcome.message

            theirs = await kube.read_deployment(Target(NAMESPACE, "by-kubectl"))
            ours = await kube.read_deployment(target)
            # Semantically equal: kubectl also sends `creationTimestamp: null`.
            assert templates_equal(
                renamed(ours["spec"]["template"], "ours"),
                renamed(theirs["spec"]["template"], "by-kubectl"),
            )
            assert (
                ours["spec"]["template"]["spec"]["containers"]
                == theirs["spec"]["template"]["spec"]["containers"]
            )
            assert ours["metadata"]["annotations"] == theirs["metadata"]["annotations"]
            expected = {"web:1.0": ("3", "1"), "web:2.0": ("2", "")}
            assert revisions_by_image(sim, "by-kubectl") == expected
            assert revisions_by_image(sim, "ours") == expected


def rs(revision: int, image: str, uid: str = "dep-uid") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{revision}",
            "annotations": {ANNOTATION_REVISION: str(revision)},
            "ownerReferences": [{"kind": "Deployment", "uid": uid, "controller": True}],
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": f"h{revision}"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            }
        },
    }


DEPLOYMENT = {
    "metadata": {"uid": "dep-uid", "resourceVersion": "7", "annotations": {}},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:3.0"}]},
        }
    },
}


def test_default_target_is_the_second_highest_revision_like_kubectl() -> None:
    chosen = select_replicaset(
        DEPLOYMENT, [rs(1, "web:1.0"), rs(3, "web:3.0"), rs(2, "web:2.0")], None
    )
    assert chosen["metadata"]["name"] == "web-2"


def test_replicasets_of_another_owner_are_never_chosen() -> None:
    with pytest.raises(PlanError) as caught:
        select_replicaset(DEPLOYMENT, [rs(3, "web:3.0"), rs(2, "web:2.0", uid="other")], 2)
    assert caught.value.reason_code == "revision_not_found"


def test_a_revision_equal_to_the_current_template_is_not_a_rollback() -> None:
    with pytest.raises(PlanError) as caught:
        select_replicaset(DEPLOYMENT, [rs(3, "web:3.0"), rs(2, "web:3.0")], 2)
    assert caught.value.reason_code == "already_at_revision"


def test_no_history_means_no_previous_revision() -> None:
    with pytest.raises(PlanError) as caught:
        select_replicaset(DEPLOYMENT, [rs(3, "web:3.0")], None)
    assert caught.value.reason_code == "no_previous_revision"


def test_the_patch_is_guarded_and_drops_the_hash_label() -> None:
    ops = RollingStrategy().build_patch(
        DEPLOYMENT, rs(2, "web:2.0"), annotations={"rollbackd.io/rollback": "{}"}
    )
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert ops[1]["value"]["metadata"]["labels"] == {"app": "web"}
    assert ops[2]["value"]["rollbackd.io/rollback"] == "{}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"observedGeneration": 1}, RolloutStatus.PROGRESSING),
        ({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 2}, RolloutStatus.PROGRESSING),
        (
            {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2},
            RolloutStatus.PROGRESSING,
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
            RolloutStatus.PROGRESSING,
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
            RolloutStatus.COMPLETE,
        ),
        (
            {
                "observedGeneration": 2,
                "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
            },
            RolloutStatus.FAILED,
        ),
    ],
    ids=["not-observed", "updating", "old-pending", "unavailable", "complete", "deadline"],
)
def test_rollout_status_follows_kubectl(status: dict[str, Any], expected: RolloutStatus) -> None:
    deployment = {"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 2}}
    assert RollingStrategy().rollout_status({**deployment, "status": status}).status is expected
