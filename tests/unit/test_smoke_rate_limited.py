"""A Service answering 429 to its smoke check: no verdict on the restored version.

The Service answered, on purpose, that it sheds load (as a restored version
may while clients retry what the bad one failed); that says nothing about
whether it works. The outcome is inconclusive, quoting Retry-After when the
Service sent one, and verification asks again at its next interval. The
Service is a real HTTP server on loopback (the pager sink, told what to
answer), reached as ``verify.smoke_via: cluster-dns`` reaches a Service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from rollbackd.config.smoke import ANNOTATION_SMOKE_CHECKS, SmokeCheck
from rollbackd.model import Target
from rollbackd.smoke import ServicePort, ServiceRef, SmokeChecker, SmokeContext
from rollbackd.smoke_transport import ClusterDnsTransport
from rollbackd.testing.sink import HttpSink
from tests.unit.test_verify import ALL_READY, READY_AT, FakeWorld, healthy

TARGET = Target("shop", "checkout")
SHED = {"error": "too many requests"}


@pytest_asyncio.fixture
async def service() -> AsyncIterator[HttpSink]:
    async with HttpSink(status=200, body={"status": "ok"}) as sink:
        yield sink


def checker(service: HttpSink, *checks: SmokeCheck) -> SmokeChecker:
    port = int(service.url.rsplit(":", 1)[1])
    ref = ServiceRef("checkout", (ServicePort("http", port),))
    names = ",".join(c.name for c in checks)

    async def context(target: Target) -> SmokeContext:
        return SmokeContext({ANNOTATION_SMOKE_CHECKS: names}, (ref,))

    return SmokeChecker(checks, ClusterDnsTransport("http://127.0.0.1:{port}"), context)


def check(**fields: Any) -> SmokeCheck:
    return SmokeCheck.model_validate({"name": "orders", "url": "/orders", **fields})


async def test_a_429_with_retry_after_is_inconclusive_and_quotes_it(service: HttpSink) -> None:
    service.fail_next("/orders", 429, body=SHED, headers={"Retry-After": "30"})
    (outcome,) = await checker(service, check()).run(TARGET)
    assert (outcome.ok, outcome.inconclusive, outcome.status) == (False, True, 429)
    assert 'smoke check "orders" GET /orders on service checkout:http' in outcome.detail
    assert "rate limited (status 429, Retry-After 30)" in outcome.detail
    assert "no verdict on the version" in outcome.detail
    assert "too many requests" in outcome.detail


async def test_a_429_without_retry_after_is_inconclusive_too(service: HttpSink) -> None:
    service.fail_next("/orders", 429, body=SHED)
    (outcome,) = await checker(service, check()).run(TARGET)
    assert (outcome.ok, outcome.inconclusive) == (False, True)
    assert "rate limited (status 429), no verdict on the version" in outcome.detail
    assert "Retry-After" not in outcome.detail


async def test_a_hostile_retry_after_is_bounded_in_the_detail(service: HttpSink) -> None:
    service.fail_next("/orders", 429, headers={"Retry-After": "9" * 5000})
    (outcome,) = await checker(service, check()).run(TARGET)
    assert outcome.inconclusive
    assert "9" * 40 not in outcome.detail and "Retry-After 999" in outcome.detail
    assert len(outcome.detail) < 500


async def test_a_check_that_expects_429_passes_on_it(service: HttpSink) -> None:
    service.fail_next("/limits", 429, body=SHED, headers={"Retry-After": "1"})
    (outcome,) = await checker(service, check(url="/limits", expect_status=429)).run(TARGET)
    assert (outcome.ok, outcome.inconclusive) == (True, False)


async def test_other_refusals_still_fail_the_check(service: HttpSink) -> None:
    # 503 with Retry-After is the version failing to serve, not shedding a surplus.
    service.fail_next("/orders", 503, body=SHED, headers={"Retry-After": "30"})
    (outcome,) = await checker(service, check()).run(TARGET)
    assert (outcome.ok, outcome.inconclusive) == (False, False)
    assert "status 503, expected 200" in outcome.detail


async def test_verification_asks_again_at_the_next_interval_and_completes(
    service: HttpSink,
) -> None:
    service.fail_next("/orders", 429, body=SHED, headers={"Retry-After": "5"})
    world = FakeWorld([[healthy()]] * 4, ALL_READY)
    verifier = world.verifier(smoke=checker(service, check()).run, max_inconclusive=1)
    result = await verifier.verify(TARGET, READY_AT)
    assert result.healthy, result.reason
    assert [i.healthy for i in result.intervals] == [False, True, True, True]
    assert "rate limited (status 429, Retry-After 5)" in result.intervals[0].detail
    assert "(1 inconclusive interval without data, readiness or a verdict)" in result.reason
    assert len(service.requests_to("/orders")) == 4  # one request per interval, no retry burst


async def test_rate_limited_past_max_inconclusive_ends_inconclusive_not_smoke_failed(
    service: HttpSink,
) -> None:
    service.fail_for("/orders", 60, 429, body=SHED)
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    verifier = world.verifier(smoke=checker(service, check()).run, max_inconclusive=1)
    result = await verifier.verify(TARGET, READY_AT)
    assert not result.healthy
    assert result.reason_code == "verify_no_data"  # not evidence against the version
    assert len(result.intervals) == 2
    assert "rate limited (status 429)" in result.reason


async def test_a_failed_check_wins_over_a_rate_limited_one(service: HttpSink) -> None:
    service.fail_next("/orders", 429, body=SHED)
    service.fail_next("/pay", 500, body={"error": "boom"})
    checks = (check(), check(name="pay", url="/pay"))
    world = FakeWorld([[healthy()]] * 3, ALL_READY)
    verifier = world.verifier(smoke=checker(service, *checks).run, max_inconclusive=3)
    result = await verifier.verify(TARGET, READY_AT)
    assert result.reason_code == "verify_smoke_failed"
    assert len(result.intervals) == 1
    assert 'smoke check "pay"' in result.reason and "status 500" in result.reason
