"""The pure parts of kubesim's Argo Rollouts and HTTPRoute support: canary arithmetic, phases,
spec checks and the CRD schema checker."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rollbackd.testing.kubesim import argorollouts, crdschema, httproutes
from rollbackd.testing.kubesim.controllers import canary
from rollbackd.testing.kubesim.controllers.rolloutspec import duration_seconds, invalid_spec

from .crd_helpers import rollout_manifest, route_manifest


@pytest.mark.parametrize(
    ("replicas", "weight", "surge", "expected"),
    [
        # The examples documented on upstream's approximateWeightedCanaryStableReplicaCounts
        # and CalculateReplicaCountsForBasicCanary (the end state, without pacing).
        (10, 10, 1, (1, 9)),
        (10, 30, 3, (3, 7)),
        (1, 5, 1, (1, 1)),
        (1, 95, 1, (1, 1)),
        (3, 50, 0, (2, 1)),  # a tie picks the larger canary
        (4, 25, 1, (1, 3)),
        (4, 0, 1, (0, 4)),
        (4, 100, 1, (4, 0)),
        (0, 50, 1, (0, 0)),
        # Upstream's "should not get here": the ceiling is every pod and the
        # floor is tied (50 x 99 % = 49.5), with no surge, so no option is
        # left and the canary gets none. kubesim keeps that edge as upstream has it.
        (50, 99, 0, (0, 50)),
    ],
)
def test_replica_counts_approximate_the_weight(
    replicas: int, weight: int, surge: int, expected: tuple[int, int]
) -> None:
    assert canary.replica_counts(replicas, weight, surge) == expected


@given(st.integers(2, 50), st.integers(1, 99), st.integers(0, 5))
def test_a_partial_weight_keeps_both_sides_and_never_exceeds_one_surge_pod(
    replicas: int, weight: int, surge: int
) -> None:
    # Upstream's one fall-through (an example above): every pod at the ceiling, a tied floor, no surge.
    assume(
        surge > 0
        or not (
            math.ceil(replicas * weight / 100) == replicas
            and math.modf(replicas * weight / 100)[0] == 0.5
        )
    )
    new, stable = canary.replica_counts(replicas, weight, surge)
    assert new >= 1 and stable >= 1
    assert replicas <= new + stable <= replicas + (1 if surge else 0)


def with_status(ro: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {**ro, "status": status}


def test_the_weight_follows_the_steps_and_an_abort_is_zero() -> None:
    ro = rollout_manifest(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}])
    assert canary.current_weight(with_status(ro, currentStepIndex=0)) == 20
    assert canary.current_weight(with_status(ro, currentStepIndex=1)) == 20
    assert canary.current_weight(with_status(ro, currentStepIndex=2)) == 60
    assert canary.current_weight(with_status(ro, currentStepIndex=3)) == 100
    assert canary.current_weight(with_status(ro, currentStepIndex=2, abort=True)) == 0
    assert canary.max_surge(ro) == 1  # 25 % of 4, rounded up


def test_phases_in_upstream_order() -> None:
    ro = rollout_manifest()
    done = {"updatedReplicas": 4, "availableReplicas": 4, "replicas": 4, "stableRS": "a"}
    assert canary.phase(ro, {**done, "currentPodHash": "a"}) == ("Healthy", "")
    assert canary.phase(ro, {**done, "currentPodHash": "b"})[0] == "Progressing"
    paused = {**done, "pauseConditions": [{"reason": "CanaryPauseStep"}]}
    assert canary.phase(ro, paused) == ("Paused", "CanaryPauseStep")
    aborted = {
        **paused,
        "conditions": [
            {
                "type": "Progressing",
                "reason": "RolloutAborted",
                "message": "Rollout aborted update to revision 2",
            }
        ],
    }
    assert canary.phase(ro, aborted) == (
        "Degraded",
        "RolloutAborted: Rollout aborted update to revision 2",
    )


@pytest.mark.parametrize(
    "spec",
    [
        None,
        "text",
        {"replicas": "four"},
        {"replicas": True},
        {"selector": "app=web"},
        {"selector": {"matchLabels": {"app": "web"}}, "strategy": "canary"},
        {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}},
            "strategy": {"canary": {"steps": [{"setWeight": "half"}, {"pause": "1s"}]}},
        },
    ],
)
def test_junk_written_past_the_schema_is_reported_never_raised(spec: Any) -> None:
    message = invalid_spec({"metadata": {"name": "web"}, "spec": spec})
    assert message is not None and message.startswith("spec")


def test_durations_the_controller_reads() -> None:
    assert duration_seconds(30) == 30
    assert duration_seconds("30") == 30
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("soon") is None


def test_schema_defaults_then_checks_as_apiextensions_does() -> None:
    route = route_manifest("web", [("a", 1)])
    del route["spec"]["rules"][0]["backendRefs"][0]["weight"]
    crdschema.apply_defaults(httproutes.SCHEMA, route)
    assert route["spec"]["rules"][0]["backendRefs"][0]["weight"] == 1
    assert crdschema.validate(httproutes.SCHEMA, route) == []

    bare = {"metadata": {"name": "web"}, "spec": {}}
    crdschema.apply_defaults(httproutes.SCHEMA, bare)
    assert bare["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]

    bad = route_manifest("web", [("a", 1)] * 17)
    bad["spec"]["hostnames"] = ["Not_A_Host"]
    fields = {cause["field"]: cause for cause in crdschema.validate(httproutes.SCHEMA, bad)}
    assert (
        fields["spec.rules[0].backendRefs"]["message"] == "Too many: 17: must have at most 16 items"
    )
    assert "should match" in fields["spec.hostnames[0]"]["message"]
    assert crdschema.validate(httproutes.SCHEMA, {"metadata": {}}) == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec"}
    ]


def test_status_fields_are_typed_and_the_selector_is_immutable() -> None:
    ro = rollout_manifest()
    causes = crdschema.validate(argorollouts.SCHEMA, {**ro, "status": {"currentStepIndex": "2"}})
    assert [c["field"] for c in causes] == ["status.currentStepIndex"]
    moved = rollout_manifest()
    moved["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    [cause] = crdschema.immutable_changes(argorollouts.SCHEMA, moved, ro)
    assert cause["field"] == "spec.selector"
    assert cause["message"] == 'Invalid value: "object": .spec.selector is immutable'
