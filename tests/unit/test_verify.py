"""Verification judges the restored version over fresh scrape intervals only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.model import Target
from rollbackd.signals import Evaluation, Verdict
from rollbackd.verify import ReadinessReport, ServiceEndpoints, Verifier

TARGET = Target("shop", "checkout")
READY_AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SCRAPE = timedelta(seconds=15)


def healthy(signal: str = "error_ratio") -> Evaluation:
    return Evaluation(TARGET, signal, Verdict.HEALTHY, 0.01, 0.05, "")


def breach(signal: str = "error_ratio") -> Evaluation:
    return Evaluation(TARGET, signal, Verdict.BREACH, 0.3, 0.05, "")


def no_data(signal: str = "error_ratio") -> Evaluation:
    return Evaluation(TARGET, signal, Verdict.NO_DATA, None, 0.05, "")


ALL_READY = ReadinessReport(desired=3, ready=3, services=(ServiceEndpoints("checkout", 3),))


class FakeWorld:
    """A clock that only moves when the verifier sleeps, and scripted answers."""

    def __init__(self, answers: list[list[Evaluation] | Exception], ready: ReadinessReport) -> None:
        self.now = READY_AT
        self.answers = answers
        self.ready = ready
        self.calls: list[tuple[Target, str, datetime, datetime]] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def evaluate(self, target: Target, window: str, at: datetime) -> list[Evaluation]:
        self.calls.append((target, window, at, self.now))
        answer = self.answers[len(self.calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def readiness(self, target: Target) -> ReadinessReport:
        return self.ready

    def verifier(self, intervals: int = 3, **options: Any) -> Verifier:
        return Verifier(
            self.evaluate,
            self.readiness,
            scrape_interval=SCRAPE,
            intervals=intervals,
            clock=self.clock,
            sleep=self.sleep,
            slack=timedelta(seconds=1),
            **options,
        )


async def test_three_healthy_intervals_verify_the_rollback() -> None:
    world = FakeWorld([[healthy(), healthy("latency_p99")]] * 3, ALL_READY)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert result.healthy
    assert result.reason_code == "verified"
    assert [i.index for i in result.intervals] == [1, 2, 3]
    assert all(i.healthy and i.readiness_ok for i in result.intervals)


async def test_windows_never_reach_back_before_ready() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    await world.verifier().verify(TARGET, READY_AT)
    windows = [window for _, window, _, _ in world.calls]
    # at = ready + (i + 1) * 15s + 1s slack; window = at - ready in whole seconds
    assert windows == ["31s", "46s", "61s"]
    for _, window, at, _ in world.calls:
        assert at - timedelta(seconds=int(window.rstrip("s"))) >= READY_AT


async def test_each_interval_is_evaluated_only_once_its_time_has_come() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    await world.verifier().verify(TARGET, READY_AT)
    for _, _, at, now_when_called in world.calls:
        assert now_when_called >= at


async def test_the_number_of_intervals_is_configurable() -> None:
    world = FakeWorld([[healthy()]] * 5, ALL_READY)
    result = await world.verifier(intervals=5).verify(TARGET, READY_AT)
    assert result.healthy
    assert len(result.intervals) == 5


async def test_a_breach_fails_verification_and_stops_early() -> None:
    world = FakeWorld([[healthy()], [breach()], [healthy()]], ALL_READY)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_breach"
    assert len(result.intervals) == 2
    assert "interval 2/3" in result.reason
    assert len(world.calls) == 2


@pytest.mark.parametrize(
    "answer",
    [[no_data()], [], RuntimeError("prometheus unreachable")],
    ids=["no-data-verdict", "no-evaluations", "query-failed"],
)
async def test_no_data_is_not_health(answer: list[Evaluation] | Exception) -> None:
    world = FakeWorld([answer], ALL_READY)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_no_data"
    assert len(result.intervals) == 1


async def test_one_missing_signal_among_healthy_ones_is_not_health() -> None:
    world = FakeWorld([[healthy(), no_data("latency_p99")]], ALL_READY)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert result.reason_code == "verify_no_data"


async def test_unready_pods_fail_verification_even_with_healthy_metrics() -> None:
    world = FakeWorld([[healthy()]] * 3, ReadinessReport(desired=3, ready=2))
    result = await world.verifier().verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_not_ready"
    assert "2/3 pods ready" in result.intervals[0].detail


async def test_a_selecting_service_without_endpoints_fails_verification() -> None:
    report = ReadinessReport(desired=3, ready=3, services=(ServiceEndpoints("checkout", 0),))
    world = FakeWorld([[healthy()]] * 3, report)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert result.reason_code == "verify_not_ready"
    assert "service checkout: 0 ready endpoints" in result.reason


async def test_a_late_start_evaluates_past_intervals_without_sleeping() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    world.now = READY_AT + timedelta(minutes=5)
    result = await world.verifier().verify(TARGET, READY_AT)
    assert result.healthy
    assert world.now == READY_AT + timedelta(minutes=5)


def test_readiness_without_services_needs_only_ready_pods() -> None:
    assert ReadinessReport(desired=2, ready=2).ok
    assert not ReadinessReport(desired=2, ready=1).ok


@pytest.mark.parametrize("intervals", [0, -1])
def test_at_least_one_interval_is_required(intervals: int) -> None:
    world = FakeWorld([], ALL_READY)
    with pytest.raises(ValueError, match="at least one interval"):
        world.verifier(intervals=intervals)


def test_sub_second_intervals_still_never_reach_back_before_ready() -> None:
    world = FakeWorld([], ALL_READY)
    verifier = Verifier(
        world.evaluate,
        world.readiness,
        scrape_interval=timedelta(milliseconds=100),
        clock=world.clock,
        sleep=world.sleep,
    )
    for at, window in verifier.schedule(READY_AT):
        assert at - timedelta(seconds=int(window.rstrip("s"))) >= READY_AT


async def test_endpoints_are_not_judged_when_not_required() -> None:
    report = ReadinessReport(desired=3, ready=3, services=(ServiceEndpoints("checkout", 0),))
    world = FakeWorld([[healthy()]] * 3, report)
    result = await world.verifier(require_endpoints=False).verify(TARGET, READY_AT)
    assert result.healthy, result.reason
    # The detail still says what the endpoints were: the review should see it.
    assert "service checkout: 0 ready endpoints" in result.intervals[0].detail


async def test_pods_are_judged_even_when_endpoints_are_not_required() -> None:
    world = FakeWorld([[healthy()]] * 3, ReadinessReport(desired=3, ready=2))
    result = await world.verifier(require_endpoints=False).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_not_ready"


async def test_verification_that_hangs_past_the_timeout_is_not_health() -> None:
    world = FakeWorld([[healthy()]] * 3, ALL_READY)

    async def hangs(target: Target) -> ReadinessReport:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    verifier = Verifier(
        world.evaluate,
        hangs,
        scrape_interval=timedelta(milliseconds=10),
        clock=world.clock,
        sleep=world.sleep,
        slack=timedelta(0),
        timeout=1.5,
    )
    async with asyncio.timeout(10):
        result = await verifier.verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_timeout"
    assert "within 1.5s (0/3 intervals judged)" in result.reason


def test_a_timeout_shorter_than_the_intervals_is_refused_at_start() -> None:
    world = FakeWorld([], ALL_READY)
    # 3 intervals of 15 s end 61 s after ready (the fourth scrape plus 1 s slack).
    with pytest.raises(ValueError, match=r"verify.timeout 60s is shorter than the 61s"):
        world.verifier(timeout=60.0)
    assert world.verifier(timeout=61.0) is not None


async def test_an_interval_without_data_is_judged_again_and_never_counted_healthy() -> None:
    world = FakeWorld([[no_data()], [healthy()], [healthy()], [healthy()]], ALL_READY)
    result = await world.verifier(max_inconclusive=1).verify(TARGET, READY_AT)
    assert result.healthy, result.reason
    assert [i.healthy for i in result.intervals] == [False, True, True, True]
    assert "1 inconclusive interval" in result.reason
    # The retry is one scrape later, its window one scrape wider, still after ready.
    assert [window for _, window, _, _ in world.calls] == ["31s", "46s", "61s", "76s"]


async def test_unready_endpoints_are_inconclusive_until_the_budget_runs_out() -> None:
    lagging = ReadinessReport(desired=3, ready=3, services=(ServiceEndpoints("checkout", 0),))
    world = FakeWorld([[healthy()]] * 5, lagging)
    result = await world.verifier(max_inconclusive=2).verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_not_ready"
    assert len(result.intervals) == 3
    assert "interval 1/3 unhealthy (3 inconclusive intervals" in result.reason


async def test_a_breach_after_an_inconclusive_interval_fails_at_once() -> None:
    world = FakeWorld([[no_data()], [breach()], [healthy()]], ALL_READY)
    result = await world.verifier(max_inconclusive=3).verify(TARGET, READY_AT)
    assert result.reason_code == "verify_breach"
    assert len(world.calls) == 2


async def test_data_that_never_comes_fails_verification_as_no_data() -> None:
    world = FakeWorld([[no_data()]] * 4, ALL_READY)
    result = await world.verifier(max_inconclusive=3).verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_no_data"
    assert len(world.calls) == 4


def test_a_negative_inconclusive_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_inconclusive"):
        FakeWorld([], ALL_READY).verifier(max_inconclusive=-1)
