"""Approve mode, the pure and in-process parts: who is in approve mode, the answers to a
verdict, the handshake with a waiting rollback, deciding again, and the HTTP contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rollbackd.approval import (
    EVENT_KIND_APPROVED,
    EVENT_KIND_REJECTED,
    Approvals,
    Outcome,
    Verdict,
    answer_from_record,
    give_verdict,
)
from rollbackd.config import ConfigError, Settings
from rollbackd.config.loading import load_settings
from rollbackd.errors import NotLeaderError
from rollbackd.metrics import Metrics
from rollbackd.model import (
    ANNOTATION_MODE,
    ANNOTATION_ROLLBACK,
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.reasons import ReasonCode
from rollbackd.records import annotated_rollback_by_id
from rollbackd.redecide import Redecisions
from rollbackd.server import AuthSettings, create_app
from rollbackd.state import RollbackState, encode_state
from tests.unit.test_decide import NOW, facts, rollback_record, run

T0 = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
SHOP = Target("shop", "checkout")
PAY = Target("payments", "api")


def settings(**policy: Any) -> Settings:
    return Settings.model_validate(
        {
            "prometheus": {"url": "http://prometheus:9090"},
            "webhook": {"allow_unauthenticated": True},
            "policy": policy,
        }
    )


# --- who waits for a human: config and annotation precedence --------------------


def test_auto_is_the_default_and_approve_can_be_set_globally() -> None:
    assert settings().policy_for(SHOP, {})[0].approve is False
    assert settings(mode="approve").policy_for(SHOP, {})[0].approve is True


def test_a_namespace_mode_overrides_the_global_one_both_ways() -> None:
    s = settings(mode="approve", namespace_modes={"shop": "auto"})
    assert s.policy_for(SHOP, {})[0].approve is False
    assert s.policy_for(PAY, {})[0].approve is True
    s = settings(namespace_modes={"payments": "approve"})
    assert (s.policy_for(SHOP, {})[0].approve, s.policy_for(PAY, {})[0].approve) == (False, True)


def test_a_deployment_may_ask_for_approval_but_never_lift_the_operators() -> None:
    s = settings(namespace_modes={"payments": "approve"})
    asked, problems = s.policy_for(SHOP, {ANNOTATION_MODE: " Approve "})
    assert asked.approve is True and problems == ()
    lifted, problems = s.policy_for(PAY, {ANNOTATION_MODE: "auto"})
    assert lifted.approve is True
    assert problems and '"auto" ignored' in problems[0]


def test_a_bad_mode_annotation_is_reported_and_the_configured_mode_stays() -> None:
    policy, problems = settings(mode="approve").policy_for(SHOP, {ANNOTATION_MODE: "yolo"})
    assert policy.approve is True
    assert problems == (
        f'{ANNOTATION_MODE}: ignored bad value \'yolo\', expected "auto" or "approve"',
    )


def test_bad_approval_config_is_refused_at_load_with_the_key_path(tmp_path: Any) -> None:
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        "prometheus: {url: 'http://p:9090'}\n"
        "webhook: {allow_unauthenticated: true}\n"
        "policy: {mode: manual, namespace_modes: {Bad_NS: approve}}\n"
        "approval: {timeout: 0s, on_timeout: ignore}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(str(path))
    text = "\n".join(raised.value.errors)
    for key in ("policy.mode", "policy.namespace_modes", "approval.timeout", "approval.on_timeout"):
        assert key in text, text


# --- answering a verdict from the record ---------------------------------------


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


def rollback(phase: Phase, **changes: Any) -> Rollback:
    return replace(
        Rollback(id="rb-1", target=SHOP, phase=phase, started_at=T0, updated_at=T0), **changes
    )


ALICE = Verdict(True, "alice", T0)
APPROVED_BY_ALICE = [Entry(T0, EVENT_KIND_APPROVED, data={"by": "alice"})]


def test_the_same_approval_again_is_idempotent() -> None:
    outcome = answer_from_record(rollback(Phase.VERIFYING), APPROVED_BY_ALICE, ALICE)
    assert (outcome.status, outcome.phase) == (200, "VERIFYING")
    assert "already approved by alice" in outcome.message


def test_an_approval_by_someone_else_after_it_was_given_is_a_conflict() -> None:
    outcome = answer_from_record(
        rollback(Phase.ROLLING_BACK), APPROVED_BY_ALICE, Verdict(True, "bob", T0)
    )
    assert outcome.status == 409
    assert "already approved by alice" in outcome.message and "ROLLING_BACK" in outcome.message


def test_a_rejection_after_an_approval_is_a_conflict_naming_who() -> None:
    outcome = answer_from_record(
        rollback(Phase.PLANNING), APPROVED_BY_ALICE, Verdict(False, "alice", T0, "no")
    )
    assert outcome.status == 409 and "approved by alice" in outcome.message


def test_a_finished_rollback_is_a_conflict_naming_its_phase_and_why() -> None:
    ended = rollback(Phase.SUPERSEDED, reason_code="superseded", reason="a human deployed web:3.0")
    outcome = answer_from_record(ended, [], ALICE)
    assert (outcome.status, outcome.phase) == (409, "SUPERSEDED")
    assert "has finished: SUPERSEDED" in outcome.message and "web:3.0" in outcome.message
    rejected = [Entry(T0, EVENT_KIND_REJECTED, data={"by": "bob"})]
    outcome = answer_from_record(rollback(Phase.REJECTED), rejected, ALICE)
    assert outcome.status == 409 and "already rejected by bob" in outcome.message


def test_a_recorded_wait_that_no_task_holds_yet_asks_for_a_retry() -> None:
    outcome = answer_from_record(rollback(Phase.PENDING_APPROVAL), [], ALICE)
    assert outcome.status == 503 and "retry" in outcome.message


@dataclass
class FakeJournal:
    rollbacks: dict[str, Rollback] = field(default_factory=dict)

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return self.rollbacks.get(rollback_id)

    async def timeline(self, rollback_id: str) -> list[Entry]:
        return []


async def test_an_unknown_id_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="rb-nope"):
        await give_verdict(Approvals(), FakeJournal(), "rb-nope", ALICE)


def on_deployment(phase: Phase) -> ClusterFacts:
    """A Deployment whose state annotation records rb-1 (another leader wrote it)."""
    state = RollbackState("rb-1", phase, 7, 6, T0, T0, "rollback", holder="replica-a")
    return facts(annotations={ANNOTATION_ROLLBACK: encode_state(state)})


def test_the_deployment_names_a_rollback_its_annotation_records_in_any_phase() -> None:
    waiting, other = on_deployment(Phase.PENDING_APPROVAL), facts()
    found = annotated_rollback_by_id([other, waiting], "rb-1")
    assert found is not None and (found.id, found.phase) == ("rb-1", Phase.PENDING_APPROVAL)
    assert found.target == waiting.target
    done = annotated_rollback_by_id([on_deployment(Phase.ROLLBACK_COMPLETED)], "rb-1")
    assert done is not None and done.phase is Phase.ROLLBACK_COMPLETED
    assert annotated_rollback_by_id([waiting, other], "rb-2") is None


async def test_a_new_leader_still_resuming_a_proposal_it_never_journaled_answers_503() -> None:
    # Its journal is empty; the Deployment says rb-1 waits: retry, not "no such rollback".
    def on_the_deployments(rollback_id: str) -> Rollback | None:
        return annotated_rollback_by_id([on_deployment(Phase.PENDING_APPROVAL)], rollback_id)

    outcome = await give_verdict(Approvals(), FakeJournal(), "rb-1", ALICE, on_the_deployments)
    assert (outcome.status, outcome.phase) == (503, "PENDING_APPROVAL")
    assert "being resumed" in outcome.message
    with pytest.raises(LookupError, match="rb-nope"):
        await give_verdict(Approvals(), FakeJournal(), "rb-nope", ALICE, on_the_deployments)


async def test_a_rollback_another_leader_finished_is_409_on_the_new_leader() -> None:
    def on_the_deployments(rollback_id: str) -> Rollback | None:
        return annotated_rollback_by_id([on_deployment(Phase.ROLLBACK_COMPLETED)], rollback_id)

    outcome = await give_verdict(Approvals(), FakeJournal(), "rb-1", ALICE, on_the_deployments)
    assert (outcome.status, outcome.phase) == (409, "ROLLBACK_COMPLETED")


# --- the handshake with the waiting rollback ------------------------------------


async def test_a_verdict_reaches_the_waiting_rollback_and_its_reply_comes_back() -> None:
    approvals = Approvals()
    with approvals.inbox("rb-1") as inbox:
        submitted = asyncio.create_task(give_verdict(approvals, FakeJournal(), "rb-1", ALICE))
        verdict, reply = await asyncio.wait_for(inbox.get(), 5)
        assert verdict == ALICE
        reply.set_result(Outcome(202, "approved by alice", "PLANNING"))
        assert (await submitted).status == 202


async def test_verdicts_left_unanswered_when_the_wait_ends_are_answered_from_the_record() -> None:
    approvals = Approvals()
    journal = FakeJournal({"rb-1": rollback(Phase.ESCALATED, reason_code="approval_timeout")})
    with approvals.inbox("rb-1"):
        late = asyncio.create_task(give_verdict(approvals, journal, "rb-1", ALICE))
        await asyncio.sleep(0)
        assert not late.done()
    outcome = await asyncio.wait_for(late, 5)
    assert (outcome.status, outcome.phase) == (409, "ESCALATED")
    assert not approvals.waiting("rb-1")


# --- deciding again ------------------------------------------------------------------


def signal(key: str) -> Signal:
    return Signal(
        SHOP, SignalSource.PROMETHEUS, "error_ratio", SignalStatus.FIRING, T0, T0, key=key
    )


def decision(action: Action, code: ReasonCode, rollback_id: str | None = None) -> Decision:
    return Decision(action, SHOP, code, "", rollback_id=rollback_id)


async def test_a_withdrawn_proposal_has_its_signals_decided_again_once_it_ended() -> None:
    decided: list[list[str]] = []

    async def decide(signals: Any) -> Decision:
        decided.append([s.key for s in signals])
        return decision(Action.SKIP, ReasonCode.COOLDOWN)

    redecisions = Redecisions(decide)
    redecisions.remember(decision(Action.ROLLBACK, ReasonCode.ROLLBACK), "rb-1", [signal("a")])
    redecisions.remember(
        decision(Action.JOIN, ReasonCode.ROLLBACK_IN_FLIGHT, "rb-1"), "rb-1", [signal("b")]
    )
    # A dry-run record joined is not a rollback in flight: nothing to decide again.
    redecisions.remember(
        decision(Action.JOIN, ReasonCode.DRY_RUN_RECORDED, "rb-9"), "rb-9", [signal("c")]
    )
    ending = asyncio.get_running_loop().create_future()

    async def still_running() -> Rollback:
        await ending
        return rollback(Phase.SUPERSEDED)

    task = asyncio.create_task(still_running())
    redecisions.decide_again(rollback(Phase.SUPERSEDED), task)
    await asyncio.sleep(0.01)
    assert decided == []  # not while the withdrawn rollback still holds the target
    ending.set_result(None)
    async with asyncio.timeout(5):
        while not decided:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert decided == [["a", "b"]]
    redecisions.decide_again(rollback(Phase.SUPERSEDED, id="rb-9"), None)
    await redecisions.stop()
    assert decided == [["a", "b"]]


# --- the HTTP contract -----------------------------------------------------------------

OPERATOR = {"Authorization": "Bearer operator-t0ken"}
ALERTS = {"Authorization": "Bearer alertmanager-t0ken"}


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    given: list[tuple[str, Verdict]]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    given: list[tuple[str, Verdict]] = []

    async def give(rollback_id: str, verdict: Verdict) -> Outcome:
        given.append((rollback_id, verdict))
        if rollback_id == "rb-standby":
            raise NotLeaderError("this replica is a standby: send the request to the leader")
        if rollback_id == "rb-unknown":
            raise LookupError("no rollback with id 'rb-unknown'")
        if rollback_id == "rb-done":
            return Outcome(
                409, "rollback rb-done has finished: ROLLBACK_COMPLETED", "ROLLBACK_COMPLETED"
            )
        return Outcome(202, f"{verdict.word} by {verdict.by}", "PLANNING")

    app = create_app(
        alert_sink=None,  # type: ignore[arg-type]
        journal=FakeJournal(),  # type: ignore[arg-type]
        metrics=Metrics(),
        readiness=lambda: (True, "ok"),
        auth=AuthSettings(bearer_token="alertmanager-t0ken", operator_token="operator-t0ken"),
        give_verdict=give,
    )
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield Api(client, given)
    finally:
        await client.close()


async def test_approve_and_reject_need_the_operator_token(api: Api) -> None:
    none = await api.client.post("/api/v1/rollbacks/rb-1/approve")
    wrong = await api.client.post(
        "/api/v1/rollbacks/rb-1/approve", headers={"Authorization": "Bearer guess"}
    )
    alerts = await api.client.post(
        "/api/v1/rollbacks/rb-1/reject", headers=ALERTS, json={"reason": "x"}
    )
    assert (none.status, wrong.status, alerts.status) == (401, 401, 403)
    assert "operator token" in (await alerts.json())["error"]
    assert api.given == []


async def test_an_approval_says_who_and_answers_what_came_of_it(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/rollbacks/rb-1/approve", headers=OPERATOR, json={"by": "alice"}
    )
    assert resp.status == 202
    assert await resp.json() == {
        "rollback_id": "rb-1",
        "phase": "PLANNING",
        "message": "approved by alice",
    }
    anonymous = await api.client.post("/api/v1/rollbacks/rb-1/approve", headers=OPERATOR)
    assert anonymous.status == 202 and api.given[-1][1].by == "operator"


async def test_a_rejection_needs_a_reason(api: Api) -> None:
    resp = await api.client.post(
        "/api/v1/rollbacks/rb-1/reject", headers=OPERATOR, json={"by": "bob"}
    )
    assert resp.status == 400 and "reason" in (await resp.json())["error"]
    ok = await api.client.post(
        "/api/v1/rollbacks/rb-1/reject", headers=OPERATOR, json={"by": "bob", "reason": "known"}
    )
    assert ok.status == 202 and api.given[-1][1] == replace(
        api.given[-1][1], approve=False, reason="known"
    )


@pytest.mark.parametrize(
    ("rollback_id", "status", "says"),
    [
        ("rb-unknown", 404, "no rollback with id"),
        ("rb-done", 409, "ROLLBACK_COMPLETED"),
        ("rb-standby", 503, "standby"),
    ],
)
async def test_unknown_finished_and_standby_answers(
    api: Api, rollback_id: str, status: int, says: str
) -> None:
    resp = await api.client.post(f"/api/v1/rollbacks/{rollback_id}/approve", headers=OPERATOR)
    body = await resp.json()
    assert resp.status == status and says in body["error"], body
    if status == 503:
        assert "retry" in body["hint"]


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"by": 7}', b'{"who": "x"}', b'{"by": "' + b"x" * 300 + b'"}'],
)
async def test_hostile_bodies_are_refused_and_nothing_is_given(api: Api, body: bytes) -> None:
    resp = await api.client.post(
        "/api/v1/rollbacks/rb-1/approve",
        headers={**OPERATOR, "Content-Type": "application/json"},
        data=body,
    )
    assert resp.status == 400
    assert api.given == []


def test_timeouts_are_durations() -> None:
    s = Settings.model_validate(
        {
            "prometheus": {"url": "http://p:9090"},
            "webhook": {"allow_unauthenticated": True},
            "approval": {"timeout": "20m", "on_timeout": "rollback"},
        }
    )
    assert (s.approval.timeout, s.approval.on_timeout) == (timedelta(minutes=20), "rollback")


# --- the decision: approve mode changes no rule ----------------------------------------


def test_dry_run_wins_over_approve_mode() -> None:
    assert run(policy=Policy(approve=True, dry_run=True)).action is Action.DRY_RUN
    assert run(policy=Policy(approve=True)).action is Action.ROLLBACK


def test_a_proposal_waiting_for_approval_is_a_rollback_in_flight() -> None:
    waiting = RollbackState(
        rollback_id="rb-waiting",
        phase=Phase.PENDING_APPROVAL,
        from_revision=7,
        to_revision=6,
        started_at=NOW - timedelta(minutes=5),
        updated_at=NOW - timedelta(minutes=5),
        reason_code="rollback",
    )
    decision = run(cluster=facts(annotations={ANNOTATION_ROLLBACK: encode_state(waiting)}))
    assert (decision.action, decision.rollback_id) == (Action.JOIN, "rb-waiting")
    assert "PENDING_APPROVAL" in decision.reason


def test_a_rejection_starts_the_cooldown() -> None:
    rejected = replace(
        rollback_record(Phase.REJECTED, rid="rb-no"),
        finished_at=NOW - timedelta(minutes=1),
        reason_code="rejected",
    )
    decision = run(history=History(last_finished=rejected))
    assert decision.reason_code == ReasonCode.COOLDOWN and "rb-no" in decision.reason


def test_the_report_says_who_decided_and_when() -> None:
    from rollbackd.report import render_report

    at = T0 + timedelta(minutes=4)
    waiting = Entry(T0, "phase:PENDING_APPROVAL", "waiting for approval: rollbackd proposes ...")
    approved = Entry(at, EVENT_KIND_APPROVED, f"approved by alice at {at.isoformat()}")
    rejected = Entry(at, EVENT_KIND_REJECTED, f"rejected by bob at {at.isoformat()}: no")

    text = render_report(rollback(Phase.ROLLBACK_COMPLETED), [waiting, approved], None)
    assert f"approved by alice at {at.isoformat()}" in text
    text = render_report(rollback(Phase.REJECTED), [waiting, rejected], None)
    assert f"rejected by bob at {at.isoformat()}" in text
    assert "Rejected by a human: nothing was changed" in text
