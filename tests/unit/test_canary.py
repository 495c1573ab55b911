"""Canary, pure: reading a canary and its stable, the route's shift, the decision and the plan.

The default scenario: in namespace shop, the stable ``checkout`` (3 replicas,
track=stable, Ready) serves; ``checkout-canary`` (1 replica, track=canary,
annotated ``rollbackd.io/canary-of: checkout``) rolled out 10 minutes ago and
breaches since 6 minutes ago. Each test changes one thing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.canary import (
    ANNOTATION_CANARY,
    ANNOTATION_CANARY_REPLICAS,
    CanaryFacts,
    canary_facts,
    route_shift,
    weight_ops,
)
from rollbackd.decide import decide
from rollbackd.guard import images, template_diff_paths
from rollbackd.model import (
    ANNOTATION_DRY_RUN,
    ANNOTATION_ROLLBACK,
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    RevisionInfo,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.state import RollbackState, encode_state
from rollbackd.strategies import PlanError
from rollbackd.strategies.canary import CanaryStrategy, recorded_gitops_owners
from rollbackd.strategies.factory import STRATEGIES, recorded

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CANARY = Target("shop", "checkout-canary")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def deployment(
    name: str, track: str, image: str, replicas: int = 3, ready: bool = True, **annotations: str
) -> dict[str, Any]:
    labels = {"app": "checkout", "track": track}
    available = replicas if ready else 0
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "resourceVersion": "41",
            "generation": 1,
            "annotations": {"deployment.kubernetes.io/revision": "4", **annotations},
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            "readyReplicas": available,
        },
    }


STABLE = deployment("checkout", "stable", "shop/checkout:1.4")


def canary(**annotations: str) -> dict[str, Any]:
    return deployment(
        "checkout-canary",
        "canary",
        "shop/checkout:1.5",
        1,
        **{"rollbackd.io/canary-of": "checkout", **annotations},
    )


def svc(name: str, **selector: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"app": "checkout", **selector}}}


SERVICES = [
    svc("checkout"),
    svc("checkout-stable", track="stable"),
    svc("checkout-canary", track="canary"),
]


def route(*rules: list[dict[str, Any]]) -> dict[str, Any]:
    rules = rules or (
        [
            {"name": "checkout-stable", "port": 80, "weight": 80},
            {"name": "checkout-canary", "port": 80, "weight": 20},
        ],
    )
    return {
        "metadata": {"name": "checkout", "resourceVersion": "7"},
        "spec": {"rules": [{"backendRefs": refs} for refs in rules]},
    }


def facts_of(
    target: dict[str, Any], deployments: list[dict[str, Any]] | None = None
) -> CanaryFacts:
    found = canary_facts(target, [STABLE, target] if deployments is None else deployments)
    assert found is not None
    return found


def cluster(found: CanaryFacts | None, **overrides: Any) -> ClusterFacts:
    template = canary()["spec"]["template"]
    current = RevisionInfo(
        revision=1,
        replicaset="checkout-canary-abc",
        uid="rs-uid",
        created_at=NOW - minutes(10),
        template=template,
        images=("shop/checkout:1.5",),
    )
    values: dict[str, Any] = {
        "target": CANARY,
        "exists": True,
        "template": template,
        "revisions": (current,),
        "rollout_started_at": NOW - minutes(10),
        "canary": found,
    }
    values.update(overrides)
    return ClusterFacts(**values)


def run(facts: ClusterFacts, policy: Policy | None = None) -> Decision:
    signal = Signal(
        target=CANARY,
        source=SignalSource.PROMETHEUS,
        name="error_ratio",
        status=SignalStatus.FIRING,
        started_at=NOW - minutes(6),
        observed_at=NOW,
        value=0.3,
        threshold=0.05,
    )
    return decide(signal, facts, History(), policy or Policy(), NOW)


# --- reading the cluster ----------------------------------------------------------------


def test_a_deployment_without_canary_of_is_not_a_canary() -> None:
    assert canary_facts(STABLE, [STABLE]) is None


def test_facts_name_the_stable_and_the_replicas_to_record() -> None:
    found = facts_of(canary())
    assert (found.canary, found.stable, found.replicas, found.route) == (
        "checkout-canary",
        "checkout",
        1,
        None,
    )
    assert found.problem is None and found.stable_revision == 4


@pytest.mark.parametrize(
    ("target", "deployments", "code", "words"),
    [
        (
            canary(**{"rollbackd.io/canary-of": "checkout-gone"}),
            None,
            "canary_stable_not_found",
            "does not exist",
        ),
        (
            canary(**{"rollbackd.io/canary-of": "checkout-canary"}),
            None,
            "canary_of_invalid",
            "the canary itself",
        ),
        (
            canary(**{"rollbackd.io/canary-of": " "}),
            None,
            "canary_of_invalid",
            "names no Deployment",
        ),
        (canary(**{"rollbackd.io/canary-route": ""}), None, "canary_route_invalid", "empty"),
        (
            canary(),
            [deployment("checkout", "stable", "x:1", ready=False)],
            "canary_stable_not_ready",
            "not Ready",
        ),
        (
            canary(),
            [deployment("checkout", "stable", "x:1", replicas=0)],
            "canary_stable_not_ready",
            "scaled to 0",
        ),
    ],
)
def test_bad_input_is_a_problem_the_decision_escalates_with_nothing_scaled(
    target: dict[str, Any], deployments: list[dict[str, Any]] | None, code: str, words: str
) -> None:
    found = facts_of(target, deployments)
    assert found.problem is not None and found.problem[0] == code and words in found.problem[1]
    decision = run(cluster(found))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, code)
    assert "nothing was scaled or re-weighted" in decision.reason


# --- the route's shift --------------------------------------------------------------------


def test_the_shift_gives_the_canary_0_and_the_stable_the_rules_total() -> None:
    shift = route_shift(route(), SERVICES, canary(), STABLE)
    assert not isinstance(shift, str)
    assert (shift.canary_service, shift.stable_service) == ("checkout-canary", "checkout-stable")
    assert shift.before == ((0, 1, 20), (0, 0, 80))
    assert shift.after == ((0, 1, 0), (0, 0, 100))
    assert weight_ops(shift.after) == [
        {"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
        {"op": "add", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100},
    ]


def test_absent_weights_count_as_1_and_rules_without_the_canary_are_left_alone() -> None:
    shift = route_shift(
        route(
            [{"name": "other", "port": 80, "weight": 5}],
            [{"name": "checkout-stable", "port": 80}, {"name": "checkout-canary", "port": 80}],
        ),
        SERVICES,
        canary(),
        STABLE,
    )
    assert not isinstance(shift, str)
    assert shift.after == ((1, 1, 0), (1, 0, 2))


def test_a_null_weight_is_the_default_1_not_a_crash() -> None:
    refs = [{"name": "checkout-stable", "weight": None}, {"name": "checkout-canary", "weight": 3}]
    shift = route_shift(route(refs), SERVICES, canary(), STABLE)
    assert not isinstance(shift, str) and shift.after == ((0, 1, 0), (0, 0, 4))


@pytest.mark.parametrize(
    ("rules", "services", "words"),
    [
        (
            [[{"name": "checkout-stable", "port": 80}]],
            SERVICES,
            "no backend for the canary's Service",
        ),
        ([[{"name": "checkout-canary", "port": 80}]], SERVICES, "no backend for the stable"),
        # The shared Service selects both: it is neither the canary's nor the stable's.
        ([[{"name": "checkout", "port": 80}]], SERVICES, "no backend for the canary's Service"),
        (
            [[{"name": "checkout-canary", "port": 80}, {"name": "x", "port": 80}]],
            [svc("checkout")],
            "none selects only",
        ),
    ],
)
def test_a_route_without_both_backends_cannot_be_shifted(
    rules: list[list[dict[str, Any]]], services: list[dict[str, Any]], words: str
) -> None:
    shift = route_shift(route(*rules), services, canary(), STABLE)
    assert isinstance(shift, str) and words in shift


# --- the decision ---------------------------------------------------------------------------


def test_a_breach_soon_after_the_canarys_rollout_scales_it_to_0() -> None:
    decision = run(cluster(facts_of(canary())))
    assert (decision.action, decision.reason_code) == (Action.ROLLBACK, "rollback")
    assert decision.reason == (
        "scale canary shop/checkout-canary 1 -> 0, stable checkout serving: error_ratio at 0.3 "
        "(threshold 0.05) began 4m after the canary's rollout"
    )


def test_a_weighted_canary_is_shifted_in_its_route() -> None:
    decision = run(cluster(facts_of(canary(**{"rollbackd.io/canary-route": "checkout"}))))
    assert decision.action is Action.ROLLBACK
    assert (
        "set the weight of canary shop/checkout-canary to 0 in HTTPRoute checkout"
        in decision.reason
    )


def test_a_canary_rolled_out_outside_the_change_window_is_not_a_recent_release() -> None:
    decision = run(cluster(facts_of(canary())), Policy(change_window=minutes(2)))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")


def test_a_canary_at_zero_already_is_skipped_so_its_recorded_replicas_stay() -> None:
    at_zero = deployment(
        "checkout-canary",
        "canary",
        "shop/checkout:1.5",
        0,
        **{"rollbackd.io/canary-of": "checkout"},
    )
    decision = run(cluster(facts_of(at_zero)))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "canary_out_of_traffic")
    with pytest.raises(PlanError) as refused:
        CanaryStrategy().plan(at_zero, [], None, {"deployments": [STABLE, at_zero]})
    assert refused.value.reason_code == "canary_out_of_traffic"


def test_dry_run_reports_the_scale_down_it_would_make() -> None:
    decision = run(cluster(facts_of(canary()), annotations={ANNOTATION_DRY_RUN: "true"}))
    assert decision.action is Action.DRY_RUN
    assert "would scale canary shop/checkout-canary 1 -> 0" in decision.reason


# --- the strategy's plan --------------------------------------------------------------------


def test_plan_and_first_write_record_the_replicas_and_scale_down_in_one_guarded_patch() -> None:
    strategy = CanaryStrategy()
    restore = strategy.plan(canary(), [], None, {"deployments": [STABLE, canary()]})
    assert restore.verify_target == Target("shop", "checkout")
    assert restore.changes["replicas_scaled"] == [
        {"deployment": "checkout-canary", "from": 1, "to": 0}
    ]
    assert "rollbackd.io/canary-replicas" in restore.summary
    state = encode_state(RollbackState("rb-1", Phase.ROLLING_BACK, 1, 1, NOW, NOW, "rollback"))
    ops = strategy.patch(canary(), restore, annotations={ANNOTATION_ROLLBACK: state})
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    assert ops[-1] == {"op": "replace", "path": "/spec/replicas", "value": 0}
    added = {op["path"].rsplit("/", 1)[-1]: op["value"] for op in ops if op["op"] == "add"}
    assert added[ANNOTATION_CANARY_REPLICAS.replace("/", "~1")] == "1"
    record = json.loads(added[ANNOTATION_CANARY.replace("/", "~1")])
    assert record["rollback_id"] == "rb-1" and record["stable"] == "checkout"


def test_the_guard_sees_only_the_image_change_whatever_else_the_canary_changed() -> None:
    target = canary()
    container = target["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"cpu": "2"}}  # outside the allow-list
    restore = CanaryStrategy().plan(target, [], None, {"deployments": [STABLE, target]})
    paths = template_diff_paths(target["spec"]["template"], restore.template)
    assert paths == ["spec.containers[app].image"]
    assert images(restore.template) == ("shop/checkout:1.4",)  # what serves afterwards


def test_a_weighted_plan_writes_no_replicas_and_records_the_weights() -> None:
    target = canary(**{"rollbackd.io/canary-route": "checkout"})
    context = {"deployments": [STABLE, target], "services": SERVICES, "route": route()}
    restore = CanaryStrategy().plan(target, [], None, context)
    assert restore.changes["weights_before"] == [[0, 1, 20], [0, 0, 80]]
    ops = CanaryStrategy().patch(target, restore, annotations={})
    assert not [op for op in ops if op["path"] == "/spec/replicas"]


def test_the_route_it_re_weights_is_an_object_whose_gitops_owner_is_paused_too() -> None:
    target = canary(**{"rollbackd.io/canary-route": "checkout"})
    routed = route()
    routed["metadata"]["labels"] = {"argocd.argoproj.io/instance": "shop-routing"}
    context = {"deployments": [STABLE, target], "services": SERVICES, "route": routed}

    restore = CanaryStrategy().plan(target, [], None, context)

    # A sync of the route's Application would put the canary's weight back.
    assert dict(restore.gitops_objects) == {"HTTPRoute shop/checkout": routed}
    record = dict(restore.changes["record"])
    assert record["route_owner"] == "argocd:shop-routing"
    recorded_target = {
        "metadata": {
            "namespace": "shop",
            "annotations": {
                ANNOTATION_ROLLBACK: encode_state(
                    RollbackState("rb-7", Phase.ROLLING_BACK, 1, 1, NOW, NOW, "rollback")
                ),
                ANNOTATION_CANARY: json.dumps({**record, "rollback_id": "rb-7"}),
            },
        }
    }
    assert recorded_gitops_owners(recorded_target) == [
        {"owner": "argocd:shop-routing", "of": "HTTPRoute shop/checkout"}
    ]


def test_a_canary_by_replicas_writes_no_other_object() -> None:
    restore = CanaryStrategy().plan(canary(), [], None, {"deployments": [STABLE, canary()]})
    assert dict(restore.gitops_objects) == {}


@pytest.mark.parametrize(
    ("target", "context", "code"),
    [
        (
            canary(**{"rollbackd.io/canary-route": "checkout"}),
            {"route": None},
            "canary_route_invalid",
        ),
        (canary(**{"rollbackd.io/canary-of": "nope"}), {}, "canary_stable_not_found"),
    ],
)
def test_plan_refuses_bad_input_before_any_write(
    target: dict[str, Any], context: dict[str, Any], code: str
) -> None:
    with pytest.raises(PlanError) as refused:
        CanaryStrategy().plan(target, [], None, {"deployments": [STABLE, target], **context})
    assert refused.value.reason_code == code


def test_the_factory_registers_canary_and_resumes_it_from_its_record() -> None:
    assert "canary" in STRATEGIES
    state = encode_state(RollbackState("rb-1", Phase.ROLLING_BACK, 1, 1, NOW, NOW, "rollback"))
    target = canary(
        **{ANNOTATION_ROLLBACK: state, ANNOTATION_CANARY: json.dumps({"rollback_id": "rb-1"})}
    )
    assert recorded(target).name == "canary"
    # Another rollback's leftover record is not this one's.
    other = canary(
        **{ANNOTATION_ROLLBACK: state, ANNOTATION_CANARY: json.dumps({"rollback_id": "rb-0"})}
    )
    assert recorded(other).name == "rolling"
