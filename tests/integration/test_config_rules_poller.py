"""RollbackdPollerStalled, run through the real promtool.

The leader must keep finishing poll cycles: when none finishes (or every one
fails) for 5 minutes, and that lasts 5 more, it pages. A standby, a healthy
leader and a change of leader stay silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_config_rules_notifications import RECEIVER, RULES, _promtool_test

pytestmark = pytest.mark.integration

ALERT = "RollbackdPollerStalled"
LEADER = "rollbackd_is_leader"
CYCLES = "rollbackd_poll_cycles_total"
STALLED = {
    "exp_labels": {"severity": "critical"},
    "exp_annotations": {
        "summary": "rollbackd's leader has finished no Prometheus poll cycle for 10 minutes",
        "description": (
            "The leading replica polls Prometheus every scrape interval; none of its cycles "
            "finished (or every one failed) for 10 minutes, so bad rollouts are not detected "
            "from metrics. Alertmanager webhooks still work. Check the leader's logs for "
            "poller_cycle_failed and restart it."
        ),
    },
}


def _case(series: list[dict[str, str]], expected: list[tuple[str, bool]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": ALERT, "exp_alerts": [STALLED] if firing else []}
            for at, firing in expected
        ],
    }


def test_a_leader_whose_cycles_stop_pages_after_ten_minutes(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            _case(
                [
                    {"series": f'{LEADER}{{pod="a"}}', "values": "1x30"},
                    {"series": f'{LEADER}{{pod="b"}}', "values": "0x30"},
                    # 60 cycles a minute for 5 minutes, then none.
                    {"series": f'{CYCLES}{{pod="a",result="ok"}}', "values": "0+60x5 300x25"},
                    {"series": f'{CYCLES}{{pod="b",result="ok"}}', "values": "0x30"},
                ],
                [("5m", False), ("12m", False), ("17m", True), ("25m", True)],
            )
        ],
    )


def test_cycles_that_all_fail_are_a_stall(tmp_path: Path) -> None:
    _promtool_test(
        tmp_path,
        [
            _case(
                [
                    {"series": f'{LEADER}{{pod="a"}}', "values": "1x30"},
                    {"series": f'{CYCLES}{{pod="a",result="failed"}}', "values": "0+60x30"},
                ],
                [("4m", False), ("12m", True)],
            )
        ],
    )


def test_a_healthy_leader_a_degraded_one_and_a_change_of_leader_stay_silent(
    tmp_path: Path,
) -> None:
    _promtool_test(
        tmp_path,
        [
            # Degraded cycles (a query failed) are still cycles: the query-error alert covers them.
            _case(
                [
                    {"series": f'{LEADER}{{pod="a"}}', "values": "1x30"},
                    {"series": f'{CYCLES}{{pod="a",result="degraded"}}', "values": "0+60x30"},
                ],
                [("10m", False), ("20m", False), ("29m", False)],
            ),
            # Leader a dies at 10m; b leads from 11m and polls from a fresh counter.
            _case(
                [
                    {"series": f'{LEADER}{{pod="a"}}', "values": "1x10"},
                    {"series": f'{LEADER}{{pod="b"}}', "values": "0x10 1x19"},
                    {"series": f'{CYCLES}{{pod="a",result="ok"}}', "values": "0+60x10"},
                    {"series": f'{CYCLES}{{pod="b",result="ok"}}', "values": "_x10 0+60x19"},
                ],
                [("10m", False), ("15m", False), ("25m", False)],
            ),
            # No leader at all: RollbackdNoLeader's job, not this one's.
            _case(
                [
                    {"series": f'{LEADER}{{pod="a"}}', "values": "0x30"},
                    {"series": f'{CYCLES}{{pod="a",result="ok"}}', "values": "0x30"},
                ],
                [("20m", False)],
            ),
        ],
    )


def test_the_poller_alert_is_not_routed_to_rollbackd() -> None:
    doc = yaml.safe_load(RULES.read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "rollbackd-poller"]
    assert {rule["alert"] for rule in group["rules"]} == {ALERT}
    (route,) = yaml.safe_load(RECEIVER.read_text())["route"]["routes"]
    (matcher,) = route["matchers"]
    assert ALERT not in matcher
