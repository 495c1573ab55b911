"""The shipped alerts on rollbackd's page delivery, run through the real promtool.

RollbackdPagesUndelivered fires once a channel's oldest undelivered page has
waited more than 5 minutes for 1 minute; RollbackdPagesExpired fires when a
page was given up. Neither may reach rollbackd's own webhook route.
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
LAG = "rollbackd_notification_delivery_lag_seconds"
EXPIRED = "rollbackd_notifications_expired_total"


def _promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found on PATH: install the Debian package prometheus")
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "15s", "tests": tests}
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _undelivered(channel: str, waited: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "critical", "channel": channel},
        "exp_annotations": {
            "summary": (
                f"rollbackd cannot deliver pages to {channel}: the oldest has waited {waited}"
            ),
            "description": (
                f"A page for channel {channel} has been undelivered for more than 5 minutes. "
                "rollbackd keeps retrying it (and hands a copy to its other channels after "
                "notify.failover_after) until notify.max_age, then gives it up. Check the "
                "channel's service and credentials, and the rollbackd logs for "
                "notification_retry."
            ),
        },
    }


def test_undelivered_pages_alert_after_five_minutes_of_lag_for_one_minute(
    tmp_path: Path,
) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "15s",
                "input_series": [
                    # The pager is down from t=0: the lag grows with the clock.
                    {
                        "series": f'{LAG}{{channel="pagerduty",pod="rollbackd-0"}}',
                        "values": "0+15x40",
                    },
                    # The standby reports 0 for the same channel.
                    {"series": f'{LAG}{{channel="pagerduty",pod="rollbackd-1"}}', "values": "0x40"},
                    # Slack is healthy: an occasional page waits a few seconds.
                    {"series": f'{LAG}{{channel="slack",pod="rollbackd-0"}}', "values": "0 3 0x38"},
                ],
                "alert_rule_test": [
                    # Lag 5m exactly: not above the threshold yet.
                    {"eval_time": "5m", "alertname": "RollbackdPagesUndelivered", "exp_alerts": []},
                    # Above 5m since 5m15s, but `for: 1m` has not elapsed.
                    {"eval_time": "6m", "alertname": "RollbackdPagesUndelivered", "exp_alerts": []},
                    {
                        "eval_time": "6m30s",
                        "alertname": "RollbackdPagesUndelivered",
                        "exp_alerts": [_undelivered("pagerduty", "6m 30s")],
                    },
                ],
            }
        ],
    )


def test_undelivered_pages_alert_clears_when_the_page_goes_out(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{LAG}{{channel="pagerduty"}}',
                        "values": "0 60 120 180 240 300 360 420 480 0 0",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "8m",
                        "alertname": "RollbackdPagesUndelivered",
                        "exp_alerts": [_undelivered("pagerduty", "8m 0s")],
                    },
                    {"eval_time": "9m", "alertname": "RollbackdPagesUndelivered", "exp_alerts": []},
                ],
            }
        ],
    )


def test_an_expired_page_alerts_at_once(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{EXPIRED}{{channel="webhook"}}', "values": "0 0 0 1 1 1"},
                    {"series": f'{EXPIRED}{{channel="slack"}}', "values": "0x5"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "RollbackdPagesExpired", "exp_alerts": []},
                    {
                        "eval_time": "4m",
                        "alertname": "RollbackdPagesExpired",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "channel": "webhook"},
                                "exp_annotations": {
                                    "summary": "rollbackd gave up on pages to webhook",
                                    "description": (
                                        "At least one page for channel webhook stayed "
                                        "undelivered for notify.max_age and was given up in "
                                        "the last hour. `rollbackd history` and the rollback "
                                        "timelines show which."
                                    ),
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    )


def test_delivery_alerts_are_not_routed_to_rollbackd() -> None:
    doc = yaml.safe_load(RULES.read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "rollbackd-notifications"]
    alerts = {rule["alert"] for rule in group["rules"]}
    assert alerts == {"RollbackdPagesUndelivered", "RollbackdPagesExpired"}
    (route,) = yaml.safe_load(RECEIVER.read_text())["route"]["routes"]
    (matcher,) = route["matchers"]
    routed = set(matcher.removeprefix('alertname=~"').removesuffix('"').split("|"))
    assert not alerts & routed
