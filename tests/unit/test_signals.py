"""Signal evaluation: what counts as a breach, as health, and as no data."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rollbackd.model import Target
from rollbackd.promql import (
    Combine,
    PromQL,
    PromQLError,
    Sample,
    TargetKey,
    format_duration,
    parse_duration,
    reduce_vector,
)
from rollbackd.signalquery import evaluate_specs, judge_spec
from rollbackd.signals import (
    DEFAULT_SIGNALS,
    Judgement,
    SignalSpec,
    Verdict,
    evaluate,
    render_query,
)

CART = Target("shop", "cart")
WEB = Target("shop", "web")

ERRORS = SignalSpec(
    name="error_ratio",
    query="ratio[{window}]",
    threshold=0.05,
    traffic_query="traffic[{window}]",
    min_traffic=1.0,
)


def sample(target: Target, value: float, **extra: str) -> Sample:
    labels = {"namespace": target.namespace, "deployment": target.name, **extra}
    return Sample(labels=labels, value=value, timestamp=0.0)


class TestEvaluate:
    def test_above_threshold_is_a_breach_below_is_healthy(self) -> None:
        result = evaluate(
            ERRORS, [sample(CART, 0.2), sample(WEB, 0.01)], [sample(CART, 5), sample(WEB, 5)]
        )
        assert result[CART].verdict is Verdict.BREACH
        assert result[CART].value == pytest.approx(0.2)
        assert result[CART].threshold == 0.05
        assert result[WEB].verdict is Verdict.HEALTHY

    def test_one_failed_request_in_a_short_window_is_not_evidence(self) -> None:
        # One pod at 0.05 req/s, every request failing, a 10 s window: rate()
        # extrapolates one 5xx to about 0.104 req/s, over a 0.1 req/s rate gate.
        spec = SignalSpec(
            name="error_ratio",
            query="ratio[{window}]",
            threshold=0.05,
            traffic_query="traffic[{window}]",
            min_traffic=0.1,
            min_requests=10,
            window="10s",
        )
        result = evaluate(spec, [sample(CART, 1.0)], [sample(CART, 0.104)])
        assert result[CART].verdict is Verdict.NO_DATA
        assert "fewer than the 10 needed" in result[CART].detail

    def test_enough_requests_in_the_window_are_judged(self) -> None:
        spec = SignalSpec(
            name="error_ratio",
            query="ratio[{window}]",
            threshold=0.05,
            traffic_query="traffic[{window}]",
            min_requests=10,
            window="10s",
        )
        assert evaluate(spec, [sample(CART, 1.0)], [sample(CART, 1.0)])[CART].verdict is (
            Verdict.BREACH
        )
        # The window a caller passes (verification narrows it) is the one counted.
        narrowed = evaluate(spec, [sample(CART, 1.0)], [sample(CART, 1.0)], window="5s")
        assert narrowed[CART].verdict is Verdict.NO_DATA

    def test_exactly_at_threshold_is_not_a_breach(self) -> None:
        result = evaluate(ERRORS, [sample(CART, 0.05)], [sample(CART, 5)])
        assert result[CART].verdict is Verdict.HEALTHY

    def test_nan_is_no_data(self) -> None:
        result = evaluate(ERRORS, [sample(CART, math.nan)], [sample(CART, 5)])
        assert result[CART].verdict is Verdict.NO_DATA
        assert result[CART].value is None

    def test_empty_result_judges_nobody(self) -> None:
        assert evaluate(ERRORS, [], []) == {}

    def test_traffic_without_a_value_is_no_data_not_health(self) -> None:
        result = evaluate(ERRORS, [], [sample(CART, 5)])
        assert result[CART].verdict is Verdict.NO_DATA
        assert "no series" in result[CART].detail

    @pytest.mark.parametrize("rate", [0.0, 0.99, math.nan])
    def test_low_traffic_is_not_judged_even_when_breaching(self, rate: float) -> None:
        result = evaluate(ERRORS, [sample(CART, 0.9)], [sample(CART, rate)])
        assert result[CART].verdict is Verdict.NO_DATA
        assert "not judged" in result[CART].detail

    def test_missing_traffic_series_is_not_judged(self) -> None:
        result = evaluate(ERRORS, [sample(CART, 0.9)], [])
        assert result[CART].verdict is Verdict.NO_DATA

    def test_without_a_traffic_query_every_target_is_judged(self) -> None:
        spec = SignalSpec(name="x", query="q", threshold=1.0)
        result = evaluate(spec, [sample(CART, 2.0)], None)
        assert result[CART].verdict is Verdict.BREACH

    def test_less_than_comparison_breaches_below_threshold(self) -> None:
        spec = SignalSpec(name="success_ratio", query="q", threshold=0.99, comparison="<")
        result = evaluate(spec, [sample(CART, 0.9), sample(WEB, 0.999)], None)
        assert result[CART].verdict is Verdict.BREACH
        assert result[WEB].verdict is Verdict.HEALTHY

    def test_an_unaggregated_query_is_judged_by_its_worst_series(self) -> None:
        spec = SignalSpec(name="x", query="q", threshold=1.0)
        result = evaluate(
            spec,
            [sample(CART, 0.5, pod="a"), sample(CART, 3.0, pod="b"), sample(CART, math.nan)],
            None,
        )
        assert result[CART].verdict is Verdict.BREACH
        assert result[CART].value == 3.0

    def test_series_without_target_labels_are_ignored(self) -> None:
        spec = SignalSpec(name="x", query="q", threshold=1.0)
        stray = Sample(labels={"job": "x"}, value=5.0, timestamp=0.0)
        assert evaluate(spec, [stray], None) == {}

    def test_custom_label_names(self) -> None:
        spec = SignalSpec(name="x", query="q", threshold=1.0)
        found = Sample(labels={"ns": "shop", "app": "cart"}, value=5.0, timestamp=0.0)
        result = evaluate(spec, [found], None, namespace_label="ns", deployment_label="app")
        assert result[CART].verdict is Verdict.BREACH

    def test_infinite_latency_is_a_breach(self) -> None:
        spec = SignalSpec(name="latency_p99", query="q", threshold=0.5)
        result = evaluate(spec, [sample(CART, math.inf)], None)
        assert result[CART].verdict is Verdict.BREACH

    @pytest.mark.parametrize(
        "bad",
        [
            {"comparison": ">="},
            {"for_count": 0},
            {"min_traffic": -1.0},
        ],
    )
    def test_invalid_specs_are_refused(self, bad: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="signal x"):
            SignalSpec(name="x", query="q", threshold=1.0, **bad)


def vector(samples: list[Sample]) -> list[dict[str, Any]]:
    """Samples as the HTTP API's ``data.result`` of an instant vector."""
    return [{"metric": dict(s.labels), "value": [s.timestamp, repr(s.value)]} for s in samples]


class FakePromQL:
    """Answers queries from a table, folded as the real adapter folds; records what was asked."""

    def __init__(self, answers: dict[str, list[Sample] | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, datetime | None]] = []

    async def query_vector(
        self,
        expr: str,
        *,
        at: datetime | None = None,
        combine: Combine = "max",
        namespace_label: str = "namespace",
        deployment_label: str = "deployment",
    ) -> dict[TargetKey, float]:
        self.asked.append((expr, at))
        for needle, answer in self.answers.items():
            if needle in expr:
                if isinstance(answer, Exception):
                    raise answer
                return reduce_vector(
                    vector(answer),
                    combine=combine,
                    namespace_label=namespace_label,
                    deployment_label=deployment_label,
                )
        return {}


def as_promql(fake: FakePromQL) -> PromQL:
    return cast(PromQL, fake)


class TestEvaluateSpecs:
    async def test_one_query_per_spec_and_traffic_for_all_targets(self) -> None:
        fake = FakePromQL(
            {
                "ratio": [sample(CART, 0.2), sample(WEB, 0.0)],
                "traffic": [sample(CART, 3), sample(WEB, 3)],
            }
        )
        result = await evaluate_specs(as_promql(fake), [ERRORS])
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]", "traffic[1m]"]
        assert result[(CART, "error_ratio")].verdict is Verdict.BREACH
        assert result[(WEB, "error_ratio")].verdict is Verdict.HEALTHY

    async def test_window_and_time_are_passed_through(self) -> None:
        fake = FakePromQL({})
        at = datetime(2024, 5, 1, tzinfo=UTC)
        await evaluate_specs(as_promql(fake), [ERRORS], window="7s", at=at)
        assert fake.asked == [("ratio[7s]", at), ("traffic[7s]", at)]

    async def test_a_failed_poll_query_yields_no_entries_and_is_reported(self) -> None:
        fake = FakePromQL({"ratio": PromQLError("down")})
        errors: list[tuple[str, Exception]] = []
        result = await evaluate_specs(
            as_promql(fake), [ERRORS], on_error=lambda name, exc: errors.append((name, exc))
        )
        assert result == {}
        assert [name for name, _ in errors] == ["error_ratio"]

    async def test_a_failed_traffic_query_is_a_failure_too(self) -> None:
        fake = FakePromQL({"ratio": [sample(CART, 0.9)], "traffic": PromQLError("down")})
        errors: list[str] = []
        result = await evaluate_specs(
            as_promql(fake), [ERRORS], target=CART, on_error=lambda n, e: errors.append(n)
        )
        assert result[(CART, "error_ratio")].verdict is Verdict.NO_DATA
        assert errors == ["error_ratio"]

    async def test_verification_restricts_the_query_to_the_target(self) -> None:
        fake = FakePromQL({"ratio": [sample(CART, 0.0)], "traffic": [sample(CART, 5)]})
        result = await evaluate_specs(as_promql(fake), [ERRORS], window="3s", target=CART)
        expr = fake.asked[0][0]
        assert expr.startswith("(ratio[3s]) and on (namespace, deployment) ")
        assert '"shop"' in expr and '"cart"' in expr
        assert result == {(CART, "error_ratio"): result[(CART, "error_ratio")]}
        assert result[(CART, "error_ratio")].verdict is Verdict.HEALTHY

    async def test_verification_of_a_silent_target_is_no_data(self) -> None:
        fake = FakePromQL({})
        result = await evaluate_specs(as_promql(fake), [ERRORS], target=CART)
        assert result[(CART, "error_ratio")].verdict is Verdict.NO_DATA

    async def test_verification_with_a_failed_query_is_no_data_not_health(self) -> None:
        fake = FakePromQL({"ratio": PromQLError("timeout")})
        result = await evaluate_specs(as_promql(fake), [ERRORS], target=CART)
        evaluation = result[(CART, "error_ratio")]
        assert evaluation.verdict is Verdict.NO_DATA
        assert "query failed" in evaluation.detail

    async def test_label_values_are_escaped_in_the_restriction(self) -> None:
        fake = FakePromQL({})
        await evaluate_specs(as_promql(fake), [ERRORS], target=Target('we"ird', "x"))
        assert r'"we\"ird"' in fake.asked[0][0]

    async def test_an_unexpected_error_surfaces_after_every_query_finished(self) -> None:
        fake = FakePromQL({"ratio": RuntimeError("bug"), "other": [sample(CART, 1.0)]})
        other = SignalSpec(name="other", query="other[{window}]", threshold=5.0)
        with pytest.raises(RuntimeError, match="bug"):
            await evaluate_specs(as_promql(fake), [ERRORS, other])
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]", "traffic[1m]", "other[1m]"]


class TestPollerTrafficGate:
    """``judge_spec(tracked=...)``: the traffic query only when a verdict needs it."""

    async def test_no_breach_and_nothing_tracked_asks_only_for_the_values(self) -> None:
        fake = FakePromQL({"ratio": [sample(CART, 0.01), sample(WEB, 0.0)], "traffic": []})
        judgement = await judge_spec(as_promql(fake), ERRORS, tracked=set())
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]"]
        assert judgement.breaching() == []

    async def test_a_breaching_value_brings_the_traffic_query_that_gates_it(self) -> None:
        fake = FakePromQL({"ratio": [sample(CART, 0.2)], "traffic": [sample(CART, 0.01)]})
        judgement = await judge_spec(as_promql(fake), ERRORS, tracked=set())
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]", "traffic[1m]"]
        assert judgement.breaching() == [], "too little traffic: not judged"
        assert judgement.evaluation(("shop", "cart")).verdict is Verdict.NO_DATA

    async def test_a_tracked_target_brings_it_even_when_nothing_breaches(self) -> None:
        fake = FakePromQL({"ratio": [sample(CART, 0.0)], "traffic": [sample(CART, 3)]})
        judgement = await judge_spec(as_promql(fake), ERRORS, tracked={("shop", "cart")})
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]", "traffic[1m]"]
        assert judgement.evaluation(("shop", "cart")).verdict is Verdict.HEALTHY

    async def test_a_below_threshold_signal_breaches_below(self) -> None:
        floor = SignalSpec(
            name="throughput",
            query="ratio[{window}]",
            threshold=1.0,
            comparison="<",
            traffic_query="traffic[{window}]",
        )
        fake = FakePromQL({"ratio": [sample(CART, 0.5)], "traffic": [sample(CART, 3)]})
        judgement = await judge_spec(as_promql(fake), floor, tracked=set())
        assert [expr for expr, _ in fake.asked] == ["ratio[1m]", "traffic[1m]"]
        assert judgement.breaching() == [("shop", "cart")]


class TestJudgement:
    """``breaching()`` answers for the fleet; ``evaluation()`` for one target, the same way."""

    SPEC = SignalSpec(
        name="error_ratio",
        query="q",
        threshold=0.05,
        traffic_query="t",
        min_traffic=1.0,
        min_requests=10,
        window="10s",
    )

    def test_breaching_applies_threshold_and_both_evidence_gates(self) -> None:
        values = {
            ("shop", "bad"): 0.5,
            ("shop", "fine"): 0.01,
            ("shop", "quiet"): 0.9,  # 0.5 req/s: under min_traffic
            ("shop", "thin"): 0.9,  # 1 req/s over 10 s is exactly 10 requests: judged
            ("shop", "silent"): 0.9,  # no traffic series at all
            ("shop", "nan"): math.nan,
        }
        rates = {
            ("shop", "bad"): 5.0,
            ("shop", "fine"): 5.0,
            ("shop", "quiet"): 0.5,
            ("shop", "thin"): 1.0,
            ("shop", "nan"): 5.0,
        }
        judgement = Judgement(self.SPEC, values, rates, "10s")
        assert sorted(judgement.breaching()) == [("shop", "bad"), ("shop", "thin")]
        narrowed = Judgement(self.SPEC, values, rates, "5s")  # 1 req/s x 5 s is too thin
        assert narrowed.breaching() == [("shop", "bad")]

    def test_breaching_and_evaluation_always_agree(self) -> None:
        below = SignalSpec(name="success", query="q", threshold=0.99, comparison="<")
        grid = [0.0, 0.04, 0.05, 0.06, 0.98, 0.99, 1.0, math.inf, -math.inf, math.nan]
        for spec in (self.SPEC, below):
            values = {("ns", f"v{i}-r{j}"): v for i, v in enumerate(grid) for j in range(4)}
            rates = {
                ("ns", f"v{i}-r{j}"): r
                for i in range(len(grid))
                for j, r in enumerate([0.5, 1.0, 2.0, math.nan])
            }
            for traffic in (rates, None):
                judgement = Judgement(spec, values, traffic, "10s")
                breaching = set(judgement.breaching())
                for key in judgement.targets():
                    verdict = judgement.evaluation(key).verdict
                    assert (verdict is Verdict.BREACH) == (key in breaching), (spec.name, key)

    def test_a_target_with_traffic_but_no_value_is_no_data(self) -> None:
        judgement = Judgement(self.SPEC, {}, {("shop", "cart"): 5.0}, "10s")
        assert judgement.breaching() == []
        evaluation = judgement.evaluation(("shop", "cart"))
        assert evaluation.verdict is Verdict.NO_DATA
        assert evaluation.target == CART


class TestDefaults:
    def test_default_signals_are_grouped_by_target_and_take_a_window(self) -> None:
        names = [spec.name for spec in DEFAULT_SIGNALS]
        assert names == ["error_ratio", "latency_p99"]
        for spec in DEFAULT_SIGNALS:
            assert "{window}" in spec.query
            # Grouped by the configured workload label (prometheus.deployment_label).
            assert "by (namespace, {deployment_label}" in spec.query
            assert spec.traffic_query and "{window}" in spec.traffic_query

    def test_render_query_leaves_promql_braces_alone(self) -> None:
        rendered = render_query(DEFAULT_SIGNALS[0].query, "30s")
        assert '{code=~"5.."}[30s]' in rendered
        assert "{window}" not in rendered


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("1s", 1), ("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1d", 86400)],
    )
    def test_prometheus_durations_parse(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == timedelta(seconds=seconds)

    @pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s 2m", "-1s"])
    def test_bad_durations_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match="not a Prometheus duration"):
            parse_duration(text)

    def test_windows_are_whole_seconds_never_zero(self) -> None:
        assert format_duration(timedelta(seconds=2.6)) == "3s"
        assert format_duration(timedelta(milliseconds=100)) == "1s"
