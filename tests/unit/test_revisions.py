"""Revision facts from Kubernetes JSON: start times, replacement, and what rollbackd restored."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbackd.decide import decide
from rollbackd.model import (
    ANNOTATION_RESTORED,
    Action,
    History,
    Phase,
    Policy,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.revisions import cluster_facts, gitops_owner, start_times, strip_hash
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


def test_a_revision_shares_its_replicasets_pod_spec_and_only_drops_the_hash_label() -> None:
    old = rs(1, "web:1", "a", T0)
    facts = cluster_facts(
        TARGET, deployment("web:2"), [old, rs(2, "web:2", "b", T0)], now=T0 + timedelta(hours=1)
    )
    template = facts.revisions[1].template
    assert template["spec"] is old["spec"]["template"]["spec"], "no copy of the pod spec"
    assert template["metadata"]["labels"] == {"app": "web"}
    assert old["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "a"
    assert strip_hash({"metadata": None, "spec": {}}) == {"metadata": None, "spec": {}}


def test_a_decision_over_cached_objects_leaves_them_as_they_were() -> None:
    """The cache's objects are shared with the facts: no reader may change them."""
    now = T0 + timedelta(minutes=10)
    live = deployment("web:2")
    replicasets = [rs(1, "web:1", "a", T0 - timedelta(days=1)), rs(2, "web:2", "b", T0)]
    before = copy.deepcopy((live, replicasets))
    facts = cluster_facts(TARGET, live, replicasets, now=now)
    breach = Signal(
        target=TARGET,
        source=SignalSource.PROMETHEUS,
        name="error_ratio",
        status=SignalStatus.FIRING,
        started_at=now - timedelta(minutes=1),
        observed_at=now,
        value=0.2,
        threshold=0.05,
        key="prom:shop/web:error_ratio",
    )
    decision = decide(breach, facts, History(), Policy(), now)
    assert decision.action is Action.ROLLBACK, decision.reason
    assert (live, replicasets) == before
