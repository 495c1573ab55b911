"""The decision module, as a specification of DESIGN.md's safety rules.

The default scenario is the textbook case: shop/cart's revision 7 rolled out
10 minutes ago, the error ratio started breaching 6 minutes ago, and revision
6 ran for three days before it was replaced. Each test changes one thing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rollbackd import decide_inputs, guard
from rollbackd.decide import ReasonCode, decide
from rollbackd.guard import disallowed_changes, mutable_images, template_diff_paths
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
    RecordKind,
    RevisionInfo,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.state import RollbackState, encode_state

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CART = Target("shop", "cart")
# The default scenario's timing, relative to NOW.
ROLLOUT_AGO = timedelta(minutes=10)
ANOMALY_AGO = timedelta(minutes=6)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def template(image: str, **container: Any) -> dict[str, Any]:
    """The pod template of shop/cart with one container ``app``."""
    return {
        "metadata": {"labels": {"app": "cart"}},
        "spec": {"containers": [{"name": "app", "image": image, **container}]},
    }


def revision(
    number: int,
    *,
    image: str | None = None,
    created_ago: timedelta,
    ran_for: timedelta | None = None,
    tpl: dict[str, Any] | None = None,
    restored_by: str | None = None,
) -> RevisionInfo:
    """Revision ``number``; ``ran_for`` None means still current or replacement unknown."""
    created_at = NOW - created_ago
    tpl = tpl if tpl is not None else template(image or f"shop/cart:{number}")
    containers = tpl.get("spec", {}).get("containers", [])
    return RevisionInfo(
        revision=number,
        replicaset=f"cart-{number}",
        uid=f"uid-{number}",
        created_at=created_at,
        template=tpl,
        images=tuple(c["image"] for c in containers),
        replaced_at=None if ran_for is None else created_at + ran_for,
        restored_by=restored_by,
    )


def default_revisions() -> tuple[RevisionInfo, ...]:
    return (
        revision(7, created_ago=minutes(10)),
        revision(6, created_ago=timedelta(days=3, minutes=10), ran_for=timedelta(days=3)),
        revision(5, created_ago=timedelta(days=9), ran_for=timedelta(days=6)),
    )


def facts(
    *,
    revisions: tuple[RevisionInfo, ...] | None = None,
    rollout_ago: timedelta | None = ROLLOUT_AGO,
    **overrides: Any,
) -> ClusterFacts:
    revisions = default_revisions() if revisions is None else revisions
    current = max(revisions, key=lambda r: r.revision) if revisions else None
    values: dict[str, Any] = {
        "target": CART,
        "exists": True,
        "uid": "deploy-uid",
        "resource_version": "100",
        "generation": 7,
        "template": dict(current.template) if current else {},
        "revisions": revisions,
        "rollout_started_at": None if rollout_ago is None else NOW - rollout_ago,
    }
    values.update(overrides)
    return ClusterFacts(**values)


def signal(
    status: SignalStatus = SignalStatus.FIRING,
    *,
    started_ago: timedelta = ANOMALY_AGO,
    **overrides: Any,
) -> Signal:
    values: dict[str, Any] = {
        "target": CART,
        "source": SignalSource.PROMETHEUS,
        "name": "error_ratio",
        "status": status,
        "started_at": NOW - started_ago,
        "observed_at": NOW,
        "value": 0.12,
        "threshold": 0.05,
        "key": "prom:shop/cart:error_ratio",
    }
    values.update(overrides)
    return Signal(**values)


def rollback_record(
    phase: Phase, *, finished_ago: timedelta | None = None, rid: str = "rb-1"
) -> Rollback:
    started = NOW - (finished_ago or timedelta(0)) - minutes(5)
    return Rollback(
        id=rid,
        target=CART,
        phase=phase,
        started_at=started,
        updated_at=NOW - (finished_ago or timedelta(0)),
        from_revision=7,
        to_revision=6,
        finished_at=None if finished_ago is None else NOW - finished_ago,
    )


def run(
    sig: Signal | None = None,
    cluster: ClusterFacts | None = None,
    history: History | None = None,
    policy: Policy | None = None,
) -> Decision:
    return decide(
        sig or signal(), cluster or facts(), history or History(), policy or Policy(), NOW
    )


# --- the happy path ------------------------------------------------------------


def test_breach_soon_after_rollout_rolls_back_to_previous_stable_revision() -> None:
    decision = run()
    assert decision.action is Action.ROLLBACK
    assert decision.reason_code == ReasonCode.ROLLBACK == "rollback"
    assert (decision.from_revision, decision.to_revision) == (7, 6)
    assert decision.target == CART
    assert decision.rollback_id is None


def test_rollback_reason_names_target_revisions_images_and_numbers() -> None:
    reason = run().reason
    assert "shop/cart" in reason
    assert "from revision 7 to revision 6" in reason
    assert "shop/cart:7 -> shop/cart:6" in reason
    assert "error_ratio at 0.12 (threshold 0.05)" in reason
    assert "began 4m after the rollout of revision 7" in reason
    assert "ran for 3d" in reason


def test_a_signal_replayed_after_its_max_age_is_recorded_not_acted_on() -> None:
    old = signal(observed_at=NOW - timedelta(hours=1, seconds=1))
    decision = run(old)
    assert (decision.action, decision.reason_code) == (Action.SKIP, "stale_signal")
    assert "too old to act on" in decision.reason


def test_a_signal_replayed_within_its_max_age_is_still_decided_on_its_merits() -> None:
    assert run(signal(observed_at=NOW - timedelta(hours=1))).action is Action.ROLLBACK


DECISION_CODES = frozenset(
    {
        "signal_resolved",
        "stale_signal",
        "anomaly_before_restore",
        "no_data",
        "target_not_found",
        "namespace_not_allowed",
        "opted_out",
        "rollback_in_flight",
        "restored_revision_breaching",
        "cooldown",
        "paused",
        "no_recent_rollout",
        "no_previous_revision",
        "no_stable_previous_revision",
        "guard_disallowed_fields",
        "guard_mutable_image",
        "dry_run",
        "dry_run_recorded",
        "rollback",
    }
)


def test_reason_codes_are_the_stable_snake_case_contract() -> None:
    # Decision codes are part of the one closed set (which also holds how
    # rollbacks end); they are stable snake_case metric labels.
    codes = {code.value for code in ReasonCode}
    assert DECISION_CODES <= codes
    assert all(c.islower() and " " not in c and "-" not in c for c in codes)
    assert type(run().reason_code) is str  # a plain string for journal and metric labels


def test_signal_for_another_target_is_rejected_as_a_wiring_bug() -> None:
    other = signal(target=Target("shop", "checkout"))
    with pytest.raises(ValueError, match=r"shop/checkout.*shop/cart"):
        run(sig=other)


# --- 1. the signal itself ------------------------------------------------------


def test_resolved_signal_is_skipped_even_when_a_rollback_would_apply() -> None:
    decision = run(sig=signal(SignalStatus.RESOLVED))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "signal_resolved")
    assert "error_ratio" in decision.reason and "shop/cart" in decision.reason


def test_no_data_signal_is_skipped_because_no_data_is_never_a_trigger() -> None:
    decision = run(sig=signal(SignalStatus.NO_DATA, value=None))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "no_data")
    assert "never a trigger" in decision.reason


# --- 2. may rollbackd act on the target ----------------------------------------


def test_missing_deployment_is_skipped_as_target_not_found() -> None:
    decision = run(cluster=facts(exists=False, revisions=()))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "target_not_found")
    assert "shop/cart" in decision.reason


def test_namespace_outside_the_allow_list_is_skipped() -> None:
    decision = run(policy=Policy(namespace_allowed=False))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "namespace_not_allowed")
    assert "namespace shop" in decision.reason


@pytest.mark.parametrize("value", ["false", "False", " FALSE "])
def test_opt_out_annotation_skips_even_when_policy_says_enabled(value: str) -> None:
    decision = run(
        cluster=facts(annotations={ANNOTATION_ENABLED: value}), policy=Policy(enabled=True)
    )
    assert (decision.action, decision.reason_code) == (Action.SKIP, "opted_out")
    assert ANNOTATION_ENABLED in decision.reason


def test_enabled_annotation_with_another_value_does_not_opt_out() -> None:
    decision = run(cluster=facts(annotations={ANNOTATION_ENABLED: "true"}))
    assert decision.action is Action.ROLLBACK


def test_target_disabled_by_policy_is_skipped_as_opted_out() -> None:
    decision = run(policy=Policy(enabled=False))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "opted_out")
    assert "policy" in decision.reason


# --- 3. a rollback in flight ---------------------------------------------------


def test_signal_during_a_rollback_in_flight_joins_it() -> None:
    history = History(in_flight=rollback_record(Phase.VERIFYING, rid="rb-42"))
    decision = run(history=history)
    assert decision.action is Action.JOIN
    assert decision.reason_code == "rollback_in_flight"
    assert decision.rollback_id == "rb-42"
    assert "rb-42" in decision.reason and "VERIFYING" in decision.reason


def test_running_rollback_recorded_on_the_deployment_counts_as_in_flight() -> None:
    state = RollbackState(
        rollback_id="rb-other-replica",
        phase=Phase.ROLLING_BACK,
        from_revision=7,
        to_revision=6,
        started_at=NOW - minutes(1),
        updated_at=NOW - minutes(1),
        reason_code="rollback",
    )
    decision = run(cluster=facts(annotations={ANNOTATION_ROLLBACK: encode_state(state)}))
    assert (decision.action, decision.rollback_id) == (Action.JOIN, "rb-other-replica")


def test_finished_rollback_recorded_on_the_deployment_does_not_block() -> None:
    state = RollbackState(
        rollback_id="rb-old",
        phase=Phase.ROLLBACK_COMPLETED,
        from_revision=4,
        to_revision=3,
        started_at=NOW - timedelta(days=4),
        updated_at=NOW - timedelta(days=4),
        reason_code="rollback",
    )
    decision = run(cluster=facts(annotations={ANNOTATION_ROLLBACK: encode_state(state)}))
    assert decision.action is Action.ROLLBACK


def test_unreadable_state_annotation_is_not_taken_for_a_rollback_in_flight() -> None:
    decision = run(cluster=facts(annotations={ANNOTATION_ROLLBACK: "{not json"}))
    assert decision.action is Action.ROLLBACK


def test_join_wins_over_a_breach_of_the_restored_revision_during_verification() -> None:
    revisions = (
        revision(8, image="shop/cart:6", created_ago=timedelta(days=3), restored_by="rb-42"),
        revision(7, created_ago=minutes(10), ran_for=minutes(8)),
    )
    history = History(
        in_flight=rollback_record(Phase.VERIFYING, rid="rb-42"), restored_revisions=(8,)
    )
    decision = run(cluster=facts(revisions=revisions, rollout_ago=minutes(2)), history=history)
    assert (decision.action, decision.rollback_id) == (Action.JOIN, "rb-42")


# --- 4-6. our own recent work, humans in control ---------------------------------


def restored_scenario(*, restored_by: str | None = "rb-1") -> ClusterFacts:
    """rollbackd restored revision 6 as revision 8 two minutes ago."""
    return facts(
        revisions=(
            revision(
                8, image="shop/cart:6", created_ago=timedelta(days=3), restored_by=restored_by
            ),
            revision(7, created_ago=minutes(12), ran_for=minutes(10)),
            revision(5, created_ago=timedelta(days=9), ran_for=timedelta(days=6)),
        ),
        rollout_ago=minutes(2),
    )


def test_breach_on_a_revision_rollbackd_restored_escalates_without_ping_pong() -> None:
    decision = run(sig=signal(started_ago=minutes(1)), cluster=restored_scenario())
    assert decision.action is Action.ESCALATE
    assert decision.reason_code == "restored_revision_breaching"
    assert "revision 8" in decision.reason and "rb-1" in decision.reason
    assert "manual rollback needed" in decision.reason


def test_revision_the_history_lists_as_restored_escalates_without_ping_pong() -> None:
    decision = run(
        sig=signal(started_ago=minutes(1)),
        cluster=restored_scenario(restored_by=None),
        history=History(restored_revisions=(8,)),
    )
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "restored_revision_breaching",
    )


def restored_and_ready(ready_ago: timedelta, *, rid: str = "rb-1") -> ClusterFacts:
    """restored_scenario, finished: the state annotation says when revision 8 was ready."""
    state = RollbackState(
        rid,
        Phase.ROLLBACK_COMPLETED,
        7,
        6,
        NOW - minutes(3),
        NOW,
        "rollback",
        ready_at=NOW - ready_ago,
    )
    return dataclasses.replace(
        restored_scenario(restored_by=rid), annotations={ANNOTATION_ROLLBACK: encode_state(state)}
    )


def test_an_anomaly_that_began_before_the_restore_was_ready_joins_the_finished_rollback() -> None:
    ready_ago = minutes(1)
    late = signal(started_ago=ready_ago + timedelta(microseconds=1))
    decision = run(sig=late, cluster=restored_and_ready(ready_ago))
    assert (decision.action, decision.reason_code) == (Action.JOIN, "anomaly_before_restore")
    assert decision.rollback_id == "rb-1"
    assert "about the replaced revision" in decision.reason


def test_an_anomaly_that_began_when_the_restore_was_ready_is_about_the_restored_revision() -> None:
    ready_ago = minutes(1)
    decision = run(sig=signal(started_ago=ready_ago), cluster=restored_and_ready(ready_ago))
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "restored_revision_breaching",
    )


def test_a_breach_first_seen_after_the_restore_on_evidence_from_before_it_joins() -> None:
    # A new leader's first look: seen 5 s after ready, its 30 s window reaching back before.
    ready_ago = minutes(1)
    first_look = signal(
        started_ago=ready_ago - timedelta(seconds=5),
        evidence_since=NOW - ready_ago - timedelta(seconds=25),
    )
    decision = run(sig=first_look, cluster=restored_and_ready(ready_ago))
    assert (decision.action, decision.reason_code) == (Action.JOIN, "anomaly_before_restore")
    assert decision.rollback_id == "rb-1"
    assert "first seen 5s after" in decision.reason
    assert "reaching back 25s before" in decision.reason


def test_a_breach_whose_evidence_begins_when_the_restore_was_ready_is_not_attributed() -> None:
    ready_ago = minutes(1)
    fresh = signal(started_ago=ready_ago - timedelta(seconds=5), evidence_since=NOW - ready_ago)
    decision = run(sig=fresh, cluster=restored_and_ready(ready_ago))
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "restored_revision_breaching",
    )


def test_attribution_needs_the_current_revision_to_be_the_one_restored() -> None:
    # The state names another rollback than the one that restored revision 8.
    cluster = restored_and_ready(minutes(1), rid="rb-other")
    cluster = dataclasses.replace(
        cluster,
        revisions=tuple(
            dataclasses.replace(r, restored_by="rb-1") if r.revision == 8 else r
            for r in cluster.revisions
        ),
    )
    decision = run(sig=signal(started_ago=minutes(5)), cluster=cluster)
    assert decision.reason_code != "anomaly_before_restore"


def test_restored_revision_breach_pages_even_within_cooldown() -> None:
    history = History(
        last_finished=rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=minutes(1))
    )
    decision = run(sig=signal(started_ago=minutes(1)), cluster=restored_scenario(), history=history)
    assert decision.reason_code == "restored_revision_breaching"


def test_recent_rollback_puts_the_target_in_cooldown() -> None:
    history = History(
        last_finished=rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=minutes(12))
    )
    decision = run(history=history, policy=Policy(cooldown=minutes(30)))
    assert (decision.action, decision.reason_code) == (Action.SKIP, "cooldown")
    assert "12m ago" in decision.reason
    assert "cooldown is 30m, 18m left" in decision.reason
    assert "rb-1" in decision.reason


def test_cooldown_ends_exactly_when_the_cooldown_has_elapsed() -> None:
    history = History(
        last_finished=rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=minutes(30))
    )
    assert run(history=history, policy=Policy(cooldown=minutes(30))).action is Action.ROLLBACK


def test_cooldown_counts_from_the_last_update_when_the_finish_time_is_missing() -> None:
    last = dataclasses.replace(
        rollback_record(Phase.ESCALATED, finished_ago=minutes(5)), finished_at=None
    )
    decision = run(history=History(last_finished=last))
    assert decision.reason_code == "cooldown"


def test_deployment_paused_by_a_human_escalates() -> None:
    decision = run(cluster=facts(paused=True))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "paused")
    assert "paused at revision 7" in decision.reason


# --- 7. was it the rollout ------------------------------------------------------


def test_anomaly_without_recent_rollout_escalates_not_caused_by_rollout() -> None:
    decision = run(
        cluster=facts(rollout_ago=timedelta(hours=2)), policy=Policy(change_window=minutes(30))
    )
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")
    assert decision.reason.startswith(
        "the newest rollout of shop/cart (revision 7) started 2h ago, 1h54m before error_ratio"
    )
    assert "outside the 30m change window" in decision.reason
    assert "not caused by a recent rollout" in decision.reason


def test_rollout_started_after_the_anomaly_escalates_not_caused_by_rollout() -> None:
    decision = run(sig=signal(started_ago=minutes(6)), cluster=facts(rollout_ago=minutes(2)))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")
    assert "started 4m after error_ratio" in decision.reason


def test_unknown_rollout_start_escalates_not_caused_by_rollout() -> None:
    decision = run(cluster=facts(rollout_ago=None))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_recent_rollout")
    assert "unknown" in decision.reason


@pytest.mark.parametrize(
    ("rollout_before_anomaly", "action"),
    [
        (timedelta(0), Action.ROLLBACK),
        (minutes(30), Action.ROLLBACK),
        (minutes(30) + timedelta(seconds=1), Action.ESCALATE),
    ],
)
def test_change_window_includes_both_of_its_edges(
    rollout_before_anomaly: timedelta, action: Action
) -> None:
    cluster = facts(rollout_ago=minutes(6) + rollout_before_anomaly)
    decision = run(
        sig=signal(started_ago=minutes(6)),
        cluster=cluster,
        policy=Policy(change_window=minutes(30)),
    )
    assert decision.action is action


# --- 8. what to roll back to ----------------------------------------------------


def test_single_revision_escalates_manual_rollback_needed() -> None:
    decision = run(cluster=facts(revisions=(revision(1, created_ago=minutes(10)),)))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_previous_revision")
    assert decision.from_revision == 1
    assert "manual rollback needed" in decision.reason


def test_no_known_revisions_escalates_manual_rollback_needed() -> None:
    decision = run(cluster=facts(revisions=()))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "no_previous_revision")


def test_previous_revisions_with_the_current_template_are_not_candidates() -> None:
    same = template("shop/cart:7")
    same_with_hash = template("shop/cart:7")
    same_with_hash["metadata"]["labels"]["pod-template-hash"] = "abc"
    revisions = (
        revision(7, created_ago=minutes(10), tpl=same),
        revision(6, created_ago=timedelta(days=3), ran_for=timedelta(days=2), tpl=same_with_hash),
    )
    decision = run(cluster=facts(revisions=revisions))
    assert decision.reason_code == "no_previous_revision"
    assert "1 older, all with the same template" in decision.reason


def test_identical_previous_revision_is_passed_over_for_an_older_different_one() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, image="shop/cart:7", created_ago=timedelta(days=3), ran_for=timedelta(days=2)),
        revision(5, created_ago=timedelta(days=9), ran_for=timedelta(days=6)),
    )
    assert run(cluster=facts(revisions=revisions)).to_revision == 5


def test_unstable_previous_revision_is_passed_over_for_an_older_stable_one() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, created_ago=minutes(12), ran_for=minutes(2)),
        revision(5, created_ago=timedelta(days=9), ran_for=timedelta(days=6)),
    )
    decision = run(cluster=facts(revisions=revisions), policy=Policy(min_stable=minutes(10)))
    assert (decision.action, decision.to_revision) == (Action.ROLLBACK, 5)


def test_no_stable_previous_revision_escalates_saying_how_long_each_ran() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, created_ago=minutes(12), ran_for=minutes(2)),
        revision(5, created_ago=minutes(20)),
    )
    decision = run(cluster=facts(revisions=revisions), policy=Policy(min_stable=minutes(10)))
    assert (decision.action, decision.reason_code) == (
        Action.ESCALATE,
        "no_stable_previous_revision",
    )
    assert "revision 6: 2m" in decision.reason
    assert "revision 5: replacement time unknown" in decision.reason
    assert "10m" in decision.reason and "manual rollback needed" in decision.reason


def test_revision_that_ran_exactly_min_stable_counts_as_stable() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, created_ago=minutes(20), ran_for=minutes(10)),
    )
    decision = run(cluster=facts(revisions=revisions), policy=Policy(min_stable=minutes(10)))
    assert decision.to_revision == 6


def test_order_of_revisions_in_the_facts_does_not_matter() -> None:
    shuffled = tuple(reversed(default_revisions()))
    assert run(cluster=facts(revisions=shuffled)) == run()


# --- 9. the guard --------------------------------------------------------------


def test_rollback_that_would_change_resources_escalates_guard_disallowed_fields() -> None:
    old = template("shop/cart:6", resources={"limits": {"memory": "256Mi"}})
    revisions = (
        revision(
            7,
            created_ago=minutes(10),
            tpl=template("shop/cart:7", resources={"limits": {"memory": "1Gi"}}),
        ),
        revision(6, created_ago=timedelta(days=3), ran_for=timedelta(days=2), tpl=old),
    )
    decision = run(cluster=facts(revisions=revisions))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "guard_disallowed_fields")
    assert (decision.from_revision, decision.to_revision) == (7, 6)
    assert "spec.containers[app].resources.limits.memory" in decision.reason
    assert "spec.containers[app].image" not in decision.reason


def test_a_decision_diffs_only_the_revision_it_chooses_and_later_ones_reuse_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The diff of a real pod template is the costliest step of a decision:
    # older revisions behind the chosen one are not diffed, the guard reuses
    # it, and so do later decisions while both templates stay the same.
    diffed: list[Any] = []

    def counting(current: Any, candidate: Any) -> list[str]:
        diffed.append(candidate)
        return template_diff_paths(current, candidate)

    monkeypatch.setattr(guard, "template_diff_paths", counting)
    monkeypatch.setattr(decide_inputs, "TEMPLATE_DIFFS", guard.TemplateDiffMemo())
    decision = run()
    assert (decision.action, decision.to_revision) == (Action.ROLLBACK, 6)
    assert diffed == [template("shop/cart:6")]
    assert run() == decision
    assert len(diffed) == 1


def test_the_next_decision_diffs_the_template_as_it_is_then() -> None:
    # Nothing of one decision's diff outlives it: the same revisions with a
    # current template changed in a disallowed field since escalate.
    revisions = default_revisions()
    assert run(cluster=facts(revisions=revisions)).action is Action.ROLLBACK
    changed = facts(
        revisions=revisions,
        template=template("shop/cart:7", resources={"limits": {"memory": "1Gi"}}),
    )
    decision = run(cluster=changed)
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "guard_disallowed_fields")
    assert "spec.containers[app].resources.limits.memory" in decision.reason


def test_policy_can_allow_more_fields_for_a_target() -> None:
    revisions = (
        revision(
            7,
            created_ago=minutes(10),
            tpl=template("shop/cart:7", resources={"limits": {"cpu": "2"}}),
        ),
        revision(6, created_ago=timedelta(days=3), ran_for=timedelta(days=2)),
    )
    policy = Policy(allowed_template_fields=("image", "resources"))
    assert run(cluster=facts(revisions=revisions), policy=policy).action is Action.ROLLBACK


def test_release_changes_in_env_args_command_and_annotations_roll_back_by_default() -> None:
    current = template(
        "shop/cart:7", env=[{"name": "MODE", "value": "new"}], args=["--v7"], command=["serve"]
    )
    current["metadata"]["annotations"] = {"release": "7"}
    old = template(
        "shop/cart:6", env=[{"name": "MODE", "value": "old"}], args=["--v6"], command=["run"]
    )
    old["metadata"]["annotations"] = {"release": "6"}
    revisions = (
        revision(7, created_ago=minutes(10), tpl=current),
        revision(6, created_ago=timedelta(days=3), ran_for=timedelta(days=2), tpl=old),
    )
    assert run(cluster=facts(revisions=revisions)).action is Action.ROLLBACK


@pytest.mark.parametrize("mutable", ["shop/cart:latest", "shop/cart"])
def test_restoring_a_mutable_image_reference_escalates(mutable: str) -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, image=mutable, created_ago=timedelta(days=3), ran_for=timedelta(days=2)),
    )
    decision = run(cluster=facts(revisions=revisions))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "guard_mutable_image")
    assert mutable in decision.reason and "revision 6" in decision.reason


def test_policy_can_allow_restoring_mutable_images() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(
            6, image="shop/cart:latest", created_ago=timedelta(days=3), ran_for=timedelta(days=2)
        ),
    )
    decision = run(cluster=facts(revisions=revisions), policy=Policy(allow_mutable_images=True))
    assert decision.action is Action.ROLLBACK


def test_digest_pinned_image_is_restored() -> None:
    pinned = "shop/cart@sha256:" + "c" * 64
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(6, image=pinned, created_ago=timedelta(days=3), ran_for=timedelta(days=2)),
    )
    assert run(cluster=facts(revisions=revisions)).action is Action.ROLLBACK


# --- 10. dry run -----------------------------------------------------------------


def test_dry_run_policy_reports_the_rollback_it_would_do() -> None:
    decision = run(policy=Policy(dry_run=True))
    assert (decision.action, decision.reason_code) == (Action.DRY_RUN, "dry_run")
    assert (decision.from_revision, decision.to_revision) == (7, 6)
    assert decision.reason.startswith("dry run (policy): would roll back shop/cart from revision 7")


def test_the_same_would_be_rollback_reported_again_joins_its_dry_run_record() -> None:
    earlier = dataclasses.replace(
        rollback_record(Phase.DRY_RUN, finished_ago=minutes(1)), kind=RecordKind.DRY_RUN
    )
    decision = run(policy=Policy(dry_run=True), history=History(last_dry_run=earlier))
    assert (decision.action, decision.reason_code) == (Action.JOIN, "dry_run_recorded")
    assert decision.rollback_id == "rb-1"


def test_a_dry_run_record_older_than_the_cooldown_is_a_new_incident() -> None:
    earlier = dataclasses.replace(
        rollback_record(Phase.DRY_RUN, finished_ago=minutes(40)), kind=RecordKind.DRY_RUN
    )
    decision = run(
        policy=Policy(dry_run=True, cooldown=minutes(30)), history=History(last_dry_run=earlier)
    )
    assert decision.action is Action.DRY_RUN


def test_a_dry_run_record_of_another_revision_pair_is_a_new_incident() -> None:
    earlier = dataclasses.replace(
        rollback_record(Phase.DRY_RUN, finished_ago=minutes(1)),
        kind=RecordKind.DRY_RUN,
        from_revision=6,
    )
    decision = run(policy=Policy(dry_run=True), history=History(last_dry_run=earlier))
    assert decision.action is Action.DRY_RUN


def test_dry_run_annotation_reports_the_rollback_it_would_do() -> None:
    decision = run(cluster=facts(annotations={ANNOTATION_DRY_RUN: "true"}))
    assert (decision.action, decision.to_revision) == (Action.DRY_RUN, 6)
    assert ANNOTATION_DRY_RUN in decision.reason


def test_dry_run_annotation_false_cannot_override_a_dry_run_policy() -> None:
    decision = run(
        cluster=facts(annotations={ANNOTATION_DRY_RUN: "false"}), policy=Policy(dry_run=True)
    )
    assert decision.action is Action.DRY_RUN


def test_dry_run_keeps_escalations_as_escalations() -> None:
    decision = run(cluster=facts(paused=True), policy=Policy(dry_run=True))
    assert (decision.action, decision.reason_code) == (Action.ESCALATE, "paused")


def test_dry_run_keeps_joins_and_skips() -> None:
    in_flight = History(in_flight=rollback_record(Phase.ROLLING_BACK))
    assert run(history=in_flight, policy=Policy(dry_run=True)).action is Action.JOIN
    resolved = signal(SignalStatus.RESOLVED)
    assert run(sig=resolved, policy=Policy(dry_run=True)).action is Action.SKIP


def test_gitops_managed_target_rollback_says_git_must_be_reverted() -> None:
    decision = run(cluster=facts(gitops_owner="argocd:shop-cart"))
    assert decision.action is Action.ROLLBACK
    assert "argocd:shop-cart" in decision.reason and "Git must be reverted" in decision.reason


# --- check order ---------------------------------------------------------------


def _in_cooldown() -> History:
    return History(last_finished=rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=minutes(1)))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"sig": signal(SignalStatus.RESOLVED), "cluster": facts(exists=False)}, "signal_resolved"),
        (
            {"cluster": facts(exists=False), "policy": Policy(namespace_allowed=False)},
            "target_not_found",
        ),
        ({"policy": Policy(namespace_allowed=False, enabled=False)}, "namespace_not_allowed"),
        (
            {
                "policy": Policy(enabled=False),
                "history": History(in_flight=rollback_record(Phase.PLANNING)),
            },
            "opted_out",
        ),
        (
            {
                "history": History(
                    in_flight=rollback_record(Phase.PLANNING),
                    last_finished=_in_cooldown().last_finished,
                )
            },
            "rollback_in_flight",
        ),
        ({"history": _in_cooldown(), "cluster": facts(paused=True)}, "cooldown"),
        ({"cluster": facts(paused=True, rollout_ago=timedelta(days=1))}, "paused"),
        (
            {
                "cluster": facts(
                    rollout_ago=timedelta(days=1),
                    revisions=(revision(7, created_ago=timedelta(days=1)),),
                )
            },
            "no_recent_rollout",
        ),
    ],
)
def test_the_earlier_rule_wins_when_several_apply(kwargs: dict[str, Any], expected: str) -> None:
    assert run(**kwargs).reason_code == expected


def test_disallowed_fields_are_reported_before_mutable_images() -> None:
    revisions = (
        revision(7, created_ago=minutes(10)),
        revision(
            6,
            created_ago=timedelta(days=3),
            ran_for=timedelta(days=2),
            tpl=template("shop/cart:latest", resources={"limits": {"cpu": "1"}}),
        ),
    )
    assert run(cluster=facts(revisions=revisions)).reason_code == "guard_disallowed_fields"


# --- properties over generated scenarios -------------------------------------
#
# A scenario starts from a target on which a rollback is plausible (a recent
# rollout, older revisions with varied images, pod shapes and lifetimes) and
# then applies a few perturbations, each of which may trip one safety rule.
# Rollbacks, escalations, skips and joins all come up often that way.

_IMAGES = ("shop/cart:4", "shop/cart:5", "shop/cart:6", "shop/cart:latest", "shop/cart")
_LIFETIMES = (minutes(1), minutes(10), timedelta(hours=5), timedelta(days=2))


@dataclasses.dataclass(frozen=True)
class Scenario:
    signal: Signal
    facts: ClusterFacts
    history: History
    policy: Policy
    now: datetime = NOW

    def decide(self) -> Decision:
        return decide(self.signal, self.facts, self.history, self.policy, self.now)

    def with_facts(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, facts=dataclasses.replace(self.facts, **changes))

    def with_history(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, history=dataclasses.replace(self.history, **changes))

    def with_policy(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, policy=dataclasses.replace(self.policy, **changes))

    def with_signal(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, signal=dataclasses.replace(self.signal, **changes))


def _running_state() -> str:
    return encode_state(RollbackState("rb-annotated", Phase.VERIFYING, 7, 6, NOW, NOW, "rollback"))


def _restore_current(s: Scenario) -> Scenario:
    newest = max(r.revision for r in s.facts.revisions)
    revisions = tuple(
        dataclasses.replace(r, restored_by="rb-earlier") if r.revision == newest else r
        for r in s.facts.revisions
    )
    return s.with_facts(revisions=revisions)


def _annotate(s: Scenario, key: str, value: str) -> Scenario:
    return s.with_facts(annotations={**s.facts.annotations, key: value})


PERTURBATIONS: dict[str, Any] = {
    "resolved": lambda s: s.with_signal(status=SignalStatus.RESOLVED),
    "no_data": lambda s: s.with_signal(status=SignalStatus.NO_DATA, value=None),
    "missing": lambda s: s.with_facts(exists=False),
    "namespace": lambda s: s.with_policy(namespace_allowed=False),
    "disabled": lambda s: s.with_policy(enabled=False),
    "opt_out_annotation": lambda s: _annotate(s, ANNOTATION_ENABLED, "false"),
    "in_flight": lambda s: s.with_history(
        in_flight=rollback_record(Phase.ROLLING_BACK, rid="rb-now")
    ),
    "state_annotation": lambda s: _annotate(s, ANNOTATION_ROLLBACK, _running_state()),
    "restored_current": _restore_current,
    "restored_in_history": lambda s: s.with_history(
        restored_revisions=(max(r.revision for r in s.facts.revisions),)
    ),
    "recent_rollback": lambda s: s.with_history(
        last_finished=rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=minutes(5))
    ),
    "old_rollback": lambda s: s.with_history(
        last_finished=rollback_record(Phase.ESCALATED, finished_ago=timedelta(days=3))
    ),
    "paused": lambda s: s.with_facts(paused=True),
    "rollout_unknown": lambda s: s.with_facts(rollout_started_at=None),
    "rollout_after_anomaly": lambda s: s.with_signal(started_at=NOW - timedelta(days=1)),
    "dry_run_policy": lambda s: s.with_policy(dry_run=True),
    "dry_run_annotation": lambda s: _annotate(s, ANNOTATION_DRY_RUN, "true"),
    "gitops": lambda s: s.with_facts(gitops_owner="flux:Kustomization/shop"),
    "mutable_allowed": lambda s: s.with_policy(allow_mutable_images=True),
    "resources_allowed": lambda s: s.with_policy(allowed_template_fields=("image", "resources")),
}


def _older_revisions(*, likely_rollback: bool) -> Callable[[int], st.SearchStrategy[RevisionInfo]]:
    """Revision ``number`` of a scenario's history, older than the current one.

    Every strategy is built once, not on each draw: Hypothesis works out a
    new strategy's properties on first use, and doing that on every draw was
    half the CPU of these tests. The choices drawn, and so the space of
    examples, are the same.
    """
    cpus = st.sampled_from([None, None, "1"] if likely_rollback else [None, "1", "2"])
    lifetimes = st.sampled_from(_LIFETIMES)
    ages_past_lifetime = st.sampled_from([minutes(10), timedelta(days=3)])
    # Whether the revision's run time is known: the same odds as sampling
    # from ``[lifetime] * 4 + [None]`` (or 2 + 1), the same choice drawn.
    known_run_time = st.sampled_from([True] * (4 if likely_rollback else 2) + [False])
    images = st.sampled_from((*_IMAGES, "shop/cart:7"))

    @st.composite
    def older_revision(draw: st.DrawFn, number: int) -> RevisionInfo:
        cpu = draw(cpus)
        extra = {"resources": {"limits": {"cpu": cpu}}} if cpu else {}
        lifetime = draw(lifetimes)
        return revision(
            number,
            created_ago=lifetime + draw(ages_past_lifetime),
            ran_for=lifetime if draw(known_run_time) else None,
            tpl=template(draw(images), **extra),
        )

    return functools.cache(older_revision)


def scenarios(
    perturbations: Sequence[str] = tuple(PERTURBATIONS),
    *,
    likely_rollback: bool = False,
) -> st.SearchStrategy[Scenario]:
    """A generated scenario; ``likely_rollback`` narrows the choices towards a rollback."""
    currents = st.integers(2, 12)
    older_numbers_below = {
        current: st.lists(
            st.integers(1, current - 1),
            min_size=1 if likely_rollback else 0,
            max_size=4,
            unique=True,
        )
        for current in range(2, 13)
    }
    older_revision = _older_revisions(likely_rollback=likely_rollback)
    # A permutation of n indices makes the same swaps as one of n revisions.
    orders = {n: st.permutations(range(n)) for n in range(1, 6)}
    rollout_agos = st.sampled_from(
        [minutes(8), minutes(20)] + ([] if likely_rollback else [timedelta(hours=3)])
    )
    signal_ages = st.sampled_from([timedelta(0), minutes(1), minutes(6)])
    windows = st.sampled_from(
        [minutes(30), timedelta(hours=4)] + ([] if likely_rollback else [minutes(5)])
    )
    min_stables = st.sampled_from(
        [minutes(1), minutes(10)] + ([] if likely_rollback else [timedelta(hours=1)])
    )
    perturbation_sets = st.sets(st.sampled_from(sorted(perturbations)), max_size=3)

    @st.composite
    def scenario(draw: st.DrawFn) -> Scenario:
        current = draw(currents)
        older_numbers = draw(older_numbers_below[current])
        rollout_ago = draw(rollout_agos)
        revisions = (
            revision(current, image="shop/cart:7", created_ago=rollout_ago),
            *(draw(older_revision(n)) for n in older_numbers),
        )
        base = Scenario(
            signal=signal(started_ago=draw(signal_ages)),
            facts=facts(
                revisions=tuple(revisions[i] for i in draw(orders[len(revisions)])),
                rollout_ago=rollout_ago,
            ),
            history=History(),
            policy=Policy(change_window=draw(windows), min_stable=draw(min_stables)),
        )
        for name in sorted(draw(perturbation_sets)):
            base = PERTURBATIONS[name](base)
        return base

    return scenario()


# Perturbations that never stand in the way of a rollback, for the
# properties about what a rollback looks like (so most examples roll back).
HARMLESS = ("dry_run_policy", "gitops", "mutable_allowed", "old_rollback", "resources_allowed")
ACTING = {Action.ROLLBACK, Action.DRY_RUN}


@given(scenarios(), st.sampled_from([SignalStatus.RESOLVED, SignalStatus.NO_DATA]))
def test_resolved_or_no_data_signal_is_never_a_trigger(
    scenario: Scenario, status: SignalStatus
) -> None:
    decision = scenario.with_signal(status=status).decide()
    assert decision.action is Action.SKIP
    assert decision.reason_code in {"signal_resolved", "no_data"}


@given(scenarios(HARMLESS, likely_rollback=True))
def test_rollback_goes_to_the_newest_older_different_and_stable_revision(
    scenario: Scenario,
) -> None:
    decision = scenario.decide()
    assume(decision.action in ACTING)
    by_number = {r.revision: r for r in scenario.facts.revisions}
    current = by_number[max(by_number)]
    assert decision.from_revision == current.revision
    assert decision.to_revision is not None and decision.to_revision < decision.from_revision
    chosen = by_number[decision.to_revision]
    min_stable = scenario.policy.min_stable

    def candidate(r: RevisionInfo) -> bool:
        differs = template_diff_paths(current.template, r.template) != []
        return differs and r.replaced_at is not None and r.replaced_at - r.created_at >= min_stable

    assert candidate(chosen)
    assert not any(
        candidate(r) for r in by_number.values() if chosen.revision < r.revision < current.revision
    )


@given(scenarios(HARMLESS))
def test_rollout_outside_the_change_window_is_never_rolled_back(scenario: Scenario) -> None:
    started = scenario.facts.rollout_started_at
    lead = None if started is None else scenario.signal.started_at - started
    if lead is None or not timedelta(0) <= lead <= scenario.policy.change_window:
        assert scenario.decide().action not in ACTING


@given(scenarios(HARMLESS, likely_rollback=True))
def test_rollback_only_restores_allowed_fields_and_immutable_images(scenario: Scenario) -> None:
    decision = scenario.decide()
    assume(decision.action in ACTING)
    chosen = next(r for r in scenario.facts.revisions if r.revision == decision.to_revision)
    paths = template_diff_paths(scenario.facts.template, chosen.template)
    assert disallowed_changes(paths, scenario.policy.allowed_template_fields) == []
    if not scenario.policy.allow_mutable_images:
        assert mutable_images(chosen.template) == []


@given(scenarios())
def test_rollback_never_ignores_a_skip_or_escalation_rule(scenario: Scenario) -> None:
    decision = scenario.decide()
    if decision.action in ACTING:
        assert scenario.signal.status is SignalStatus.FIRING
        assert scenario.facts.exists and not scenario.facts.paused
        assert scenario.policy.enabled and scenario.policy.namespace_allowed
        assert ANNOTATION_ENABLED not in scenario.facts.annotations
        assert scenario.history.in_flight is None
        assert ANNOTATION_ROLLBACK not in scenario.facts.annotations


@given(scenarios())
def test_current_revision_restored_by_rollbackd_is_never_rolled_back(scenario: Scenario) -> None:
    assert _restore_current(scenario).decide().action not in ACTING


@given(scenarios())
def test_rollback_in_flight_is_joined_never_doubled(scenario: Scenario) -> None:
    in_flight = rollback_record(Phase.VERIFYING, rid="rb-in-flight")
    decision = scenario.with_history(in_flight=in_flight).decide()
    assert decision.action in {Action.SKIP, Action.JOIN}
    if decision.action is Action.JOIN:
        assert decision.rollback_id == "rb-in-flight"


@given(scenarios(), st.sampled_from([timedelta(0), minutes(1), minutes(29)]))
def test_nothing_is_rolled_back_within_the_cooldown(
    scenario: Scenario, finished_ago: timedelta
) -> None:
    last = rollback_record(Phase.ROLLBACK_COMPLETED, finished_ago=finished_ago)
    scenario = scenario.with_history(last_finished=last).with_policy(cooldown=minutes(30))
    assert scenario.decide().action not in ACTING


@given(scenarios())
def test_dry_run_never_rolls_back(scenario: Scenario) -> None:
    assert scenario.with_policy(dry_run=True).decide().action is not Action.ROLLBACK


@given(scenarios())
def test_dry_run_turns_a_rollback_into_a_report_and_changes_nothing_else(
    scenario: Scenario,
) -> None:
    real = scenario.with_policy(dry_run=False).decide()
    dry = scenario.with_policy(dry_run=True).decide()
    if real.action is Action.ROLLBACK:
        assert dry.action is Action.DRY_RUN
        assert (dry.from_revision, dry.to_revision) == (real.from_revision, real.to_revision)
    else:
        assert (dry.action, dry.reason_code) == (real.action, real.reason_code)


@given(scenarios())
def test_decision_is_deterministic_and_explains_itself(scenario: Scenario) -> None:
    first, second = scenario.decide(), scenario.decide()
    assert first == second
    assert "shop/cart" in first.reason
    assert first.reason_code in {code.value for code in ReasonCode}
    assert (first.action is Action.JOIN) == (first.rollback_id is not None)


def _shift(scenario: Scenario, by: timedelta) -> Scenario:
    """The same scenario with every point in time moved by ``by``."""

    def moved(at: datetime | None) -> datetime | None:
        return None if at is None else at + by

    def rollback(r: Rollback | None) -> Rollback | None:
        if r is None:
            return None
        return dataclasses.replace(
            r,
            started_at=r.started_at + by,
            updated_at=r.updated_at + by,
            finished_at=moved(r.finished_at),
        )

    revisions = tuple(
        dataclasses.replace(r, created_at=r.created_at + by, replaced_at=moved(r.replaced_at))
        for r in scenario.facts.revisions
    )
    return Scenario(
        signal=dataclasses.replace(
            scenario.signal,
            started_at=scenario.signal.started_at + by,
            observed_at=scenario.signal.observed_at + by,
        ),
        facts=dataclasses.replace(
            scenario.facts,
            revisions=revisions,
            rollout_started_at=moved(scenario.facts.rollout_started_at),
        ),
        history=dataclasses.replace(
            scenario.history,
            in_flight=rollback(scenario.history.in_flight),
            last_finished=rollback(scenario.history.last_finished),
        ),
        policy=scenario.policy,
        now=scenario.now + by,
    )


@given(
    scenarios(),
    st.sampled_from([timedelta(days=-9000), timedelta(seconds=1), timedelta(days=36500)]),
)
def test_decision_depends_on_relative_times_only_never_on_the_wall_clock(
    scenario: Scenario, by: timedelta
) -> None:
    assert _shift(scenario, by).decide() == scenario.decide()


@given(scenarios())
def test_every_decision_carries_a_decision_code(scenario: Scenario) -> None:
    decision = decide(scenario.signal, scenario.facts, scenario.history, scenario.policy, NOW)
    assert decision.reason_code in DECISION_CODES
