"""Alertmanager webhook bodies become Signals; bad bodies become clear errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.model import SignalSource, SignalStatus, Target
from rollbackd.sources.alertmanager import (
    PayloadError,
    SignalDeduper,
    TargetMapping,
    alerts_to_signals,
    parse_payload,
)

NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)

# What Alertmanager 0.25 sends for a group mixing a firing and a resolved
# alert: the top-level status is "firing" although one alert is resolved.
MIXED_BODY: dict[str, Any] = {
    "receiver": "rollbackd",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighErrorRate",
                "namespace": "shop",
                "deployment": "cart",
                "severity": "page",
            },
            "annotations": {"summary": "cart 5xx ratio above 5%"},
            "startsAt": "2024-05-01T12:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "a1b2c3d4e5f60718",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "web"},
            "annotations": {"description": "web recovered"},
            "startsAt": "2024-05-01T11:50:00+02:00",
            "endsAt": "2024-05-01T11:58:00+02:00",
            "generatorURL": "",
            "fingerprint": "0f0e0d0c0b0a0908",
        },
    ],
    "groupLabels": {"alertname": "HighErrorRate"},
    "commonLabels": {"alertname": "HighErrorRate", "namespace": "shop"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="HighErrorRate"}',
    "truncatedAlerts": 0,
}


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def no_pods(namespace: str, pod: str) -> Target | None:
    return None


def convert(payload: dict[str, Any], **kwargs: Any) -> Any:
    resolve = kwargs.pop("resolve_pod", no_pods)
    mapping = kwargs.pop("mapping", TargetMapping())
    return alerts_to_signals(parse_payload(body(payload)), mapping, resolve, NOW)


class TestParsing:
    def test_reads_every_documented_field(self) -> None:
        payload = parse_payload(body(MIXED_BODY))
        assert payload.version == "4"
        assert payload.group_key == '{}:{alertname="HighErrorRate"}'
        assert payload.receiver == "rollbackd"
        assert payload.common_labels["namespace"] == "shop"
        assert payload.external_url == "http://alertmanager:9093"
        assert payload.truncated_alerts == 0
        first = payload.alerts[0]
        assert first.fingerprint == "a1b2c3d4e5f60718"
        assert first.generator_url.startswith("http://prometheus")

    def test_zero_time_ends_at_means_no_end(self) -> None:
        first, second = parse_payload(body(MIXED_BODY)).alerts
        assert first.ends_at is None
        assert second.ends_at == datetime(2024, 5, 1, 9, 58, tzinfo=UTC)

    def test_nanosecond_and_offset_times_become_utc(self) -> None:
        first, second = parse_payload(body(MIXED_BODY)).alerts
        assert first.starts_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
        assert second.starts_at == datetime(2024, 5, 1, 9, 50, tzinfo=UTC)

    def test_unknown_fields_are_tolerated(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["someFutureField"] = {"x": 1}
        payload["alerts"][0]["silencedBy"] = []
        assert len(parse_payload(body(payload)).alerts) == 2

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (b"[]", "must be a JSON object"),
            (b"", "not valid JSON"),
        ],
    )
    def test_malformed_bodies_are_rejected_with_the_reason(self, raw: bytes, message: str) -> None:
        with pytest.raises(PayloadError, match=message):
            parse_payload(raw)

    @pytest.mark.parametrize("version", ["3", 4, "5"])
    def test_other_versions_are_rejected(self, version: object) -> None:
        payload = {**MIXED_BODY, "version": version}
        with pytest.raises(PayloadError, match="version"):
            parse_payload(body(payload))

    def test_missing_version_is_rejected(self) -> None:
        payload = {k: v for k, v in MIXED_BODY.items() if k != "version"}
        with pytest.raises(PayloadError, match="version: missing"):
            parse_payload(body(payload))

    @pytest.mark.parametrize(
        ("field", "value", "path"),
        [
            ("status", "pending", "alerts.0.status"),
            ("startsAt", "yesterday", "alerts.0.startsAt"),
            ("labels", {"namespace": 3}, "alerts.0.labels.namespace"),
        ],
    )
    def test_a_bad_alert_field_is_named_in_the_error(
        self, field: str, value: object, path: str
    ) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["alerts"][0][field] = value
        with pytest.raises(PayloadError, match=path):
            parse_payload(body(payload))

    def test_missing_alerts_is_named(self) -> None:
        payload = {k: v for k, v in MIXED_BODY.items() if k != "alerts"}
        with pytest.raises(PayloadError, match="alerts: Field required"):
            parse_payload(body(payload))


class TestMapping:
    def test_each_alert_keeps_its_own_status_in_a_mixed_group(self) -> None:
        signals, unresolved = convert(MIXED_BODY)
        assert unresolved == []
        by_target = {s.target: s for s in signals}
        assert by_target[Target("shop", "cart")].status is SignalStatus.FIRING
        assert by_target[Target("shop", "web")].status is SignalStatus.RESOLVED

    def test_signal_fields(self) -> None:
        signals, _ = convert(MIXED_BODY)
        cart = signals[0]
        assert cart.source is SignalSource.ALERTMANAGER
        assert cart.name == "HighErrorRate"
        assert cart.started_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
        assert cart.observed_at == NOW
        assert cart.summary == "cart 5xx ratio above 5%"
        assert cart.labels["severity"] == "page"
        assert cart.key == "am:a1b2c3d4e5f60718:firing:2024-05-01T12:00:00.123456+00:00"
        assert signals[1].summary == "web recovered"

    def test_firing_and_resolved_of_one_alert_have_different_keys(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["alerts"][0]["status"] = "resolved"
        resolved, _ = convert(payload)
        firing, _ = convert(MIXED_BODY)
        assert resolved[0].key != firing[0].key

    def test_pod_label_resolves_through_the_owning_deployment(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        del payload["alerts"][0]["labels"]["deployment"]
        payload["alerts"][0]["labels"]["pod"] = "cart-7d9f8-abcde"
        asked: list[tuple[str, str]] = []

        def resolve(namespace: str, pod: str) -> Target | None:
            asked.append((namespace, pod))
            return Target(namespace, "cart")

        signals, unresolved = convert(payload, resolve_pod=resolve)
        assert asked == [("shop", "cart-7d9f8-abcde")]
        assert signals[0].target == Target("shop", "cart")
        assert unresolved == []

    def test_configured_label_names_are_used_in_order(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["alerts"] = [
            {
                **MIXED_BODY["alerts"][0],
                "labels": {"alertname": "X", "kubernetes_namespace": "pay", "app": "api"},
            }
        ]
        mapping = TargetMapping(
            namespace_labels=("namespace", "kubernetes_namespace"),
            deployment_labels=("deployment", "app"),
        )
        signals, _ = convert(payload, mapping=mapping)
        assert signals[0].target == Target("pay", "api")

    @pytest.mark.parametrize(
        ("labels", "reason"),
        [
            ({"alertname": "X", "deployment": "cart"}, "no namespace label"),
            ({"alertname": "X", "namespace": "shop"}, "no deployment or pod label"),
            ({"alertname": "X", "namespace": "shop", "pod": "ghost-1"}, "no known owning"),
        ],
    )
    def test_alerts_without_a_target_come_back_unresolved(
        self, labels: dict[str, str], reason: str
    ) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["alerts"][0]["labels"] = labels
        signals, unresolved = convert(payload)
        assert [s.target for s in signals] == [Target("shop", "web")]
        assert len(unresolved) == 1
        assert unresolved[0].fingerprint == "a1b2c3d4e5f60718"
        assert unresolved[0].alertname == "X"
        assert reason in unresolved[0].reason

    def test_missing_fingerprint_gets_a_stable_label_derived_identity(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        del payload["alerts"][0]["fingerprint"]
        first, _ = convert(payload)
        reordered = copy.deepcopy(payload)
        reordered["alerts"][0]["labels"] = dict(reversed(payload["alerts"][0]["labels"].items()))
        second, _ = convert(reordered)
        assert first[0].key.startswith("am:labels-")
        assert first[0].key == second[0].key


class TestDeduper:
    def test_a_resend_and_an_ha_duplicate_are_seen_once(self) -> None:
        deduper = SignalDeduper()
        signals, _ = convert(MIXED_BODY)
        again, _ = convert(MIXED_BODY)  # the same body from the HA peer
        first = [deduper.first_time(s.key, NOW) for s in signals]
        repeat = [deduper.first_time(s.key, NOW + timedelta(seconds=1)) for s in again]
        assert first == [True, True]
        assert repeat == [False, False]

    def test_keys_expire_after_the_ttl(self) -> None:
        deduper = SignalDeduper(ttl=timedelta(minutes=5))
        assert deduper.first_time("k", NOW)
        assert not deduper.first_time("k", NOW + timedelta(minutes=4))
        assert deduper.first_time("k", NOW + timedelta(minutes=6))

    def test_memory_is_bounded_oldest_forgotten_first(self) -> None:
        deduper = SignalDeduper(max_entries=3)
        for i in range(5):
            assert deduper.first_time(f"k{i}", NOW)
        assert len(deduper) == 3
        assert deduper.first_time("k0", NOW)  # forgotten, so new again
        assert not deduper.first_time("k4", NOW)
