"""Config of the signals that need no application metrics: pod health and saturation.

Bad values are refused at load with their key path (``rollbackd check-config``);
saturation is off by default and, when on, polled but not a verification criterion.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rollbackd.config import ConfigError, Settings, load_settings
from rollbackd.podhealth import PodRules

API_TOKEN = {"ROLLBACKD__WEBHOOK__BEARER_TOKEN": "alertmanager-token"}


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "rollbackd.yaml"
    path.write_text("prometheus:\n  url: http://prom:9090\n" + text)
    return load_settings(path, env=API_TOKEN)


def errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_pod_health_is_on_by_default_with_thresholds_against_one_flaky_pod(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    pod_health = settings.sources.kubernetes.pod_health
    assert pod_health.enabled and pod_health.for_count == 2
    assert pod_health.rules() == PodRules(
        min_restarts=2, min_pods=2, min_fraction=0.5, not_ready_after=timedelta(minutes=3)
    )


def test_pod_health_settings_are_read(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "sources:\n  kubernetes:\n    pod_health:\n      min_pods: 3\n"
        "      min_fraction: 0.2\n      not_ready_after: 90s\n      interval: 5s\n",
    )
    pod_health = settings.sources.kubernetes.pod_health
    assert pod_health.rules().min_pods == 3 and pod_health.rules().min_fraction == 0.2
    assert pod_health.rules().not_ready_after == timedelta(seconds=90)
    assert pod_health.interval == timedelta(seconds=5)


@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [
        ("min_fraction: 0", "sources.kubernetes.pod_health.min_fraction"),
        ("min_fraction: 1.5", "sources.kubernetes.pod_health.min_fraction"),
        ("min_pods: 0", "sources.kubernetes.pod_health.min_pods"),
        ("min_restarts: -1", "sources.kubernetes.pod_health.min_restarts"),
        ("not_ready_after: soon", "sources.kubernetes.pod_health.not_ready_after"),
        ("interval: 0s", "sources.kubernetes.pod_health.interval"),
        ("min_restart: 2", "sources.kubernetes.pod_health.min_restart"),
    ],
)
def test_bad_pod_health_values_are_refused_with_their_key_path(
    tmp_path: Path, yaml_text: str, path: str
) -> None:
    text = errors(tmp_path, f"sources:\n  kubernetes:\n    pod_health:\n      {yaml_text}\n")
    assert path in text


def test_saturation_is_off_by_default_and_adds_two_polled_signals_when_on(tmp_path: Path) -> None:
    default = load(tmp_path, "")
    assert [s.name for s in default.prometheus.poll_specs()] == ["error_ratio", "latency_p99"]
    settings = load(tmp_path, "  saturation:\n    enabled: true\n    cpu_throttling: 0.25\n")
    polled = {s.name: s for s in settings.prometheus.poll_specs()}
    assert set(polled) == {"error_ratio", "latency_p99", "cpu_throttling", "memory_saturation"}
    assert polled["cpu_throttling"].threshold == 0.25
    assert "container_cpu_cfs_throttled_periods_total" in polled["cpu_throttling"].query
    assert "kube_pod_container_resource_limits" in polled["memory_saturation"].query
    # Verification judges the configured signals only: no cAdvisor, no inconclusive intervals.
    verified = [s.name for s in settings.prometheus.signal_specs()]
    assert verified == ["error_ratio", "latency_p99"]


def test_bad_saturation_values_and_name_clashes_are_refused(tmp_path: Path) -> None:
    text = errors(
        tmp_path, "  saturation:\n    enabled: true\n    window: 5 minutes\n    memory: 2\n"
    )
    assert "prometheus.saturation.window" in text and "prometheus.saturation.memory" in text
    clash = (
        "  saturation:\n    enabled: true\n  signals:\n    - name: cpu_throttling\n"
        "      query: sum by (namespace, deployment) (rate(x[{window}]))\n      threshold: 1\n"
    )
    assert "signal names must be unique: cpu_throttling" in errors(tmp_path, clash)


def test_check_config_says_what_pod_health_and_saturation_will_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rollbackd import cli

    token = tmp_path / "api.token"
    token.write_text("alertmanager-token\n")
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        "prometheus:\n  url: http://prom:9090\n  saturation:\n    enabled: true\n"
        f"webhook:\n  bearer_token_file: {token}\n"
        "sources:\n  kubernetes:\n    pod_health:\n      min_pods: 3\n"
    )
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(signals: error_ratio, latency_p99, cpu_throttling, memory_saturation)" in out
    assert (
        "pod health: on (2 restarts, 3 pods and 50% of the new ReplicaSet, "
        "not ready after 3m, every 10s)"
    ) in out

    path.write_text(
        "prometheus:\n  url: http://prom:9090\n"
        f"webhook:\n  bearer_token_file: {token}\n"
        "sources:\n  kubernetes:\n    pod_health:\n      enabled: false\n"
    )
    assert cli.main(["check-config", str(path)]) == 0
    assert "pod health: off" in capsys.readouterr().out
