"""Verification asks the restored version's data assertions at each healthy interval.

A failed assertion ends verification at once, like a breach; a broken one
(Prometheus refused it) ends it too, because waiting cannot fix it; an
assertion without data leaves the interval inconclusive, never healthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from rollbackd.assertions import AssertionOutcome, AssertionStatus
from rollbackd.model import Target
from rollbackd.readiness import ReadinessReport
from tests.unit.test_verify import ALL_READY, READY_AT, TARGET, FakeWorld, breach, healthy
from tests.unit.test_verify_smoke import FAIL as SMOKE_FAIL
from tests.unit.test_verify_smoke import PASS as SMOKE_PASS
from tests.unit.test_verify_smoke import Smoke

SENT = 'sum(rate(orders_failed_total{namespace="shop"}[31s]))'
PASSED = AssertionOutcome(
    "no-failed-orders",
    AssertionStatus.PASSED,
    f'assertion "no-failed-orders" holds: {SENT} = 0 (== 0)',
    SENT,
    0.0,
)
FAILED = AssertionOutcome(
    "no-failed-orders",
    AssertionStatus.FAILED,
    f'assertion "no-failed-orders" failed: {SENT} = 0.4, expected == 0',
    SENT,
    0.4,
)
NO_DATA = AssertionOutcome(
    "no-failed-orders",
    AssertionStatus.NO_DATA,
    f'assertion "no-failed-orders" had no data: {SENT} answered nothing (expected == 0)',
    SENT,
)
INVALID = AssertionOutcome(
    "no-failed-orders",
    AssertionStatus.INVALID,
    f'assertion "no-failed-orders" is broken: Prometheus refused {SENT}: '
    "Prometheus answered HTTP 400 (bad_data: parse error)",
    SENT,
)


class Assertions:
    """Scripted outcomes per call (the last repeated); records the window and time asked."""

    def __init__(self, answers: Sequence[Sequence[AssertionOutcome] | Exception]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, datetime]] = []

    async def __call__(
        self, target: Target, window: str, at: datetime
    ) -> Sequence[AssertionOutcome]:
        assert target == TARGET
        answer = self.answers[min(len(self.asked), len(self.answers) - 1)]
        self.asked.append((window, at))
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_passing_assertions_verify_over_the_signals_fresh_windows() -> None:
    assertions = Assertions([[PASSED]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(assertions=assertions).verify(TARGET, READY_AT)
    assert result.healthy and result.reason_code == "verified"
    # The same window and time as the signals of each interval: nothing before ready_at.
    assert assertions.asked == [(window, at) for _, window, at, _ in world.calls]
    assert all(PASSED.detail in interval.detail for interval in result.intervals)


async def test_a_failed_assertion_fails_verification_at_once_quoting_it() -> None:
    assertions = Assertions([[PASSED], [FAILED]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    verifier = world.verifier(assertions=assertions, max_inconclusive=3)
    result = await verifier.verify(TARGET, READY_AT)
    assert not result.healthy and result.reason_code == "verify_assertion_failed"
    assert len(result.intervals) == 2  # evidence: not judged again
    assert result.reason.startswith("interval 2/3 unhealthy: " + FAILED.detail)


async def test_a_broken_assertion_ends_verification_as_an_escalation_not_health() -> None:
    assertions = Assertions([[INVALID]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    verifier = world.verifier(assertions=assertions, max_inconclusive=3)
    result = await verifier.verify(TARGET, READY_AT)
    assert not result.healthy and result.reason_code == "verify_assertion_invalid"
    assert len(result.intervals) == 1  # waiting cannot make it parse
    assert "is broken: Prometheus refused" in result.reason and "bad_data" in result.reason


async def test_an_assertion_without_data_is_inconclusive_and_judged_again() -> None:
    assertions = Assertions([[NO_DATA], [PASSED]])
    world = FakeWorld([[healthy()]] * 4, ALL_READY)
    result = await world.verifier(assertions=assertions, max_inconclusive=1).verify(
        TARGET, READY_AT
    )
    assert result.healthy
    assert not result.intervals[0].healthy and NO_DATA.detail in result.intervals[0].detail
    assert "1 inconclusive interval" in result.reason


async def test_no_data_beyond_the_budget_is_never_a_pass() -> None:
    assertions = Assertions([[PASSED, NO_DATA]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(assertions=assertions, max_inconclusive=1).verify(
        TARGET, READY_AT
    )
    assert not result.healthy and result.reason_code == "verify_no_data"
    assert len(result.intervals) == 2 and NO_DATA.detail in result.reason


async def test_assertions_that_cannot_run_leave_the_interval_inconclusive() -> None:
    assertions = Assertions([RuntimeError("kube unavailable"), [PASSED]])
    world = FakeWorld([[healthy()]] * 4, ALL_READY)
    result = await world.verifier(assertions=assertions, max_inconclusive=1).verify(
        TARGET, READY_AT
    )
    assert result.healthy
    assert "assertions could not run: kube unavailable" in result.intervals[0].detail


async def test_assertions_are_not_asked_while_metrics_breach_or_pods_are_unready() -> None:
    assertions = Assertions([[FAILED]])
    world = FakeWorld([[breach()]], ALL_READY)
    assert (await world.verifier(assertions=assertions).verify(TARGET, READY_AT)).reason_code == (
        "verify_breach"
    )
    unready = FakeWorld([[healthy()]], ReadinessReport(desired=3, ready=1, services=()))
    result = await unready.verifier(intervals=1, assertions=assertions).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_not_ready"
    assert assertions.asked == []


async def test_a_failed_assertion_is_not_followed_by_smoke_checks() -> None:
    smoke = Smoke([[SMOKE_PASS]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(assertions=Assertions([[FAILED]]), smoke=smoke).verify(
        TARGET, READY_AT
    )
    assert result.reason_code == "verify_assertion_failed" and smoke.calls == 0


async def test_a_failed_smoke_check_is_evidence_even_when_an_assertion_had_no_data() -> None:
    smoke = Smoke([[SMOKE_FAIL]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(
        assertions=Assertions([[NO_DATA]]), smoke=smoke, max_inconclusive=3
    ).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_smoke_failed"
    assert result.reason.startswith("interval 1/3 unhealthy: " + SMOKE_FAIL.detail)
    assert NO_DATA.detail in result.reason


async def test_a_failed_assertion_outranks_a_broken_one_and_both_are_quoted() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    other = AssertionOutcome("other", AssertionStatus.INVALID, 'assertion "other" is broken')
    result = await world.verifier(assertions=Assertions([[other, FAILED]])).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_assertion_failed"
    assert result.reason.index(FAILED.detail) < result.reason.index(other.detail)


async def test_assertions_that_hang_are_cut_by_the_evaluation_timeout() -> None:
    class Hang(Assertions):
        async def __call__(
            self, target: Target, window: str, at: datetime
        ) -> Sequence[AssertionOutcome]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    verifier = world.verifier(
        intervals=1, assertions=Hang([]), evaluation_timeout=0.05, timeout=None
    )
    result = await verifier.verify(TARGET, READY_AT)
    assert result.reason_code == "verify_no_data"
    assert "assertions did not finish in time" in result.reason
