"""``prometheus.deployment_label``: the metric label naming a workload, in every query rollbackd sends.

The default must send exactly the documented queries (those sent before the
key existed, with the built-in signals counting live series only); another label must reach the poller's grouping and parsing, the
verification's narrowing to one target, the saturation queries, the
postmortem's impact and the data assertions; a bad label is refused at load
with its key path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from rollbackd import cli
from rollbackd.assertions import AssertionChecker, AssertionStatus
from rollbackd.config import ConfigError, load_settings
from rollbackd.config.assertions import Assertion, expr_problems
from rollbackd.config.report import ReportSettings
from rollbackd.model import SignalStatus, Target
from rollbackd.postmortem.impact import measure_impact, render_impact_query
from rollbackd.postmortem.times import Window
from rollbackd.promql import PromQL, PromQLError, Sample
from rollbackd.saturation import saturation_specs
from rollbackd.signalquery import evaluate_specs, judge_spec
from rollbackd.signals import DEFAULT_SIGNALS, Verdict, render_query
from rollbackd.sources.prometheus import PrometheusPoller
from tests.unit.test_signals import FakePromQL, as_promql

SHOP = Target("default", "shop")
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ERROR_RATIO = DEFAULT_SIGNALS[0]

# What rollbackd sends: the released queries, with the built-in signals'
# rates restricted to live series since (``signals._live_rate``).
BEFORE = {
    "error_ratio": (
        '(sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[1m])'
        " and http_requests_total)"
        " or sum by (namespace, deployment) (rate(http_requests_total[1m])"
        " and http_requests_total) * 0)"
        " / sum by (namespace, deployment) (rate(http_requests_total[1m]) and http_requests_total)"
    ),
    "error_ratio traffic": (
        "sum by (namespace, deployment) (rate(http_requests_total[1m]) and http_requests_total)"
    ),
    "latency_p99": (
        "histogram_quantile(0.99, sum by (namespace, deployment, le)"
        " (rate(http_request_duration_seconds_bucket[1m])"
        " and http_request_duration_seconds_bucket))"
    ),
    "latency_p99 traffic": (
        "sum by (namespace, deployment) (rate(http_request_duration_seconds_count[1m])"
        " and http_request_duration_seconds_count)"
    ),
    "cpu_throttling": (
        "sum by (namespace, deployment) (label_replace(rate(container_cpu_cfs_throttled_periods_"
        'total{container!=""}[1m]), "deployment", "$1", "pod", "(.+)-[a-z0-9]+-[a-z0-9]+")) / '
        "sum by (namespace, deployment) (label_replace(rate(container_cpu_cfs_periods_total"
        '{container!=""}[1m]), "deployment", "$1", "pod", "(.+)-[a-z0-9]+-[a-z0-9]+"))'
    ),
    "memory_saturation": (
        "max by (namespace, deployment) (label_replace(max by (namespace, pod, container) "
        '(max_over_time(container_memory_working_set_bytes{container!=""}[1m])) / on '
        "(namespace, pod, container) max by (namespace, pod, container) "
        '(kube_pod_container_resource_limits{resource="memory"} > 0), "deployment", "$1", '
        '"pod", "(.+)-[a-z0-9]+-[a-z0-9]+"))'
    ),
    "failed": (
        'sum(increase(http_requests_total{namespace="default",deployment="shop",'
        'code=~"5.."}[600s]))'
    ),
    "total": 'sum(increase(http_requests_total{namespace="default",deployment="shop"}[600s]))',
}


def rendered_defaults(label: str | None) -> dict[str, str]:
    """Every built-in query as sent, with the label given (None: the default)."""
    extra = {} if label is None else {"deployment_label": label}
    found: dict[str, str] = {}
    saturation = saturation_specs(cpu_throttling=0.5, memory=0.9, window="5m", for_count=3)
    for spec in (*DEFAULT_SIGNALS, *saturation):
        found[spec.name] = render_query(spec.query, "1m", **extra)
        if spec.traffic_query:
            found[f"{spec.name} traffic"] = render_query(spec.traffic_query, "1m", **extra)
    report = ReportSettings()
    window = timedelta(minutes=10)
    found["failed"] = render_impact_query(report.failed_requests_query, SHOP, window, **extra)
    found["total"] = render_impact_query(report.total_requests_query, SHOP, window, **extra)
    return found


def sample(labels: dict[str, str], value: float) -> Sample:
    return Sample(labels, value, NOW.timestamp())


def rollout_series(value: float) -> list[Sample]:
    return [sample({"namespace": "default", "rollout": "shop"}, value)]


class TestQueries:
    def test_the_default_sends_byte_for_byte_the_queries_sent_before(self) -> None:
        assert rendered_defaults(None) == BEFORE
        assert rendered_defaults("deployment") == BEFORE

    def test_another_label_replaces_deployment_in_every_built_in_query(self) -> None:
        found = rendered_defaults("rollout")
        # The same text, with the label swapped, and nothing else.
        assert found == {
            name: query.replace('"deployment"', '"rollout"')
            .replace("deployment)", "rollout)")
            .replace("deployment,", "rollout,")
            .replace('deployment="', 'rollout="')
            for name, query in BEFORE.items()
        }
        assert all("deployment" not in query for query in found.values()), found

    def test_a_users_own_signal_may_name_the_label_or_write_it_out(self) -> None:
        template = "sum by (namespace, {deployment_label}) (rate(x[{window}]))"
        assert render_query(template, "30s", "app") == "sum by (namespace, app) (rate(x[30s]))"
        # Other brace words are PromQL's, left for Prometheus to judge.
        assert render_query("x{app}[{window}]", "30s", "app") == "x{app}[30s]"


class TestParsing:
    async def test_the_poller_reads_the_workload_from_the_configured_label(self) -> None:
        fake = FakePromQL(
            {
                'code=~"5.."': [
                    *rollout_series(0.4),
                    # A series without the label names no workload: ignored, not "".
                    sample({"namespace": "default", "deployment": "other"}, 0.9),
                ],
                "http_requests_total[": rollout_series(20.0),
            }
        )
        judgement = await judge_spec(as_promql(fake), ERROR_RATIO, deployment_label="rollout")
        assert judgement.breaching() == [("default", "shop")]
        assert judgement.evaluation(("default", "shop")).verdict is Verdict.BREACH
        assert all("by (namespace, rollout)" in expr for expr, _ in fake.asked)

    async def test_the_poller_fires_for_a_target_named_only_by_the_configured_label(
        self,
    ) -> None:
        fake = FakePromQL(
            {'code=~"5.."': rollout_series(0.4), "http_requests_total[": rollout_series(20.0)}
        )
        emitted: list[object] = []

        async def emit(signal: object) -> None:
            emitted.append(signal)

        poller = PrometheusPoller(
            as_promql(fake),
            [ERROR_RATIO],
            interval=1.0,
            emit=emit,
            clock=lambda: NOW,
            align_to_scrapes=False,
            deployment_label="rollout",
        )
        assert await poller.evaluate_once() == []  # for_count 2: pending after one
        (signal,) = await poller.evaluate_once()
        assert signal.target == SHOP and signal.status is SignalStatus.FIRING

    async def test_the_default_label_does_not_see_workloads_named_otherwise(self) -> None:
        fake = FakePromQL(
            {'code=~"5.."': rollout_series(0.4), "http_requests_total[": rollout_series(20.0)}
        )
        judgement = await judge_spec(as_promql(fake), ERROR_RATIO)
        assert judgement.breaching() == [] and judgement.targets() == set()


class TestVerification:
    async def test_verification_narrows_each_query_to_the_target_by_the_label(self) -> None:
        fake = FakePromQL(
            {'code=~"5.."': rollout_series(0.0), "http_requests_total[": rollout_series(20.0)}
        )
        found = await evaluate_specs(
            as_promql(fake), [ERROR_RATIO], window="9s", target=SHOP, deployment_label="rollout"
        )
        assert found[(SHOP, "error_ratio")].verdict is Verdict.HEALTHY
        for expr, _ in fake.asked:
            assert expr.endswith(
                ") and on (namespace, rollout) label_replace(label_replace(vector(1), "
                '"namespace", "default", "", ""), "rollout", "shop", "", "")'
            ), expr
            assert "[9s]" in expr

    async def test_a_failed_query_is_still_no_data_under_another_label(self) -> None:
        fake = FakePromQL({"http_requests_total": PromQLError("HTTP 503", retryable=True)})
        found = await evaluate_specs(
            as_promql(fake), [ERROR_RATIO], target=SHOP, deployment_label="rollout"
        )
        assert found[(SHOP, "error_ratio")].verdict is Verdict.NO_DATA


class RecordingQuery:
    def __init__(self, answer: list[Sample] | Exception) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def __call__(self, expr: str, at: datetime | None = None) -> list[Sample]:
        self.asked.append(expr)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class TestAssertionsAndImpact:
    EXPR = (
        'sum(rate(orders_failed_total{namespace="{namespace}",'
        '{deployment_label}="{deployment}"}[{window}]))'
    )

    async def test_an_assertion_names_the_label_with_its_placeholder(self) -> None:
        assert expr_problems(self.EXPR) == []
        assertion = Assertion(name="no-failed", expr=self.EXPR, op="==", value=0, applies_to="all")
        query = RecordingQuery([sample({}, 0.0)])

        async def no_annotations(_target: Target) -> dict[str, str]:
            return {}

        checker = AssertionChecker([assertion], query, no_annotations, deployment_label="app")
        (outcome,) = await checker.run(SHOP, "12s", NOW)
        assert outcome.status is AssertionStatus.PASSED
        assert query.asked == [
            'sum(rate(orders_failed_total{namespace="default",app="shop"}[12s]))'
        ]
        # Without the key the same assertion reads as before it existed.
        default = assertion.render(namespace="default", deployment="shop", window="12s")
        assert 'deployment="shop"' in default

    async def test_the_impact_asks_by_the_label_and_prints_what_it_asked(self) -> None:
        query = RecordingQuery([sample({}, 7.0)])
        prom = cast(PromQL, SimpleNamespace(query=query))
        window = Window(NOW - timedelta(minutes=5), "rollout start", NOW, "completed", True)
        impact = await measure_impact(prom, ReportSettings(), SHOP, window, "rollout")
        assert impact.status == "measured" and impact.failed_requests == 7.0
        assert impact.failed_query in query.asked and impact.total_query in query.asked
        assert 'rollout="shop"' in (impact.total_query or "")
        assert "deployment=" not in (impact.total_query or "")


def config_with(tmp_path: Path, prometheus: str) -> Path:
    token = tmp_path / "api.token"
    token.write_text("alertmanager-token\n")
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        f"webhook:\n  bearer_token_file: {token}\nprometheus:\n  url: http://prom:9090\n"
        + prometheus
    )
    return path


class TestConfig:
    def test_the_key_defaults_to_deployment_and_takes_another_label(self, tmp_path: Path) -> None:
        assert load_settings(config_with(tmp_path, ""), env={}).prometheus.deployment_label == (
            "deployment"
        )
        settings = load_settings(config_with(tmp_path, "  deployment_label: rollout\n"), env={})
        assert settings.prometheus.deployment_label == "rollout"
        env = {"ROLLBACKD__PROMETHEUS__DEPLOYMENT_LABEL": "app"}
        assert load_settings(config_with(tmp_path, ""), env=env).prometheus.deployment_label == (
            "app"
        )

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("''", "is not a Prometheus label name"),
            ("app-name", "is not a Prometheus label name"),
            ("1app", "is not a Prometheus label name"),
            ("'rollout\"} or vector(1) #'", "is not a Prometheus label name"),
            ("__name__", "reserved by Prometheus"),
            ("namespace", "it names the namespace"),
            ("le", "histogram bucket label"),
            ("[rollout, app]", "deployment_label"),
        ],
    )
    def test_a_bad_label_is_refused_at_load_with_the_key_path(
        self, tmp_path: Path, value: str, why: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            load_settings(config_with(tmp_path, f"  deployment_label: {value}\n"), env={})
        (error,) = caught.value.errors
        assert error.startswith("prometheus.deployment_label") and why in error, error

    def test_check_config_refuses_it_and_names_the_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = config_with(tmp_path, "  deployment_label: app.kubernetes.io/name\n")
        assert cli.main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "prometheus.deployment_label" in err and "app.kubernetes.io/name" in err
