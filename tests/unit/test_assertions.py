"""Data assertions judged through the real PromQL adapter against a scripted Prometheus.

Each answer Prometheus can give maps to one outcome, and only one passes:
a value that satisfies the comparison. A value that does not is evidence
(failed); an empty or NaN answer, a 5xx, a 429 or no Prometheus at all is
no data; a query Prometheus refuses (400 bad_data) or an answer of the wrong
shape means the assertion itself is broken.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from rollbackd.assertions import AssertionChecker, AssertionOutcome, AssertionStatus
from rollbackd.config.assertions import ANNOTATION_ASSERTIONS, Assertion
from rollbackd.model import Target
from rollbackd.promql import PromQL
from rollbackd.testing.promstack import free_port
from rollbackd.testing.sink import HttpSink

QUERY_PATH = "/api/v1/query"
TARGET = Target("shop", "orders")
AT = datetime(2026, 3, 1, 12, 0, 31, tzinfo=UTC)
FAILED_ORDERS = Assertion(
    name="no-failed-orders",
    expr='sum(rate(orders_failed_total{namespace="{namespace}",deployment="{deployment}"}[{window}]))',
    op="==",
    value=0,
)
SENT = 'sum(rate(orders_failed_total{namespace="shop",deployment="orders"}[31s]))'
EVERYWHERE = Assertion(
    name="up", expr='min(up{namespace="{namespace}"})', op="==", value=1, applies_to="all"
)


def vector(*values: tuple[Mapping[str, str], str]) -> dict[str, Any]:
    result = [
        {"metric": dict(labels), "value": [AT.timestamp(), value]} for labels, value in values
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class ScriptedPrometheus:
    """The recording sink standing in for Prometheus: scripted answers, the last one repeated."""

    def __init__(self, sink: HttpSink) -> None:
        self.sink = sink

    def answer(self, *answers: tuple[int, Any]) -> None:
        for index, (status, body) in enumerate(answers):
            last = index == len(answers) - 1
            self.sink.fail_next(QUERY_PATH, status, 100 if last else 1, body=body)

    @property
    def queries(self) -> list[Mapping[str, str]]:
        return [request.query for request in self.sink.requests_to(QUERY_PATH)]


@pytest.fixture
async def prometheus(http_sink_factory: Callable[..., Any]) -> ScriptedPrometheus:
    return ScriptedPrometheus(await http_sink_factory())


@pytest.fixture
async def promql(prometheus: ScriptedPrometheus) -> AsyncIterator[PromQL]:
    adapter = PromQL(prometheus.sink.url, attempts=3, max_backoff=0.05, timeout=2)
    yield adapter
    await adapter.close()


def checker(
    promql: PromQL,
    annotation: str | None = FAILED_ORDERS.name,
    assertions: tuple[Assertion, ...] = (FAILED_ORDERS,),
) -> AssertionChecker:
    async def annotations(target: Target) -> Mapping[str, str]:
        assert target == TARGET
        return {} if annotation is None else {ANNOTATION_ASSERTIONS: annotation}

    return AssertionChecker(assertions, promql.query, annotations)


async def one(promql: PromQL, prometheus: ScriptedPrometheus, *answers: tuple[int, Any]) -> Any:
    prometheus.answer(*answers)
    (outcome,) = await checker(promql).run(TARGET, "31s", AT)
    return outcome


async def test_a_value_that_satisfies_the_comparison_passes_over_the_fresh_window(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    outcome = await one(promql, prometheus, (200, vector(({}, "0"))))
    assert outcome == AssertionOutcome(
        "no-failed-orders",
        AssertionStatus.PASSED,
        f'assertion "no-failed-orders" holds: {SENT} = 0 (== 0)',
        SENT,
        0.0,
    )
    # Placeholders filled, evaluated at the interval's time: the window ends there.
    assert prometheus.queries == [{"query": SENT, "time": f"{AT.timestamp():.3f}"}]


async def test_a_value_that_does_not_fails_quoting_the_query_as_sent_and_the_value(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    outcome = await one(promql, prometheus, (200, vector(({}, "0.4"))))
    assert outcome.status is AssertionStatus.FAILED and outcome.value == 0.4
    assert outcome.detail == f'assertion "no-failed-orders" failed: {SENT} = 0.4, expected == 0'


async def test_every_series_must_hold_and_the_failing_one_is_named(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    answer = vector(({"pod": "a"}, "0"), ({"pod": "b"}, "2"), ({"pod": "c"}, "3"))
    outcome = await one(promql, prometheus, (200, answer))
    assert outcome.status is AssertionStatus.FAILED
    assert outcome.detail.endswith(' = 2 {pod="b"}, expected == 0 (2 of 3 series fail)')


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (vector(), "answered nothing"),
        (vector(({}, "NaN")), "answered NaN"),
        (vector(({"pod": "a"}, "0"), ({"pod": "b"}, "NaN")), "answered NaN"),
    ],
)
async def test_no_data_is_not_a_pass(
    promql: PromQL, prometheus: ScriptedPrometheus, answer: dict[str, Any], said: str
) -> None:
    outcome = await one(promql, prometheus, (200, answer))
    assert outcome.status is AssertionStatus.NO_DATA and outcome.value is None
    assert (
        outcome.detail == f'assertion "no-failed-orders" had no data: {SENT} {said} (expected == 0)'
    )


async def test_a_failing_series_is_evidence_even_next_to_a_nan(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    answer = vector(({"pod": "a"}, "NaN"), ({"pod": "b"}, "5"))
    assert (await one(promql, prometheus, (200, answer))).status is AssertionStatus.FAILED


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_prometheus_in_trouble_is_no_data_after_bounded_retries(
    promql: PromQL, prometheus: ScriptedPrometheus, status: int
) -> None:
    body = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
    outcome = await one(promql, prometheus, (status, body))
    assert outcome.status is AssertionStatus.NO_DATA
    assert f"HTTP {status}" in outcome.detail and SENT in outcome.detail
    assert len(prometheus.queries) == 3


async def test_a_transient_error_then_an_answer_is_judged(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    outcome = await one(promql, prometheus, (503, {}), (200, vector(({}, "0"))))
    assert outcome.status is AssertionStatus.PASSED


async def test_invalid_promql_is_a_broken_assertion_asked_once(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    body = {
        "status": "error",
        "errorType": "bad_data",
        "error": '1:5: parse error: unknown function with name "rat"',
    }
    outcome = await one(promql, prometheus, (400, body))
    assert outcome.status is AssertionStatus.INVALID
    assert outcome.detail.startswith(
        f'assertion "no-failed-orders" is broken: Prometheus refused {SENT}'
    )
    assert 'unknown function with name "rat"' in outcome.detail
    assert len(prometheus.queries) == 1  # the same query cannot parse later


async def test_an_answer_that_is_not_an_instant_vector_is_a_broken_assertion(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    matrix = {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}]},
    }
    assert (await one(promql, prometheus, (200, matrix))).status is AssertionStatus.INVALID


async def test_prometheus_down_is_no_data() -> None:
    adapter = PromQL(f"http://127.0.0.1:{free_port()}", attempts=2, max_backoff=0.05)
    try:
        (outcome,) = await checker(adapter).run(TARGET, "31s", AT)
    finally:
        await adapter.close()
    assert outcome.status is AssertionStatus.NO_DATA and "unreachable" in outcome.detail


async def test_a_deployment_without_the_annotation_is_asked_nothing(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    assert await checker(promql, annotation=None).run(TARGET, "31s", AT) == ()
    assert prometheus.queries == []


async def test_applies_to_all_runs_first_then_the_annotations_in_order_once_each(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    prometheus.answer((200, vector(({}, "1"))))
    other = Assertion(name="zero", expr="vector(1)", op=">", value=0)
    run = checker(promql, "zero, no-failed-orders ,zero,up", (FAILED_ORDERS, EVERYWHERE, other))
    outcomes = await run.run(TARGET, "31s", AT)
    assert [o.name for o in outcomes] == ["up", "zero", "no-failed-orders"]
    assert [o.status for o in outcomes] == [
        AssertionStatus.PASSED,
        AssertionStatus.PASSED,
        AssertionStatus.FAILED,
    ]
    (alone,) = await checker(promql, None, (EVERYWHERE,)).run(TARGET, "31s", AT)
    assert alone.name == "up" and alone.query == 'min(up{namespace="shop"})'


async def test_a_name_the_config_lacks_is_a_broken_assertion_not_a_crash(
    promql: PromQL, prometheus: ScriptedPrometheus
) -> None:
    (outcome,) = await checker(promql, "no-faild-orders").run(TARGET, "31s", AT)
    assert outcome.status is AssertionStatus.INVALID
    assert outcome.detail == (
        f'assertion "no-faild-orders" is not configured ({ANNOTATION_ASSERTIONS} on shop/orders; '
        "configured: no-failed-orders)"
    )
    assert prometheus.queries == []


async def test_nothing_configured_reads_no_annotation(promql: PromQL) -> None:
    async def annotations(target: Target) -> Mapping[str, str]:
        raise AssertionError("not asked")

    assert await AssertionChecker((), promql.query, annotations).run(TARGET, "31s", AT) == ()
