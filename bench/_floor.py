"""The Prometheus+Alertmanager floor: how soon an alert about a bad rollout can arrive at all.

A rule with the poller's own error-ratio query, threshold and evidence gate
but no ``for`` fires at the first evaluation that sees the breach; its
notifications are routed to the sink (never to rollbackd, so it changes no
decision), with group_wait 0. First bad sample -> that notification is the
floor any alert-driven reaction has; the poller needs one scrape more for
its ``for_count`` of 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import yaml

from rollbackd.model import Target
from rollbackd.signals import DEFAULT_SIGNALS, render_query
from rollbackd.testing.promstack import AlertmanagerConfig
from rollbackd.testing.sink import HttpSink

FLOOR_PATH = "/floor"
FLOOR_ALERT = "RollbackdBenchFloor"
FLOOR_LABEL = "bench_floor"


def with_floor_rule(rules: str, scrape_seconds: float, window: str) -> str:
    """``rules`` plus a group holding the floor rule, evaluated every scrape."""
    spec = next(s for s in DEFAULT_SIGNALS if s.name == "error_ratio")
    assert spec.traffic_query is not None
    seconds = int(window.rstrip("s"))
    expr = (
        f"({render_query(spec.query, window)}) > {spec.threshold:g}"
        f" and on (namespace, deployment)"
        f" ({render_query(spec.traffic_query, window)}) * {seconds} >= {spec.min_requests:g}"
    )
    loaded: dict[str, Any] = yaml.safe_load(rules) or {}
    groups = list(loaded.get("groups") or [])
    groups.append(
        {
            "name": "bench-floor",
            "interval": f"{scrape_seconds:g}s",
            "rules": [{"alert": FLOOR_ALERT, "expr": expr, "labels": {FLOOR_LABEL: "true"}}],
        }
    )
    return yaml.safe_dump({"groups": groups}, sort_keys=False)


@dataclass(frozen=True)
class FloorAlertmanagerConfig(AlertmanagerConfig):
    """The stack's route to rollbackd, plus floor alerts routed to the sink only."""

    floor_url: str = ""

    def render(self) -> str:
        config = yaml.safe_load(super().render())
        config["route"]["routes"] = [
            {
                "receiver": "bench-floor",
                "matchers": [f'{FLOOR_LABEL}="true"'],
                "group_by": ["alertname", "namespace", "deployment"],
                "group_wait": "0s",
                "group_interval": self.group_interval,
                "continue": False,
            }
        ]
        config["receivers"].append(
            {"name": "bench-floor", "webhook_configs": [{"url": self.floor_url}]}
        )
        return str(yaml.safe_dump(config, sort_keys=False))

    @classmethod
    def around(cls, base: AlertmanagerConfig, floor_url: str) -> FloorAlertmanagerConfig:
        return cls(**asdict(base), floor_url=floor_url)


def first_floor_alert(sink: HttpSink, target: Target, since: float) -> float | None:
    """When the sink first received a firing floor alert about ``target``."""
    for request in sink.requests_to(FLOOR_PATH):
        at = request.at.timestamp()
        if at < since or not isinstance(request.json, dict):
            continue
        for alert in request.json.get("alerts") or []:
            labels = alert.get("labels") or {}
            if (
                alert.get("status") == "firing"
                and labels.get("namespace") == target.namespace
                and labels.get("deployment") == target.name
            ):
                return at
    return None
