"""Alertmanager webhook bodies (payload version 4) as a real Alertmanager sends them.

A body is one notification of one alert group: the group's labels, the labels
and annotations common to all its alerts, and the alerts themselves, each
with a 16-hex-digit fingerprint and times in Go's RFC 3339 format (nanosecond
fraction, ``Z``; ``endsAt`` is Go's zero time while an alert fires).

``BodyTemplate`` renders the same body with different fingerprints cheaply
(pieces of JSON text between fingerprint slots), so load generators can send
a unique body per request without re-encoding JSON, and the wrk Lua script
can do the same from the pieces.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

NAMESPACE = "default"
DEPLOYMENTS = ("checkout", "cart", "payments", "search", "frontend")
ALERTNAME = "DeploymentHighErrorRatio"
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"
ALERTMANAGER_URL = "http://alertmanager.monitoring.svc:9093"
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
EXPR = (
    'sum by (namespace, deployment) (rate(http_requests_total{code=~"5.."}[1m]))'
    " / sum by (namespace, deployment) (rate(http_requests_total[1m])) > 0.05"
)
# Never produced by json.dumps of the values below, so splitting on it is safe.
SLOT = "\x00fingerprint\x00"
SLOT_JSON = json.dumps(SLOT)[1:-1]


def go_time(value: datetime) -> str:
    """Go's ``time.Time`` JSON form in UTC: RFC 3339, nanoseconds, trailing zeros trimmed."""
    value = value.astimezone(UTC)
    fraction = f"{value.microsecond * 1000:09d}".rstrip("0")
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _pod(deployment: str, index: int) -> str:
    # ReplicaSet hash + pod suffix, as the deployment controller names pods.
    return f"{deployment}-7d9f8b6c5d-{index:05d}"


def alert(fingerprint: str, deployment: str, index: int, starts_at: datetime) -> dict[str, Any]:
    """One firing alert about one pod of ``deployment``."""
    labels = {
        "alertname": ALERTNAME,
        "container": "app",
        "deployment": deployment,
        "instance": f"10.42.{index // 250}.{index % 250 + 2}:8080",
        "job": "kubernetes-pods",
        "namespace": NAMESPACE,
        "pod": _pod(deployment, index),
        "severity": "page",
        "team": "shop",
    }
    query = urllib.parse.urlencode({"g0.expr": EXPR, "g0.tab": "1"})
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"{NAMESPACE}/{deployment} error ratio above 5%",
            "description": f"5xx ratio of {NAMESPACE}/{deployment} has been above 5% for 2m.",
            "runbook_url": "https://runbooks.example.com/deployment-high-error-ratio",
        },
        "startsAt": go_time(starts_at),
        "endsAt": GO_ZERO_TIME,
        "generatorURL": f"{PROMETHEUS_URL}/graph?{query}",
        "fingerprint": fingerprint,
    }


def _common(dicts: Sequence[dict[str, str]]) -> dict[str, str]:
    first, *rest = dicts
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def webhook_body(fingerprints: Sequence[str], starts_at: datetime) -> dict[str, Any]:
    """One group notification with one alert per fingerprint, spread over DEPLOYMENTS."""
    alerts = [
        alert(fp, DEPLOYMENTS[i % len(DEPLOYMENTS)], i, starts_at)
        for i, fp in enumerate(fingerprints)
    ]
    group_labels = {"alertname": ALERTNAME, "namespace": NAMESPACE}
    return {
        "receiver": "rollbackd",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": group_labels,
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": ALERTMANAGER_URL,
        "version": "4",
        "groupKey": f'{{}}/{{severity="page"}}:{{alertname="{ALERTNAME}", namespace="{NAMESPACE}"}}',
        "truncatedAlerts": 0,
    }


def new_prefix() -> str:
    """A random 6-hex-digit prefix: one per measurement, so runs never share fingerprints."""
    return secrets.token_hex(3)


def fingerprint(prefix: str, stream: int, counter: int) -> str:
    """16 hex digits: 6 of run prefix, 2 of stream (thread/worker), 8 of counter."""
    return f"{prefix}{stream:02x}{counter:08x}"


@dataclass(frozen=True)
class BodyTemplate:
    """A webhook body of ``alerts`` alerts as JSON text with a slot per fingerprint."""

    pieces: tuple[str, ...]

    @classmethod
    def build(cls, alerts: int, starts_at: datetime) -> BodyTemplate:
        text = json.dumps(webhook_body([SLOT] * alerts, starts_at))
        pieces = tuple(text.split(SLOT_JSON))
        if len(pieces) != alerts + 1:
            raise AssertionError("fingerprint slot found outside the fingerprint fields")
        return cls(pieces)

    @property
    def alerts(self) -> int:
        return len(self.pieces) - 1

    def render(self, fingerprints: Sequence[str]) -> bytes:
        if len(fingerprints) != self.alerts:
            raise ValueError(f"need {self.alerts} fingerprints, got {len(fingerprints)}")
        out = [self.pieces[0]]
        for fp, piece in zip(fingerprints, self.pieces[1:], strict=True):
            out += (fp, piece)
        return "".join(out).encode()


class UniqueBodies:
    """Bodies whose every alert has a fingerprint never sent before (Alertmanager's incident case)."""

    def __init__(self, template: BodyTemplate, prefix: str, stream: int) -> None:
        self._template = template
        self._prefix = prefix
        self._stream = stream
        self._counter = 0

    def next(self) -> tuple[bytes, list[str]]:
        """The next body and its fingerprints."""
        base = self._counter * self._template.alerts
        self._counter += 1
        fps = [
            fingerprint(self._prefix, self._stream, base + i) for i in range(self._template.alerts)
        ]
        return self._template.render(fps), fps

    def __iter__(self) -> Iterator[tuple[bytes, list[str]]]:
        while True:
            yield self.next()


def repeated_body(template: BodyTemplate, prefix: str) -> tuple[bytes, list[str]]:
    """The one body the repeated-body runs send over and over."""
    return UniqueBodies(template, prefix, stream=0xFF).next()
