"""What the watch cache keeps of each object: everything its readers read, and no more.

A slim Deployment and its slim ReplicaSets must give every reader the same
answer as the whole objects: the decision's cluster facts (revisions,
templates, annotations, rollback state, GitOps owner), ``kubectl rollout
status``, the pod selector, the Services a template matches and the
pod-health scan's Progressing time. Equal pod specs are one object; hostile
shapes are kept as they come or left out, never a crash.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.kube.client import selector_query
from rollbackd.kube.rollout import deployment_status
from rollbackd.kube.slim import LAST_APPLIED, Slim, share_pod_spec
from rollbackd.model import ANNOTATION_RESTORED, Phase, Target
from rollbackd.readiness import service_selects
from rollbackd.records import annotated_targets
from rollbackd.revisions import cluster_facts
from rollbackd.sources.kubernetes import _progressing_updated
from rollbackd.state import RollbackState, encode_state

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TARGET = Target("shop", "web")
DEPLOYMENT_UID = "d-uid"


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_spec(image: str) -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "app",
                "image": image,
                "env": [{"name": "MODE", "value": "fast"}],
                "resources": {},
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "restartPolicy": "Always",
        "securityContext": {},
    }


def managed_fields() -> list[dict[str, Any]]:
    return [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]


def deployment(image: str = "web:2.0", *, reason: str = "NewReplicaSetAvailable") -> dict[str, Any]:
    started = NOW - timedelta(minutes=2)
    state = RollbackState("rb-1", Phase.VERIFYING, 2, 1, started, started, "rollback")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": DEPLOYMENT_UID,
            "resourceVersion": "981",
            "generation": 4,
            "creationTimestamp": stamp(NOW - timedelta(days=9)),
            "labels": {"app": "web", "argocd.argoproj.io/instance": "shop-web"},
            "annotations": {
                "deployment.kubernetes.io/revision": "2",
                "rollbackd.io/team": "payments",
                "rollbackd.io/smoke-checks": "health",
                LAST_APPLIED: json.dumps({"spec": {"replicas": 3}}),
                "rollbackd.io/rollback": encode_state(state),
                ANNOTATION_RESTORED: json.dumps({"rollback_id": "rb-0", "template_hash": "h1"}),
            },
            "managedFields": managed_fields(),
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"team": "payments"}},
                "spec": pod_spec(image),
            },
            "strategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 4,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 2,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": stamp(NOW - timedelta(minutes=1)),
                    "lastTransitionTime": stamp(NOW - timedelta(days=9)),
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": reason,
                    "message": 'ReplicaSet "web-h2" is progressing.',
                    "lastUpdateTime": stamp(NOW - timedelta(minutes=3)),
                    "lastTransitionTime": stamp(NOW - timedelta(minutes=3)),
                },
            ],
        },
    }


def replicaset(revision: int, image: str, pod_hash: str, age: timedelta) -> dict[str, Any]:
    template = {
        "metadata": {
            "labels": {"app": "web", "pod-template-hash": pod_hash},
            "annotations": {"team": "payments"},
        },
        "spec": pod_spec(image),
    }
    return {
        "metadata": {
            "name": f"web-{pod_hash}",
            "namespace": "shop",
            "uid": f"rs-{pod_hash}",
            "resourceVersion": "77",
            "creationTimestamp": stamp(NOW - age),
            "labels": {"app": "web", "pod-template-hash": pod_hash},
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "deployment.kubernetes.io/revision-history": "1" if revision == 3 else "",
                "deployment.kubernetes.io/desired-replicas": "3",
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm"},
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": DEPLOYMENT_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                },
            ],
            "managedFields": managed_fields(),
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": pod_hash}},
            "template": template,
        },
        "status": {"replicas": 3, "availableReplicas": 2, "readyReplicas": 3},
    }


def fleet() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return deployment(), [
        replicaset(2, "web:2.0", "h2", timedelta(minutes=3)),
        replicaset(1, "web:1.0", "h1", timedelta(days=9)),
    ]


def test_the_decision_sees_the_same_cluster_facts_from_slim_objects() -> None:
    whole, replicasets = fleet()
    slim = Slim()
    facts = cluster_facts(TARGET, whole, replicasets, now=NOW)
    from_slim = cluster_facts(
        TARGET, slim.deployment(whole), [slim.replicaset(rs) for rs in replicasets], now=NOW
    )
    # All but kubectl's copy of the object, which no reader of the annotations asks for.
    annotations = {k: v for k, v in facts.annotations.items() if k != LAST_APPLIED}
    assert from_slim == dataclasses.replace(facts, annotations=annotations)
    assert LAST_APPLIED in facts.annotations
    # The facts are not trivially empty: the comparison could fail.
    assert [r.revision for r in facts.revisions] == [2, 1]
    assert facts.rollout_started_at == NOW - timedelta(minutes=3)
    assert facts.gitops_owner == "argocd:shop-web"
    assert "rollbackd.io/rollback" in facts.annotations


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: None, "progressing"),
        (lambda d: d["status"].update(availableReplicas=3, replicas=3), "complete"),
        (lambda d: d["metadata"].update(generation=5), "progressing"),
        (
            lambda d: d["status"]["conditions"][1].update(reason="ProgressDeadlineExceeded"),
            "failed",
        ),
    ],
)
def test_rollout_status_reads_the_same_from_a_slim_deployment(change: Any, expected: str) -> None:
    whole = deployment()
    change(whole)
    outcome = deployment_status(Slim().deployment(whole))
    assert outcome == deployment_status(whole)
    assert outcome.status == expected


def test_selector_services_and_the_pod_health_scan_read_the_same() -> None:
    whole = deployment()
    slim = Slim().deployment(whole)
    assert selector_query(slim) == selector_query(whole) == [("labelSelector", "app=web")]
    service = {"spec": {"selector": {"app": "web"}}}
    other = {"spec": {"selector": {"app": "api"}}}
    assert [service_selects(slim, s) for s in (service, other)] == [True, False]
    assert (
        _progressing_updated(slim)
        == _progressing_updated(whole)
        == stamp(NOW - timedelta(minutes=3))
    )


def test_what_nobody_reads_is_not_kept() -> None:
    whole, replicasets = fleet()
    slim = Slim()
    kept = slim.deployment(whole)
    assert LAST_APPLIED not in kept["metadata"]["annotations"]
    assert "managedFields" not in kept["metadata"]
    assert [c["type"] for c in kept["status"]["conditions"]] == ["Progressing"]
    assert "message" not in kept["status"]["conditions"][0]
    assert set(kept["spec"]) == {"replicas", "selector", "template"}
    rs = slim.replicaset(replicasets[0])
    assert set(rs["metadata"]["annotations"]) == {
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
    }
    assert [ref["kind"] for ref in rs["metadata"]["ownerReferences"]] == ["Deployment"]
    assert set(rs["spec"]) == {"template"} and set(rs["status"]) == {
        "replicas",
        "availableReplicas",
    }
    # The whole template, so a comparison with a fresh read sees no difference.
    assert rs["spec"]["template"] == replicasets[0]["spec"]["template"]
    assert len(json.dumps(kept)) < len(json.dumps(whole)) * 0.7


def test_an_argo_rollouts_replicaset_keeps_the_hash_label_its_facts_name_it_by() -> None:
    """rollbackd.argo tells a Rollout's stable and canary apart by this label alone."""
    _, replicasets = fleet()
    argo = copy.deepcopy(replicasets[0])
    argo["metadata"]["labels"] = {"app": "web", "rollouts-pod-template-hash": "6d4f8c"}
    slim = Slim()
    assert slim.replicaset(argo)["metadata"]["labels"] == {"rollouts-pod-template-hash": "6d4f8c"}
    plain = copy.deepcopy(replicasets[0])
    plain["metadata"]["labels"] = {"app": "web", "pod-template-hash": "abc"}
    assert "labels" not in slim.replicaset(plain)["metadata"]


def test_equal_pod_specs_are_one_object_and_different_ones_are_not() -> None:
    slim = Slim()
    first = slim.deployment(deployment("web:2.0"))
    second = slim.deployment(deployment("web:2.0"))
    third = slim.deployment(deployment("web:3.0"))
    spec = first["spec"]["template"]["spec"]
    assert second["spec"]["template"]["spec"] is spec
    assert third["spec"]["template"]["spec"] is not spec
    assert third["spec"]["template"]["spec"]["containers"][0]["image"] == "web:3.0"
    # Labels are shared when equal, and stay the object's own values.
    assert second["metadata"]["labels"] is first["metadata"]["labels"]
    selector = first["spec"]["selector"]["matchLabels"]
    assert selector is first["spec"]["template"]["metadata"]["labels"]
    assert selector == {"app": "web"} and first["metadata"]["labels"]["app"] == "web"


def test_a_differing_spec_with_the_same_images_is_not_shared() -> None:
    slim = Slim()
    base = deployment()
    changed = copy.deepcopy(base)
    changed["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "slow"
    a, b = slim.deployment(base), slim.deployment(changed)
    assert a["spec"]["template"]["spec"] is not b["spec"]["template"]["spec"]
    assert b["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "slow"


def test_the_pool_is_bounded_and_a_family_still_shares() -> None:
    slim = Slim(specs=2)
    rs = slim.replicaset(replicaset(2, "web:2.0", "h2", timedelta(minutes=3)))
    for n in range(5):  # push web:2.0 out of the pool
        slim.deployment(deployment(f"other:{n}"))
    mine = slim.deployment(deployment("web:2.0"))
    assert mine["spec"]["template"]["spec"] is not rs["spec"]["template"]["spec"]
    share_pod_spec(mine, [None, rs])
    assert mine["spec"]["template"]["spec"] is rs["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "hostile",
    [
        {},
        {"metadata": None, "spec": None, "status": None},
        {"metadata": {"labels": {"n": 1}, "annotations": {"a": None}, "ownerReferences": "x"}},
        {"spec": {"template": "not a template", "selector": {"matchLabels": None}}},
        {"spec": {"template": {"metadata": None, "spec": {"containers": "x"}}}},
        {"status": {"conditions": "x"}},
        {"status": {"conditions": [None, {"type": "Progressing"}]}},
    ],
)
def test_hostile_shapes_are_kept_as_they_come_or_left_out(hostile: dict[str, Any]) -> None:
    slim = Slim()
    kept = slim.deployment(hostile)
    again = slim.replicaset(hostile)
    assert set(kept) == {"metadata", "spec", "status"} and "metadata" in again
    # Readers cope with what is kept exactly as with the whole object.
    assert deployment_status(kept) == deployment_status(hostile if hostile.get("metadata") else {})
    facts = cluster_facts(TARGET, kept, [again], now=NOW)
    assert facts.exists and facts.revisions == ()


def test_the_resume_scan_finds_exactly_the_deployments_with_a_rollback_state() -> None:
    slim = Slim()
    with_state = slim.deployment(deployment())
    plain = deployment()
    del plain["metadata"]["annotations"]["rollbackd.io/rollback"]
    cached = [(("shop", "web"), with_state), (("shop", "api"), slim.deployment(plain))]
    cached.append((("shop", "bare"), slim.deployment({"metadata": {"name": "bare"}})))
    assert annotated_targets(cached) == [TARGET]
