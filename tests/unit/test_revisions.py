"""Revision facts from Kubernetes JSON: start times, replacement, and what rollbackd restored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.model import ANNOTATION_RESTORED, Phase, Target
from rollbackd.revisions import cluster_facts, gitops_owner, start_times
from rollbackd.state import RollbackState, encode_state

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TARGET = Target("shop", "web")


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def rs(
    revision: int, image: str, pod_hash: str, created: datetime, history: str = ""
) -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if history:
        annotations["deployment.kubernetes.io/revision-history"] = history
    return {
        "metadata": {
            "name": f"web-{pod_hash}",
            "creationTimestamp": stamp(created),
            "annotations": annotations,
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": pod_hash}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "init:1"}],
                    "containers": [{"name": "app", "image": image}],
                },
            }
        },
    }


def deployment(image: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "uid": "u", "generation": 3, "annotations": annotations or {}},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "init:1"}],
                    "containers": [{"name": "app", "image": image}],
                },
            }
        },
    }


def test_a_new_revision_began_when_its_replicaset_was_created() -> None:
    history = [rs(1, "web:1", "a", T0), rs(2, "web:2", "b", T0 + timedelta(hours=1))]
    facts = cluster_facts(TARGET, deployment("web:2"), history, now=T0 + timedelta(hours=2))
    assert facts.rollout_started_at == T0 + timedelta(hours=1)
    current, previous = facts.revisions
    assert (current.revision, previous.revision) == (2, 1)
    assert previous.replaced_at == T0 + timedelta(hours=1)
    assert current.images == ("web:2", "init:1")  # the guard's order: containers first


def test_a_reused_replicaset_began_when_rollbackd_restored_it() -> None:
    restored_at = T0 + timedelta(hours=3)
    state = RollbackState(
        "rb-1", Phase.ROLLBACK_COMPLETED, 2, 1, restored_at, restored_at, "rollback"
    )
    annotations = {
        "rollbackd.io/rollback": encode_state(state),
        ANNOTATION_RESTORED: json.dumps(
            {"rollback_id": "rb-1", "template_hash": "a", "revision": 3}
        ),
    }
    reused = rs(3, "web:1", "a", T0, history="1")
    replicasets = [reused, rs(2, "web:2", "b", T0 + timedelta(hours=1))]
    starts = start_times(deployment("web:1", annotations), replicasets)
    assert starts[3] == restored_at and starts[1] == T0
    facts = cluster_facts(TARGET, deployment("web:1", annotations), replicasets, now=restored_at)
    assert facts.revisions[0].restored_by == "rb-1"
    assert facts.revisions[1].replaced_at == restored_at


def test_a_missing_deployment_is_a_fact_too() -> None:
    assert not cluster_facts(TARGET, None, [], now=T0).exists


def test_gitops_owners_are_named_by_tool() -> None:
    argo = {
        "metadata": {
            "annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"}
        }
    }
    flux = {"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}}
    assert (gitops_owner(argo), gitops_owner(flux)) == ("argocd:shop", "flux:kustomization/apps")
    assert gitops_owner({"metadata": {}}) is None
