"""Argo Rollouts, pure: a Rollout's facts and the abort's decision rules.

The default scenario: Rollout shop/web (4 replicas) runs stable hash ``s1``
(ReplicaSet web-s1); a canary ``c2`` (web-c2) was created 10 minutes ago and
is paused at setWeight 25; its error ratio breaches since 6 minutes ago. The
change window is 30 minutes. Each test changes one thing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.argo import (
    ANNOTATION_ARGO_ABORT,
    abort_record,
    moved_since,
    replicaset_counts,
    rollout_facts,
    serving_replicaset,
)
from rollbackd.decide_argo import decide_argo, decide_rollout
from rollbackd.decide_inputs import Inputs
from rollbackd.model import (
    ANNOTATION_DRY_RUN,
    Action,
    ClusterFacts,
    History,
    Policy,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.reasons import ReasonCode
from rollbackd.strategies import PlanError
from rollbackd.strategies.argorollouts import ArgoRolloutsStrategy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=30)
UID = "uid-web"


def ts(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "resourceVersion": "7"},
        "spec": {"replicas": 4, "strategy": {"canary": {"steps": [{"setWeight": 25}]}}},
        "status": {"stableRS": "s1", "currentPodHash": "c2", "phase": "Paused", **status},
    }


def rs(hash_: str, created: timedelta, *, uid: str = UID, replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{hash_}",
            "labels": {"rollouts-pod-template-hash": hash_},
            "ownerReferences": [{"kind": "Rollout", "uid": uid}],
            "creationTimestamp": ts(created),
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": replicas},
    }


REPLICASETS = [rs("s1", timedelta(days=3), replicas=3), rs("c2", timedelta(minutes=10))]


def signal(ago: timedelta = timedelta(minutes=6)) -> Signal:
    return Signal(
        Target("shop", "web"),
        SignalSource.PROMETHEUS,
        "error_ratio",
        SignalStatus.FIRING,
        started_at=NOW - ago,
        observed_at=NOW,
        value=0.3,
        threshold=0.05,
    )


def decide(obj: dict[str, Any], replicasets: list[Any] = REPLICASETS, **kw: Any) -> Any:
    return decide_rollout(
        kw.get("signal", signal()), rollout_facts(obj, replicasets), now=NOW, change_window=WINDOW
    )


# --- facts ---------------------------------------------------------------------------


def test_facts_name_the_canary_and_stable_replicasets_and_when_the_canary_started() -> None:
    facts = rollout_facts(rollout(), REPLICASETS)
    assert facts.updating and not facts.aborted and facts.problem is None
    assert (facts.stable_rs, facts.canary_rs) == ("web-s1", "web-c2")
    assert facts.canary_started_at == NOW - timedelta(minutes=10)
    assert (facts.replicas, facts.resource_version) == (4, "7")


def test_replicasets_of_another_owner_are_not_the_rollouts() -> None:
    foreign = [rs("s1", timedelta(days=3), uid="other"), rs("c2", timedelta(minutes=10))]
    facts = rollout_facts(rollout(), foreign)
    assert facts.stable_rs is None and facts.canary_rs == "web-c2"


def test_no_current_pod_hash_means_no_update_in_progress() -> None:
    obj = rollout()
    del obj["status"]["currentPodHash"]
    assert not rollout_facts(obj, REPLICASETS).updating


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda o: o.pop("status"), ReasonCode.ROLLOUT_STATUS_MISSING),
        (lambda o: o["status"].pop("stableRS"), ReasonCode.ROLLOUT_STATUS_MISSING),
        (lambda o: o.update(status="broken"), ReasonCode.ROLLOUT_STATUS_MISSING),
        (lambda o: o.update(spec=["not", "a", "map"]), ReasonCode.ROLLOUT_SPEC_INVALID),
        (lambda o: o["spec"].update(replicas="4"), ReasonCode.ROLLOUT_SPEC_INVALID),
        (lambda o: o["spec"].update(replicas=-1), ReasonCode.ROLLOUT_SPEC_INVALID),
        (lambda o: o["spec"].update(paused="yes"), ReasonCode.ROLLOUT_SPEC_INVALID),
        (
            lambda o: o["status"].update(
                conditions=[{"type": "InvalidSpec", "message": "steps[0].setWeight: -5"}]
            ),
            ReasonCode.ROLLOUT_SPEC_INVALID,
        ),
    ],
)
def test_hostile_rollouts_are_a_problem_with_a_reason_never_an_exception(
    mutate: Any, code: ReasonCode
) -> None:
    obj = rollout()
    mutate(obj)
    decision = decide(obj, [*REPLICASETS, "junk", {"metadata": None}])
    assert decision.action is Action.ESCALATE
    assert decision.reason_code == code
    assert "Rollout shop/web cannot be judged" in decision.reason
    assert "nothing was aborted" in decision.reason


def test_replicaset_counts_of_a_missing_replicaset_are_zero() -> None:
    assert replicaset_counts(None) == (0, 0)
    assert replicaset_counts(REPLICASETS[0]) == (3, 3)


def test_abort_record_is_only_the_named_rollbacks() -> None:
    record = {"rollback_id": "rb-1", "canary_hash": "c2"}
    obj = rollout()
    obj["metadata"]["annotations"] = {ANNOTATION_ARGO_ABORT: json.dumps(record)}
    assert abort_record(obj, "rb-1") == record
    assert abort_record(obj, "rb-2") == {}
    obj["metadata"]["annotations"] = {ANNOTATION_ARGO_ABORT: "{not json"}
    assert abort_record(obj, "rb-1") == {}


# --- rules ---------------------------------------------------------------------------


def test_a_canary_breaching_inside_the_window_is_aborted() -> None:
    decision = decide(rollout())
    assert decision.action is Action.ROLLBACK and decision.reason_code == ReasonCode.ROLLBACK
    assert "error_ratio at 0.3 (threshold 0.05) began 4m after the canary web-c2" in (
        decision.reason
    )
    assert "back to stable web-s1" in decision.reason


def test_an_aborted_rollout_is_skipped() -> None:
    decision = decide(rollout(abort=True, phase="Degraded"))
    assert decision.action is Action.SKIP
    assert decision.reason_code == ReasonCode.ROLLOUT_ALREADY_ABORTED
    assert "already aborted (phase Degraded)" in decision.reason


def test_a_rollout_without_a_canary_is_skipped() -> None:
    decision = decide(rollout(currentPodHash="s1", phase="Healthy"))
    assert decision.action is Action.SKIP
    assert decision.reason_code == ReasonCode.ROLLOUT_NOT_UPDATING


def paused(obj: dict[str, Any]) -> dict[str, Any]:
    """``kubectl argo rollouts pause``: a human sets spec.paused."""
    obj["spec"]["paused"] = True
    return obj


@pytest.mark.parametrize(
    ("obj", "names"),
    [
        (paused(rollout()), "canary web-c2"),
        (paused(rollout(currentPodHash="s1", phase="Paused")), "no canary"),
    ],
)
def test_a_rollout_a_human_paused_escalates_paused_and_nothing_is_aborted(
    obj: dict[str, Any], names: str
) -> None:
    decision = decide(obj)

    assert decision.action is Action.ESCALATE and decision.reason_code == ReasonCode.PAUSED
    assert f"Rollout shop/web is paused ({names}, spec.paused)" in decision.reason
    assert "a human paused the rollout and is in control" in decision.reason
    assert "nothing was aborted" in decision.reason


def test_the_controllers_own_step_pause_is_not_a_human_pause() -> None:
    step_pause = rollout(
        pauseConditions=[{"reason": "CanaryPauseStep", "startTime": ts(timedelta(minutes=9))}],
        controllerPause=True,
    )
    assert not rollout_facts(step_pause, REPLICASETS).paused
    assert decide(step_pause).action is Action.ROLLBACK
    # spec.paused false is what "kubectl argo rollouts resume" leaves behind.
    resumed = rollout()
    resumed["spec"]["paused"] = False
    assert decide(resumed).action is Action.ROLLBACK


def test_a_paused_rollout_that_is_already_aborted_stays_skipped() -> None:
    assert decide(paused(rollout(abort=True))).reason_code == ReasonCode.ROLLOUT_ALREADY_ABORTED


def test_no_stable_replicaset_escalates_manual_rollback() -> None:
    decision = decide(rollout(), [REPLICASETS[1]])
    assert decision.action is Action.ESCALATE
    assert decision.reason_code == ReasonCode.ROLLOUT_NO_STABLE
    assert "manual rollback needed" in decision.reason


@pytest.mark.parametrize(
    ("anomaly_ago", "canary_ago", "says"),
    [
        (timedelta(minutes=6), timedelta(minutes=45), "outside the 30m change window"),
        (timedelta(minutes=20), timedelta(minutes=10), "started 10m after"),
    ],
)
def test_a_canary_outside_the_window_or_after_the_anomaly_escalates(
    anomaly_ago: timedelta, canary_ago: timedelta, says: str
) -> None:
    replicasets = [REPLICASETS[0], rs("c2", canary_ago)]
    decision = decide(rollout(), replicasets, signal=signal(anomaly_ago))
    assert decision.action is Action.ESCALATE
    assert decision.reason_code == ReasonCode.NO_RECENT_ROLLOUT
    assert says in decision.reason


def test_the_window_edge_is_inside() -> None:
    replicasets = [REPLICASETS[0], rs("c2", timedelta(minutes=36))]
    assert decide(rollout(), replicasets).action is Action.ROLLBACK


def test_a_canary_replicaset_not_found_has_an_unknown_start() -> None:
    decision = decide(rollout(), [REPLICASETS[0]])
    assert decision.action is Action.ESCALATE
    assert "the start of the canary (hash c2) of Rollout shop/web is unknown" in decision.reason
    assert decision.reason_code == ReasonCode.NO_RECENT_ROLLOUT
    assert "is unknown" in decision.reason


def test_junk_replicasets_beside_the_real_ones_are_ignored() -> None:
    junk: list[Any] = ["junk", {"metadata": None}, {"metadata": {"labels": "x"}}]
    bad_time = rs("c2", timedelta(minutes=10))
    bad_time["metadata"]["creationTimestamp"] = "yesterday"
    facts = rollout_facts(rollout(), [*junk, REPLICASETS[0], bad_time])
    assert facts.problem is None and facts.canary_rs == "web-c2"
    assert facts.canary_started_at is None  # unknown start: escalates, see above


# --- over the shared inputs: dry run ----------------------------------------------------


def inputs(*, policy: Policy | None = None, annotations: dict[str, str] | None = None) -> Inputs:
    facts = ClusterFacts(
        Target("shop", "web"),
        exists=False,
        annotations=annotations or {},
        rollout=rollout_facts(rollout(), REPLICASETS),
    )
    return Inputs(signal(), facts, History(), policy or Policy(change_window=WINDOW), NOW)


def test_decide_argo_aborts_as_decide_rollout_does() -> None:
    assert decide_argo(inputs()).action is Action.ROLLBACK


@pytest.mark.parametrize(
    ("policy", "annotations", "by"),
    [
        (Policy(change_window=WINDOW, dry_run=True), {}, "dry run (policy)"),
        (Policy(change_window=WINDOW), {ANNOTATION_DRY_RUN: "true"}, "dry run (annotation"),
    ],
)
def test_a_dry_run_records_the_abort_it_would_make(
    policy: Policy, annotations: dict[str, str], by: str
) -> None:
    decision = decide_argo(inputs(policy=policy, annotations=annotations))
    assert decision.action is Action.DRY_RUN and decision.reason_code == ReasonCode.DRY_RUN
    assert decision.reason.startswith(by) and "would abort" in decision.reason
    assert "canary web-c2" in decision.reason


def test_a_dry_run_does_not_turn_a_skip_into_a_record() -> None:
    facts = ClusterFacts(
        Target("shop", "web"),
        exists=False,
        rollout=rollout_facts(rollout(abort=True), REPLICASETS),
    )
    policy = Policy(change_window=WINDOW, dry_run=True)
    decision = decide_argo(Inputs(signal(), facts, History(), policy, NOW))
    assert decision.action is Action.SKIP


def test_decide_argo_without_rollout_facts_is_a_wiring_bug() -> None:
    facts = ClusterFacts(Target("shop", "web"), exists=False)
    with pytest.raises(ValueError, match="needs Rollout facts"):
        decide_argo(Inputs(signal(), facts, History(), Policy(), NOW))


# --- the strategy's pure halves: plan and status ---------------------------------------


def test_the_plan_names_what_the_abort_changes() -> None:
    plan = ArgoRolloutsStrategy().plan(rollout(), REPLICASETS, "rb-1")
    assert plan.summary == "aborting Rollout shop/web: canary web-c2 to 0, stable web-s1 to 4"
    assert plan.changes() == {
        "strategy": "argo-rollouts",
        "rollback_id": "rb-1",
        "rollout": "shop/web",
        "canary_hash": "c2",
        "stable_hash": "s1",
        "canary_rs": "web-c2",
        "stable_rs": "web-s1",
        "replicas": 4,
    }


@pytest.mark.parametrize(
    ("obj", "replicasets", "code"),
    [
        (rollout(abort=True), REPLICASETS, ReasonCode.ROLLOUT_ALREADY_ABORTED),
        (rollout(currentPodHash="s1"), REPLICASETS, ReasonCode.ROLLOUT_NOT_UPDATING),
        (rollout(), [REPLICASETS[1]], ReasonCode.ROLLOUT_NO_STABLE),
        ({"metadata": {"name": "web"}, "spec": {}}, [], ReasonCode.ROLLOUT_STATUS_MISSING),
        (paused(rollout()), REPLICASETS, ReasonCode.PAUSED),
    ],
)
def test_the_plan_refuses_with_the_reason_and_writes_nothing(
    obj: dict[str, Any], replicasets: list[Any], code: ReasonCode
) -> None:
    with pytest.raises(PlanError) as refused:
        ArgoRolloutsStrategy().plan(obj, replicasets, "rb-1")
    assert refused.value.reason_code == code


def test_the_record_write_is_guarded_by_the_planning_reads_resource_version() -> None:
    strategy = ArgoRolloutsStrategy()
    plan = strategy.plan(rollout(), REPLICASETS, "rb-1")
    ops = strategy.record_ops(rollout(), plan, {"rollbackd.io/rollback": "{}"})
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    written = {op["path"]: op["value"] for op in ops[1:] if op["op"] != "test"}
    assert json.loads(written["/metadata/annotations"][ANNOTATION_ARGO_ABORT]) == {
        k: v for k, v in plan.changes().items() if k != "strategy"
    }


@pytest.mark.parametrize(
    ("canary", "stable_ready", "complete", "says"),
    [
        (1, 3, False, "canary web-c2 still has 1"),
        (0, 3, False, "stable web-s1 has 3 of 4 pods Ready"),
        (0, 4, True, "canary web-c2 scaled to 0, stable web-s1 4/4 Ready"),
    ],
)
def test_the_abort_is_done_when_the_canary_is_at_zero_and_the_stable_version_ready(
    canary: int, stable_ready: int, complete: bool, says: str
) -> None:
    stable = rs("s1", timedelta(days=3), replicas=4)
    stable["status"]["readyReplicas"] = stable_ready
    sets = [stable, rs("c2", timedelta(minutes=10), replicas=canary)]
    record = {"canary_rs": "web-c2", "stable_rs": "web-s1"}
    outcome = ArgoRolloutsStrategy().status(rollout(abort=True), sets, record)
    assert outcome.complete is complete and outcome.message == says


def test_a_rollout_gone_bad_while_waiting_is_never_complete() -> None:
    outcome = ArgoRolloutsStrategy().status({"spec": {}}, [], {"canary_rs": "x"})
    assert not outcome.complete and "no status.stableRS" in outcome.message


def with_uids(replicasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ReplicaSets as the API has them: each with its own uid (its pods' controller)."""
    return [
        {**one, "metadata": {**one["metadata"], "uid": f"uid-{one['metadata']['name']}"}}
        for one in replicasets
    ]


@pytest.mark.parametrize(
    ("status", "judged"),
    [
        ({}, "web-c2"),  # the canary runs: its pods are judged
        ({"abort": True}, "web-s1"),  # aborted: the stable pods serve (a streak moves on)
        ({"currentPodHash": "s1"}, None),  # no release in progress
        ({"stableRS": ""}, None),  # cannot be judged
    ],
)
def test_pod_health_judges_the_replicaset_that_serves_the_release(
    status: dict[str, Any], judged: str | None
) -> None:
    found = serving_replicaset(rollout_facts(rollout(**status), with_uids(REPLICASETS)))

    assert (found.replicaset if found else None) == judged
    if found is not None:
        assert found.uid == f"uid-{judged}"
        assert found.created_at == NOW - timedelta(minutes=10)  # restarts count from the canary


def test_without_replicaset_uids_nothing_is_judged() -> None:
    assert serving_replicaset(rollout_facts(rollout(), REPLICASETS)) is None


PROPOSED = {"canary_hash": "c2", "stable_hash": "s1"}


@pytest.mark.parametrize(
    ("status", "code", "says"),
    [
        ({"abort": True}, ReasonCode.ROLLOUT_ALREADY_ABORTED, "aborted by someone else"),
        ({"stableRS": "c2"}, ReasonCode.ROLLOUT_NOT_UPDATING, "promoted or undone"),
        ({"currentPodHash": "c3"}, ReasonCode.TARGET_CHANGED, "its canary is now c3"),
        ({"stableRS": "s0", "currentPodHash": "c2"}, ReasonCode.TARGET_CHANGED, "over stable s0"),
        ({"stableRS": ""}, ReasonCode.ROLLOUT_STATUS_MISSING, "no status.stableRS"),
    ],
)
def test_a_rollout_that_moved_from_the_proposed_abort_says_how(
    status: dict[str, Any], code: ReasonCode, says: str
) -> None:
    moved = moved_since(rollout(**status), PROPOSED)

    assert moved is not None and moved[0] == code and says in moved[1], moved


def test_a_proposal_on_a_rollout_a_human_then_paused_is_withdrawn_as_paused() -> None:
    moved = moved_since(paused(rollout()), PROPOSED)

    assert moved == (ReasonCode.PAUSED, "a human paused it (spec.paused) and is in control")


def test_a_rollout_whose_status_churns_has_not_moved_from_the_proposal() -> None:
    assert moved_since(rollout(phase="Progressing", readyReplicas=3), PROPOSED) is None
