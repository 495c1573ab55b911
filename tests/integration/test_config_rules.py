"""The shipped Prometheus rules and Alertmanager snippet, checked by the real tools.

`promtool test rules` runs the rule file through Prometheus' own rule engine
against synthetic series, so these tests pin down when the alerts fire (and
when they must not), not only that the YAML parses. The Alertmanager snippet
is embedded in a minimal full config and checked with `amtool`, including
where an alert is routed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus-rules.yaml"
RECEIVER = REPO / "config" / "alertmanager-receiver.yaml"
ALERTS = ("DeploymentHighErrorRatio", "DeploymentHighLatencyP99")
# The group routed to rollbackd; the other groups alert on rollbackd itself.
SIGNAL_GROUP = "rollbackd-deployment-signals"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found on PATH: install the Debian package {package} "
            "(scripts/setup.sh does it)"
        )
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    """Run `promtool test rules` on the shipped rule file; fail with its report."""
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "15s", "tests": tests}
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = _run(_tool("promtool", "prometheus"), "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def _requests(namespace: str, deployment: str, code: str, per_15s: int) -> dict[str, str]:
    """A counter series growing by `per_15s` every 15 s for 10 minutes."""
    labels = f'namespace="{namespace}",deployment="{deployment}",code="{code}"'
    return {"series": f"http_requests_total{{{labels}}}", "values": f"0+{per_15s}x40"}


def _error_alert(namespace: str, deployment: str, percent: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "warning", "namespace": namespace, "deployment": deployment},
        "exp_annotations": {
            "summary": f"{namespace}/{deployment}: {percent} of requests fail with 5xx",
            "description": (
                f"More than 5% of HTTP requests to Deployment {deployment} in namespace "
                f"{namespace} have failed with a 5xx status for at least 1 minute. rollbackd "
                "rolls the Deployment back if its newest rollout is the likely cause, and "
                "pages otherwise."
            ),
        },
    }


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [
        rule for group in doc["groups"] if group["name"] == SIGNAL_GROUP for rule in group["rules"]
    ]


def _snippet() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RECEIVER.read_text())
    return doc


def _embed_snippet(tmp_path: Path) -> Path:
    """A minimal full Alertmanager config with the snippet merged as documented."""
    snippet = _snippet()
    config = {
        "route": {"receiver": "humans", "routes": snippet["route"]["routes"]},
        "receivers": [{"name": "humans"}, *snippet["receivers"]],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- Prometheus rules ---------------------------------------------------------


def test_rule_file_passes_promtool_check() -> None:
    result = _run(_tool("promtool", "prometheus"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_alerts_are_per_deployment_and_wait_one_minute() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert set(alerts) == set(ALERTS)
    for rule in alerts.values():
        assert rule["for"] == "1m"
        # rollbackd maps an alert to a Deployment by these two labels.
        assert "on (namespace, deployment)" in rule["expr"]


def test_error_ratio_alert_fires_for_a_deployment_serving_5xx(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [
                    _requests("shop", "checkout", "200", 15),
                    _requests("shop", "checkout", "500", 5),
                    # A healthy neighbour in the same namespace stays quiet.
                    _requests("shop", "cart", "200", 15),
                    _requests("shop", "cart", "503", 0),
                ],
                "alert_rule_test": [
                    # Breaching since ~1m, but `for: 1m` has not elapsed yet.
                    {"eval_time": "1m", "alertname": "DeploymentHighErrorRatio", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "DeploymentHighErrorRatio",
                        "exp_alerts": [_error_alert("shop", "checkout", "25%")],
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": "namespace_deployment:http_requests_errors:ratio_rate1m",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'namespace_deployment:http_requests_errors:ratio_rate1m{namespace="shop",deployment="checkout"}',
                                "value": 0.25,
                            },
                            {
                                "labels": 'namespace_deployment:http_requests_errors:ratio_rate1m{namespace="shop",deployment="cart"}',
                                "value": 0,
                            },
                        ],
                    }
                ],
            }
        ],
    )


def test_error_ratio_is_zero_not_absent_without_any_5xx_series(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [_requests("shop", "search", "200", 30)],
                "promql_expr_test": [
                    {
                        "expr": "namespace_deployment:http_requests_errors:ratio_rate1m",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'namespace_deployment:http_requests_errors:ratio_rate1m{namespace="shop",deployment="search"}',
                                "value": 0,
                            }
                        ],
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "DeploymentHighErrorRatio", "exp_alerts": []}
                ],
            }
        ],
    )


def _pod_requests(pod: str, code: str, values: str) -> dict[str, str]:
    labels = f'namespace="shop",deployment="checkout",pod="{pod}",code="{code}"'
    return {"series": f"http_requests_total{{{labels}}}", "values": values}


def test_after_a_rollout_the_error_ratio_is_the_new_pods_not_diluted_by_the_replaced_ones(
    tmp_path: Path,
) -> None:
    # The old pod serves 1 req/s without errors for 5 minutes, then is gone
    # (stale); the new pod, from the next scrape on, fails a third of 1 req/s.
    # Two scrapes into the new pod the 1m window still holds 45 s of the old
    # pod's samples: counted, they would read 0.33 x 2/5 at most.
    ratio = "namespace_deployment:http_requests_errors:ratio_rate1m"
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [
                    _pod_requests("old", "200", "0+15x20 stale"),
                    _pod_requests("old", "500", "0+0x20 stale"),
                    _pod_requests("new", "200", "_x21 0+10x10"),
                    _pod_requests("new", "500", "_x21 0+5x10"),
                ],
                "promql_expr_test": [
                    {
                        "expr": ratio,
                        "eval_time": "5m30s",
                        "exp_samples": [
                            {
                                "labels": f'{ratio}{{namespace="shop",deployment="checkout"}}',
                                "value": 1 / 3,
                            }
                        ],
                    }
                ],
            }
        ],
    )


def test_no_alert_below_the_minimum_traffic_even_if_every_request_fails(
    tmp_path: Path,
) -> None:
    # 1 failed request per minute = 0.0167 req/s, under the 0.1 req/s gate.
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [
                    {
                        "series": 'http_requests_total{namespace="shop",deployment="batch",code="500"}',
                        "values": "0+0.25x40",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "DeploymentHighErrorRatio", "exp_alerts": []}
                ],
                # The ratio itself is 100 %: only the traffic gate keeps the alert quiet.
                "promql_expr_test": [
                    {
                        "expr": "namespace_deployment:http_requests_errors:ratio_rate1m",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'namespace_deployment:http_requests_errors:ratio_rate1m{namespace="shop",deployment="batch"}',
                                "value": 1,
                            }
                        ],
                    }
                ],
            }
        ],
    )


def _latency_buckets(namespace: str, deployment: str, slow: bool) -> list[dict[str, str]]:
    """Histogram buckets for 1 req/s; all requests under 0.1 s, or all over 1 s."""
    labels = f'namespace="{namespace}",deployment="{deployment}"'
    fast_growth = "0+0x40" if slow else "0+15x40"
    return [
        {
            "series": f'http_request_duration_seconds_bucket{{{labels},le="0.1"}}',
            "values": fast_growth,
        },
        {
            "series": f'http_request_duration_seconds_bucket{{{labels},le="1"}}',
            "values": fast_growth,
        },
        {
            "series": f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}}',
            "values": "0+15x40",
        },
        {"series": f'http_requests_total{{{labels},code="200"}}', "values": "0+15x40"},
    ]


def test_latency_alert_fires_only_for_the_slow_deployment(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [
                    *_latency_buckets("shop", "checkout", slow=True),
                    *_latency_buckets("shop", "cart", slow=False),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "DeploymentHighLatencyP99",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "shop",
                                    "deployment": "checkout",
                                },
                                # histogram_quantile caps at the highest finite bucket (1 s).
                                "exp_annotations": {
                                    "summary": "shop/checkout: p99 latency 1s",
                                    "description": (
                                        "The 99th percentile of HTTP request latency of "
                                        "Deployment checkout in namespace shop has been above "
                                        "0.5s for at least 1 minute. rollbackd rolls the "
                                        "Deployment back if its newest rollout is the likely "
                                        "cause, and pages otherwise."
                                    ),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    )


# --- Alertmanager receiver snippet ----------------------------------------------


def test_receiver_snippet_embedded_in_a_full_config_passes_amtool(tmp_path: Path) -> None:
    config = _embed_snippet(tmp_path)
    result = _run(_tool("amtool", "prometheus-alertmanager"), "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 receivers" in result.stdout


@pytest.mark.parametrize("alertname", ALERTS)
def test_deployment_alerts_route_to_rollbackd(tmp_path: Path, alertname: str) -> None:
    config = _embed_snippet(tmp_path)
    result = _run(
        _tool("amtool", "prometheus-alertmanager"),
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"alertname={alertname}",
        "namespace=shop",
        "deployment=checkout",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["rollbackd"]


def test_other_alerts_do_not_reach_rollbackd(tmp_path: Path) -> None:
    config = _embed_snippet(tmp_path)
    result = _run(
        _tool("amtool", "prometheus-alertmanager"),
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        "alertname=NodeDiskFull",
        "namespace=shop",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["humans"]


def test_receiver_posts_to_rollbackd_with_resolved_alerts_and_a_bearer_token() -> None:
    (receiver,) = _snippet()["receivers"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://rollbackd.rollbackd.svc:8080/api/v1/alerts"
    assert webhook["send_resolved"] is True
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    # A token file, never an inline secret.
    assert "credentials" not in authorization
    assert authorization["credentials_file"].startswith("/")


def test_route_matches_exactly_the_alerts_the_rule_file_defines() -> None:
    (route,) = _snippet()["route"]["routes"]
    assert route["continue"] is True
    (matcher,) = route["matchers"]
    alternatives = matcher.removeprefix('alertname=~"').removesuffix('"').split("|")
    defined = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert set(alternatives) == defined
