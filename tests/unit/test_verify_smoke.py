"""Verification asks the restored version its smoke checks once metrics and readiness agree."""

from __future__ import annotations

from collections.abc import Sequence

from rollbackd.model import Target
from rollbackd.smoke import SmokeOutcome
from tests.unit.test_verify import ALL_READY, READY_AT, TARGET, FakeWorld, breach, healthy

PASS = SmokeOutcome("orders", True, 'smoke check "orders" GET /orders on service s:http: 200', 200)
FAIL = SmokeOutcome(
    "orders",
    False,
    'smoke check "orders" GET /orders on service s:http: status 500, expected 200; '
    'body: \'{"error": "boom"}\'',
    500,
)


class Smoke:
    def __init__(self, answers: Sequence[Sequence[SmokeOutcome] | Exception]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, target: Target) -> Sequence[SmokeOutcome]:
        assert target == TARGET
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_passing_checks_verify_and_are_recorded_in_each_interval() -> None:
    smoke = Smoke([[PASS]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(smoke=smoke).verify(TARGET, READY_AT)
    assert result.healthy and result.reason_code == "verified"
    assert smoke.calls == 3
    assert all('smoke check "orders"' in interval.detail for interval in result.intervals)


async def test_a_failed_check_fails_verification_at_once_quoting_the_check() -> None:
    smoke = Smoke([[PASS], [FAIL, PASS]])
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(smoke=smoke, max_inconclusive=3).verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_smoke_failed"
    assert len(result.intervals) == 2  # not judged again, unlike an inconclusive interval
    assert result.reason.startswith("interval 2/3 unhealthy: " + FAIL.detail)
    assert "status 500" in result.reason and "boom" in result.reason


async def test_checks_are_not_asked_while_metrics_breach_or_pods_are_unready() -> None:
    smoke = Smoke([[FAIL]])
    world = FakeWorld([[breach()]], ALL_READY)
    result = await world.verifier(smoke=smoke).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_breach"
    assert smoke.calls == 0


async def test_checks_that_cannot_run_leave_the_interval_inconclusive() -> None:
    smoke = Smoke([RuntimeError("kube unavailable"), [PASS]])
    world = FakeWorld([[healthy()]] * 4, ALL_READY)
    result = await world.verifier(smoke=smoke, max_inconclusive=1).verify(TARGET, READY_AT)
    assert result.healthy
    assert "smoke checks could not run: kube unavailable" in result.intervals[0].detail
    assert not result.intervals[0].healthy


async def test_a_deployment_without_checks_verifies_as_before() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    result = await world.verifier(smoke=Smoke([()])).verify(TARGET, READY_AT)
    assert result.healthy
