"""Blue-green, pure: reading a Service's colours, the decision, and the strategy's plan.

The default scenario: Service shop/checkout (``rollbackd.io/strategy:
blue-green``, colour label ``version``) was switched from blue to green by
``kubectl-patch`` 10 minutes ago; checkout-green breaches since 6 minutes ago;
checkout-blue (3 replicas) ran its version for three days before the switch.
Each test changes one thing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.bluegreen import ANNOTATION_BLUEGREEN, BlueGreenFacts, bluegreen_facts
from rollbackd.decide import decide
from rollbackd.executor import Executor
from rollbackd.model import (
    ANNOTATION_DRY_RUN,
    ANNOTATION_ENABLED,
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
from rollbackd.strategies.bluegreen import BlueGreenStrategy, plan_record, recorded_gitops_owners
from rollbackd.strategies.factory import STRATEGIES, recorded
from rollbackd.strategies.rolling import RollingStrategy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GREEN = Target("shop", "checkout-green")
SWITCHED_AGO = timedelta(minutes=10)
ANOMALY_AGO = timedelta(minutes=6)


def ts(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def template(colour: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "checkout", "version": colour}},
        "spec": {"containers": [{"name": "app", "image": image, **container}]},
    }


def deployment(colour: str, image: str, replicas: int = 3, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"checkout-{colour}",
            "namespace": "shop",
            "resourceVersion": "41",
            "annotations": {"deployment.kubernetes.io/revision": "1"},
        },
        "spec": {"replicas": replicas, "template": template(colour, image, **container)},
    }


BLUE = deployment("blue", "shop/checkout:1.4")
GREEN_DEPLOYMENT = deployment("green", "shop/checkout:1.5")


def service(
    colour: str = "green",
    *,
    annotations: dict[str, str] | None = None,
    switched_ago: timedelta | None = SWITCHED_AGO,
    manager: str = "kubectl-patch",
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    managed = []
    if switched_ago is not None:
        managed.append(
            {
                "manager": manager,
                "operation": "Update",
                "time": ts(switched_ago),
                "fieldsV1": {"f:spec": {"f:selector": {}}},
            }
        )
    # An older entry of another manager that no longer owns the selector.
    managed.append({"manager": "helm", "time": ts(timedelta(days=30)), "fieldsV1": {}})
    return {
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "resourceVersion": "90",
            "annotations": {"rollbackd.io/strategy": "blue-green", **(annotations or {})},
            "managedFields": managed,
        },
        "spec": {"selector": selector or {"app": "checkout", "version": colour}},
    }


def since(deployment: dict[str, Any]) -> datetime:
    """The blue version was created three days and ten minutes ago."""
    return NOW - timedelta(days=3, minutes=10)


def bg(
    svc: dict[str, Any] | None = None,
    deployments: list[dict[str, Any]] | None = None,
    target: dict[str, Any] = GREEN_DEPLOYMENT,
) -> BlueGreenFacts | None:
    return bluegreen_facts(
        target,
        [svc or service()],
        [BLUE, GREEN_DEPLOYMENT] if deployments is None else deployments,
        running_since=since,
    )


def cluster(bluegreen: BlueGreenFacts | None, **overrides: Any) -> ClusterFacts:
    current = RevisionInfo(
        revision=1,
        replicaset="checkout-green-abc",
        uid="rs-uid",
        created_at=NOW - minutes(20),
        template=GREEN_DEPLOYMENT["spec"]["template"],
        images=("shop/checkout:1.5",),
    )
    values: dict[str, Any] = {
        "target": GREEN,
        "exists": True,
        "template": GREEN_DEPLOYMENT["spec"]["template"],
        "revisions": (current,),
        # The green Deployment itself has not rolled out for 20 minutes.
        "rollout_started_at": NOW - minutes(20),
        "bluegreen": bluegreen,
    }
    values.update(overrides)
    return ClusterFacts(**values)


def signal(started_ago: timedelta = ANOMALY_AGO) -> Signal:
    return Signal(
        target=GREEN,
        source=SignalSource.PROMETHEUS,
        name="error_ratio",
        status=SignalStatus.FIRING,
        started_at=NOW - started_ago,
        observed_at=NOW,
        value=0.3,
        threshold=0.05,
    )


def run(facts: ClusterFacts, policy: Policy | None = None, sig: Signal | None = None) -> Decision:
    return decide(sig or signal(), facts, History(), policy or Policy(), NOW)


# --- reading the cluster ------------------------------------------------------


def test_facts_name_the_service_colours_switch_and_previous_colour() -> None:
    facts = bg()
    assert facts is not None and facts.problem is None
    assert (facts.service, facts.color_label, facts.live_color, facts.target_color) == (
        "checkout",
        "version",
        "green",
        "green",
    )
    # The switch: the managedFields entry owning spec.selector, not helm's older one.
    assert (facts.switched_at, facts.switched_by) == (NOW - minutes(10), "kubectl-patch")
    assert (facts.previous, facts.previous_color, facts.previous_replicas) == (
        "checkout-blue",
        "blue",
        3,
    )


def test_a_previous_colour_scaled_to_zero_is_given_the_live_colours_replicas() -> None:
    scaled_down = deployment("blue", "shop/checkout:1.4", replicas=0)
    facts = bg(deployments=[scaled_down, deployment("green", "shop/checkout:1.5", replicas=5)])
    assert facts is not None
    # The target passed in has 3 replicas: what it carries now is what blue must carry.
    assert (facts.previous_current_replicas, facts.previous_replicas) == (0, 3)


def test_a_deployment_no_annotated_service_selects_has_no_bluegreen_facts() -> None:
    other = {**service(), "spec": {"selector": {"app": "cart", "version": "green"}}}
    assert bg(other) is None
    plain = service()
    del plain["metadata"]["annotations"]["rollbackd.io/strategy"]
    assert bg(plain) is None
    explicit = service(annotations={"rollbackd.io/strategy": "rolling"})
    assert bg(explicit) is None


@pytest.mark.parametrize(
    ("svc", "code", "words"),
    [
        (
            service(annotations={"rollbackd.io/strategy": "purple"}),
            "strategy_unknown",
            "'purple', which is not a known strategy",
        ),
        (
            service(annotations={"rollbackd.io/color-label": "not a key!"}),
            "color_label_invalid",
            "'not a key!', not a label key",
        ),
        (
            service(annotations={"rollbackd.io/color-label": "track"}),
            "color_label_invalid",
            "has no 'track' key",
        ),
        (service("purple"), "color_label_invalid", "version=purple, which no Deployment"),
        (
            service(annotations={"rollbackd.io/cleanup": "delete"}),
            "color_label_invalid",
            "rollbackd.io/cleanup: 'delete'",
        ),
    ],
)
def test_bad_input_escalates_with_the_service_and_annotation_named(
    svc: dict[str, Any], code: str, words: str
) -> None:
    facts = bg(svc)
    assert facts is not None and facts.problem is not None
    decision = run(cluster(facts))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, code)
    assert words in decision.reason and "Service checkout" in decision.reason
    assert "nothing was switched: manual rollback needed" in decision.reason


def test_a_colour_label_absent_from_the_target_is_bad_input() -> None:
    unlabelled = deployment("green", "shop/checkout:1.5")
    unlabelled["spec"]["template"]["metadata"]["labels"] = {"app": "checkout", "track": "x"}
    facts = bg(service(selector={"app": "checkout", "version": "green"}), target=unlabelled)
    assert facts is not None and facts.problem is not None
    assert "carry no 'version' label" in facts.problem[1]


# --- the decision ---------------------------------------------------------------


def test_breach_soon_after_the_switch_switches_back_to_the_previous_colour() -> None:
    decision = run(cluster(bg()))
    assert (decision.action, decision.reason_code) == (Action.ROLLBACK, "rollback")
    assert decision.reason == (
        "switch Service checkout back from version=green (shop/checkout-green) to version=blue "
        "(shop/checkout-blue) (images shop/checkout:1.5 -> shop/checkout:1.4): error_ratio at "
        "0.3 (threshold 0.05) began 4m after the switch"
    )


def test_the_green_deployments_own_old_rollout_does_not_matter_the_switch_does() -> None:
    # Green rolled out 20 minutes ago (outside a 15m window); the switch 10 minutes ago is inside.
    decision = run(cluster(bg()), Policy(change_window=minutes(15)))
    assert decision.action is Action.ROLLBACK


def test_switch_outside_the_change_window_is_not_a_recent_release() -> None:
    decision = run(cluster(bg(service(switched_ago=minutes(90)))))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")
    assert "outside the 30m change window" in decision.reason


def test_switch_time_unknown_is_never_taken_for_recent() -> None:
    decision = run(cluster(bg(service(switched_ago=None))))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")
    assert "no managedFields entry owns its selector" in decision.reason


def test_a_switch_after_the_anomaly_began_did_not_cause_it() -> None:
    decision = run(cluster(bg(service(switched_ago=minutes(2)))))
    assert decision.reason_code == "no_recent_rollout"
    assert "after error_ratio" in decision.reason


def test_a_switch_rollbackd_made_is_never_switched_again() -> None:
    decision = run(cluster(bg(service(manager="rollbackd"))))
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "restored_revision_breaching",
    )
    assert "switched to version=green by rollbackd" in decision.reason


def test_the_idle_colour_is_skipped_it_serves_no_traffic() -> None:
    facts = bg(service("blue"))
    assert facts is not None and not facts.live
    decision = run(cluster(facts))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "not_live_color")


def test_no_other_colour_escalates_manual_rollback_needed() -> None:
    decision = run(cluster(bg(deployments=[GREEN_DEPLOYMENT])))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_previous_color")
    assert decision.reason == (
        "no other colour of Service checkout exists; nothing was switched: manual rollback needed"
    )


def test_two_other_colours_are_ambiguous() -> None:
    red = deployment("red", "shop/checkout:1.3")
    decision = run(cluster(bg(deployments=[BLUE, red, GREEN_DEPLOYMENT])))
    assert decision.reason_code == "no_previous_color"
    assert "several other colours (checkout-blue, checkout-red)" in decision.reason


def test_a_previous_colour_created_just_before_the_switch_is_not_stable() -> None:
    facts = bluegreen_facts(
        GREEN_DEPLOYMENT,
        [service()],
        [BLUE, GREEN_DEPLOYMENT],
        running_since=lambda _: NOW - minutes(12),
    )
    decision = run(cluster(facts))
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "no_stable_previous_revision",
    )
    assert "created 2m before the switch; it needs 10m" in decision.reason


def test_guard_refuses_a_previous_colour_whose_template_differs_outside_the_allow_list() -> None:
    blue = deployment("blue", "shop/checkout:1.4", resources={"limits": {"cpu": "1"}})
    decision = run(cluster(bg(deployments=[blue, GREEN_DEPLOYMENT])))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "guard_disallowed_fields")
    assert "spec.containers[app].resources" in decision.reason


def test_guard_refuses_a_previous_colour_with_a_mutable_image() -> None:
    blue = deployment("blue", "shop/checkout:latest")
    decision = run(cluster(bg(deployments=[blue, GREEN_DEPLOYMENT])))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "guard_mutable_image")


def test_dry_run_reports_the_switch_it_would_make() -> None:
    decision = run(cluster(bg(), annotations={ANNOTATION_DRY_RUN: "true"}))
    assert (decision.action, decision.reason_code) == (Action.DRY_RUN, "dry_run")
    assert "would switch Service checkout back from version=green" in decision.reason


def test_the_shared_rules_still_apply_first() -> None:
    opted_out = run(cluster(bg(service("purple")), annotations={ANNOTATION_ENABLED: "false"}))
    assert opted_out.reason_code == "opted_out"


# --- the strategy's plan -----------------------------------------------------------


def context(svc: dict[str, Any] | None = None) -> dict[str, Any]:
    blue = deployment("blue", "shop/checkout:1.4", replicas=0)
    return {"services": [svc or service()], "deployments": [blue, GREEN_DEPLOYMENT]}


def test_plan_says_what_changes_selector_before_and_after_and_replicas_scaled() -> None:
    restore = BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, context())
    assert restore.verify_target == Target("shop", "checkout-blue")
    assert restore.kept_template == GREEN_DEPLOYMENT["spec"]["template"]
    assert restore.template == BLUE["spec"]["template"]
    changes = dict(restore.changes)
    assert changes["selector_before"] == {"app": "checkout", "version": "green"}
    assert changes["selector_after"] == {"app": "checkout", "version": "blue"}
    assert changes["replicas_scaled"] == [{"deployment": "checkout-blue", "from": 0, "to": 3}]
    assert changes["cleanup"] == {
        "deployment": "checkout-green",
        "mode": "scale-down",
        "replicas": 3,
    }
    assert restore.summary == (
        "switching Service checkout selector version=green -> version=blue (checkout-blue) "
        "after scaling checkout-blue 0 -> 3"
    )


def test_the_first_write_is_annotations_only_and_guarded() -> None:
    strategy = BlueGreenStrategy()
    restore = strategy.plan(GREEN_DEPLOYMENT, [], None, context())
    rolling_back = state_annotations(Phase.ROLLING_BACK)
    ops = strategy.patch(
        GREEN_DEPLOYMENT,
        restore,
        annotations={**rolling_back, "kubernetes.io/change-cause": "x"},
    )
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    assert all(op["path"].startswith("/metadata/annotations/") for op in ops[1:])
    written = {op["path"].rsplit("/", 1)[1]: op["value"] for op in ops[1:]}
    assert "kubernetes.io~1change-cause" not in written  # the template does not change
    record = json.loads(written["rollbackd.io~1blue-green"])
    assert record["from"] == "green" and record["to"] == "blue" and record["replicas"] == 3
    assert record["rollback_id"] == "rb-7"
    # The record is how a resumed rollback finds its strategy and its plan again.
    patched = {
        "metadata": {"annotations": {**rolling_back, ANNOTATION_BLUEGREEN: json.dumps(record)}}
    }
    assert plan_record(patched) == record
    assert isinstance(recorded(patched), BlueGreenStrategy)
    assert isinstance(recorded(GREEN_DEPLOYMENT), RollingStrategy)
    assert strategy.verified(GREEN, patched) == Target("shop", "checkout-blue")
    # A record an earlier rollback left behind is not a later rollback's.
    later = RollbackState("rb-8", Phase.ROLLING_BACK, 1, 1, NOW, NOW, "rollback")
    stale = {"metadata": {"annotations": {**patched["metadata"]["annotations"]}}}
    stale["metadata"]["annotations"][ANNOTATION_ROLLBACK] = encode_state(later)
    assert plan_record(stale) == {}
    assert isinstance(recorded(stale), RollingStrategy)


@pytest.mark.parametrize(
    ("ctx", "code"),
    [
        (
            context(service(annotations={"rollbackd.io/color-label": "track"})),
            "color_label_invalid",
        ),
        (context(service("blue")), "not_live_color"),
        ({"services": [service()], "deployments": [GREEN_DEPLOYMENT]}, "no_previous_color"),
        ({"services": [], "deployments": []}, "strategy_unknown"),
    ],
)
def test_plan_refuses_what_it_cannot_do_safely(ctx: dict[str, Any], code: str) -> None:
    with pytest.raises(PlanError) as caught:
        BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, ctx)
    assert caught.value.reason_code == code


def test_the_factory_knows_blue_green_by_its_annotation_value() -> None:
    # Other strategies register beside it (canary, ...).
    assert {"rolling", "blue-green"} <= set(STRATEGIES)
    assert STRATEGIES["blue-green"]().name == "blue-green"


# --- a restart finds a cleanup left undone -------------------------------------------


def executor() -> Executor:
    unused: Any = None  # cleanup_left reads only the facts it is given
    return Executor(
        unused, unused, unused, unused, rollout_timeout=1, clock=lambda: NOW, policy_for=unused
    )


def state_annotations(phase: Phase, **extra: str) -> dict[str, str]:
    state = RollbackState("rb-7", phase, 1, 1, NOW, NOW, "rollback")
    return {ANNOTATION_ROLLBACK: encode_state(state), **extra}


@pytest.mark.parametrize(
    ("phase", "record_of", "resumed"),
    [
        (Phase.ROLLBACK_COMPLETED, "rb-7", True),  # killed between the verdict and the cleanup
        (Phase.ROLLBACK_COMPLETED, None, False),  # cleaned up (or a rolling rollback)
        (Phase.ROLLBACK_COMPLETED, "rb-1", False),  # an older rollback's record, not this one's
        (Phase.ESCALATED, "rb-7", False),  # nothing switched: the bad colour is not scaled down
    ],
)
def test_a_restart_resumes_only_a_completed_rollback_whose_cleanup_is_undone(
    phase: Phase, record_of: str | None, resumed: bool
) -> None:
    record = {"previous": "checkout-blue", "rollback_id": record_of}
    extra = {ANNOTATION_BLUEGREEN: json.dumps(record)} if record_of else {}
    facts = ClusterFacts(target=GREEN, exists=True, annotations=state_annotations(phase, **extra))
    found = executor().cleanup_left(facts)
    assert (found is not None) is resumed
    if found is not None:
        assert (found.id, found.target, found.phase) == ("rb-7", GREEN, phase)


def test_the_plan_names_the_service_as_an_object_whose_gitops_owner_is_paused_too() -> None:
    routed = service()
    routed["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/name": "routing"}
    restore = BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, context(routed))
    # The executor pauses the owner of each (the target's first, each owner once);
    # blue, at 0, is scaled up too (it has no owner here).
    assert dict(restore.gitops_objects) == {
        "Service shop/checkout": routed,
        "Deployment shop/checkout-blue": context()["deployments"][0],
    }
    record = dict(restore.changes["record"])
    assert record["service_owner"] == "flux:kustomization/routing"
    assert "previous_owner" not in record
    # A resumed rollback names it on its pages from the record on the target.
    recorded_target = {
        "metadata": {
            "namespace": "shop",
            "annotations": {
                **state_annotations(Phase.ROLLING_BACK),
                ANNOTATION_BLUEGREEN: json.dumps({**record, "rollback_id": "rb-7"}),
            },
        }
    }
    assert recorded_gitops_owners(recorded_target) == [
        {"owner": "flux:kustomization/routing", "of": "Service shop/checkout"}
    ]


def test_a_service_without_a_gitops_owner_records_none() -> None:
    restore = BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, context())
    assert "service_owner" not in restore.changes["record"]  # the record as before
    assert recorded_gitops_owners(GREEN_DEPLOYMENT) == []


def owned_blue(replicas: int) -> dict[str, Any]:
    blue = deployment("blue", "shop/checkout:1.4", replicas=replicas)
    blue["metadata"]["labels"] = {"argocd.argoproj.io/instance": "shop-blue"}
    return blue


def test_the_previous_colour_it_scales_up_is_an_object_whose_owner_is_paused_too() -> None:
    blue = owned_blue(0)
    ctx = {"services": [service()], "deployments": [blue, GREEN_DEPLOYMENT]}

    restore = BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, ctx)

    assert restore.gitops_objects["Deployment shop/checkout-blue"] == blue
    record = dict(restore.changes["record"])
    assert record["previous_owner"] == "argocd:shop-blue"
    recorded_target = {
        "metadata": {
            "namespace": "shop",
            "annotations": {
                **state_annotations(Phase.ROLLING_BACK),
                ANNOTATION_BLUEGREEN: json.dumps({**record, "rollback_id": "rb-7"}),
            },
        }
    }
    assert recorded_gitops_owners(recorded_target) == [
        {"owner": "argocd:shop-blue", "of": "Deployment shop/checkout-blue"}
    ]


def test_a_previous_colour_left_at_its_replicas_is_not_written_so_its_owner_is_not_paused() -> None:
    ctx = {"services": [service()], "deployments": [owned_blue(3), GREEN_DEPLOYMENT]}

    restore = BlueGreenStrategy().plan(GREEN_DEPLOYMENT, [], None, ctx)

    assert list(restore.gitops_objects) == ["Service shop/checkout"]
    assert "previous_owner" not in restore.changes["record"]
