"""Alertmanager webhook bodies become Signals; a bad body is the sender's 4xx, a bad alert costs only itself."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollbackd.model import SignalSource, SignalStatus, Target
from rollbackd.sources.alertmanager import (
    MAX_NESTING,
    PayloadError,
    RejectedAlert,
    SignalDeduper,
    TargetMapping,
    WebhookAlert,
    alerts_to_signals,
    parse_body,
    parse_payload,
    raw_alert_key,
    validate_alert,
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

    def test_the_all_or_nothing_wrapper_names_the_first_bad_alert(self) -> None:
        payload = copy.deepcopy(MIXED_BODY)
        payload["alerts"][1]["status"] = "pending"
        with pytest.raises(PayloadError, match=r"\$\.alerts\[1\]\.status") as caught:
            parse_payload(body(payload))
        assert (caught.value.status, caught.value.path) == (422, "$.alerts[1].status")


def raises_payload_error(raw: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_body(raw)
    return caught.value


def alert_body(*alerts: Any) -> bytes:
    """A v4 body holding exactly ``alerts`` (ensure_ascii keeps lone surrogates as escapes)."""
    return body({**MIXED_BODY, "alerts": list(alerts)})


GOOD_ALERT: dict[str, Any] = MIXED_BODY["alerts"][0]
MISSING = object()  # an envelope key left out of the body


class TestParseBody:
    def test_checks_the_envelope_and_leaves_alerts_raw(self) -> None:
        raw = parse_body(body(MIXED_BODY))
        assert raw.raw_alerts == MIXED_BODY["alerts"]
        assert raw.group_key == '{}:{alertname="HighErrorRate"}'
        assert raw.receiver == "rollbackd"
        assert raw.status == "firing"
        assert raw.external_url == "http://alertmanager:9093"
        assert raw.truncated_alerts == 0
        assert raw.common_labels == {"alertname": "HighErrorRate", "namespace": "shop"}

    def test_raw_alerts_are_not_validated_here(self) -> None:
        raw = parse_body(alert_body(GOOD_ALERT, "not an alert", {"status": "pending"}))
        assert raw.raw_alerts == [GOOD_ALERT, "not an alert", {"status": "pending"}]

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"{not json", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"\xff\xfe", "not UTF-8"),
            (b'{"version": "4", "alerts": [], "x": "\xc3"}', "not UTF-8"),
            (b"[]", "must be a JSON object, got array"),
            (b'"4"', "must be a JSON object, got string"),
            (b"1" * 5000, "number too large"),
            (b'{"version": "4", "alerts": [], "n": ' + b"9" * 5000 + b"}", "number too large"),
            (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
            (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests deeper"),
        ],
        ids=[
            "malformed",
            "empty",
            "not-utf8",
            "truncated-utf8",
            "array",
            "string",
            "huge-int-alone",
            "huge-int-in-envelope",
            "deep-arrays",
            "deep-objects",
        ],
    )
    def test_a_body_that_is_not_json_is_400_at_the_root(self, raw: bytes, message: str) -> None:
        error = raises_payload_error(raw)
        assert (error.status, error.path) == (400, "$")
        assert message in str(error)

    def test_a_huge_integer_inside_an_alert_is_a_400_too(self) -> None:
        raw = alert_body(GOOD_ALERT).replace(b'"truncatedAlerts": 0', b'"x": -' + b"7" * 5000)
        raw = raw.replace(b'"alerts": [{', b'"alerts": [{"n": ' + b"1" * 5000 + b", ")
        assert raises_payload_error(raw).status == 400

    def test_nesting_is_limited_to_max_nesting_levels(self) -> None:
        def body_of_depth(depth: int) -> bytes:
            # The body, alerts and the alert are three levels; an extra field nests the rest.
            nested: Any = "leaf"
            for level in range(depth - 3):
                nested = [nested] if level % 2 else {"a": nested}
            return alert_body({**GOOD_ALERT, "extra": nested})

        assert len(parse_body(body_of_depth(MAX_NESTING)).raw_alerts) == 1
        error = raises_payload_error(body_of_depth(MAX_NESTING + 1))
        assert (error.status, error.path) == (400, "$")
        assert f"deeper than {MAX_NESTING}" in str(error)

    @pytest.mark.parametrize(
        ("envelope", "path", "message"),
        [
            ({"version": "3"}, "$.version", 'unsupported webhook version "3"'),
            ({"version": 4}, "$.version", "unsupported webhook version a JSON number"),
            ({"version": None}, "$.version", "unsupported webhook version a JSON null"),
            ({"version": MISSING}, "$.version", "version is missing"),
            ({"alerts": None}, "$.alerts", "alerts must be a JSON array, got null"),
            ({"alerts": {"0": GOOD_ALERT}}, "$.alerts", "got object"),
        ],
    )
    def test_json_that_is_not_a_v4_payload_is_422_naming_the_field(
        self, envelope: dict[str, Any], path: str, message: str
    ) -> None:
        payload = {**MIXED_BODY, **envelope}
        error = raises_payload_error(body({k: v for k, v in payload.items() if v is not MISSING}))
        assert (error.status, error.path) == (422, path)
        assert message in str(error)

    def test_missing_alerts_is_422_at_alerts(self) -> None:
        payload = {k: v for k, v in MIXED_BODY.items() if k != "alerts"}
        error = raises_payload_error(body(payload))
        assert (error.status, error.path, str(error)) == (422, "$.alerts", "alerts is missing")

    def test_a_long_unsupported_version_is_not_echoed_in_full(self) -> None:
        error = raises_payload_error(body({**MIXED_BODY, "version": "v" * 100_000}))
        assert len(str(error)) < 200

    def test_malformed_envelope_extras_fall_back_to_safe_defaults(self) -> None:
        payload = {
            **MIXED_BODY,
            "groupKey": "{}:\udfff",
            "receiver": ["x"],
            "truncatedAlerts": "3",
            "commonLabels": {"ok": "v", "bad": 1, "sur\ud800": "x"},
        }
        raw = parse_body(body(payload))
        assert raw.group_key == "{}:\ufffd"
        assert raw.receiver == ""
        assert raw.truncated_alerts == 0
        assert raw.common_labels == {"ok": "v", "sur\ufffd": "x"}
        assert len(raw.raw_alerts) == 2


# A good alert with one field replaced, and the path the rejection must name.
POISON_ALERTS: list[tuple[str, dict[str, Any], str]] = [
    ("lone-surrogate-fingerprint", {"fingerprint": "ab\udfff"}, "fingerprint"),
    (
        "lone-surrogate-label-value",
        {"labels": {**GOOD_ALERT["labels"], "namespace": "sh\udfffop"}},
        "labels.namespace",
    ),
    (
        "lone-surrogate-label-name",
        {"labels": {"alertname": "X", "\ud800": "v"}},
        'labels["\ufffd"]',
    ),
    ("lone-surrogate-annotation", {"annotations": {"summary": "\udfff"}}, "annotations.summary"),
    ("lone-surrogate-generator-url", {"generatorURL": "http://p/\udfff"}, "generatorURL"),
    ("starts-before-year-1-in-utc", {"startsAt": "0001-01-01T00:00:00+14:00"}, "startsAt"),
    ("starts-after-year-9999-in-utc", {"startsAt": "9999-12-31T23:59:59-14:00"}, "startsAt"),
    ("ends-after-year-9999-in-utc", {"endsAt": "9999-12-31T23:59:59-14:00"}, "endsAt"),
    ("starts-at-go-zero-time", {"startsAt": "0001-01-01T00:00:00Z"}, "startsAt"),
    ("starts-at-unix-number", {"startsAt": 1714564800}, "startsAt"),
    ("starts-at-unix-text", {"startsAt": "1714564800"}, "startsAt"),
    ("starts-at-not-a-time", {"startsAt": "yesterday"}, "startsAt"),
    ("number-label-value", {"labels": {"alertname": "X", "namespace": 3}}, "labels.namespace"),
    (
        "null-label-value-dotted-name",
        {"labels": {"alertname": "X", "app.kubernetes.io/name": None}},
        'labels["app.kubernetes.io/name"]',
    ),
    ("empty-labels", {"labels": {}}, "labels"),
    ("labels-not-an-object", {"labels": ["alertname", "X"]}, "labels"),
    ("unknown-status", {"status": "pending"}, "status"),
    ("fingerprint-not-text", {"fingerprint": 12}, "fingerprint"),
]


class TestValidateAlert:
    def test_a_good_alert_is_a_webhook_alert(self) -> None:
        alert = validate_alert(0, GOOD_ALERT)
        assert isinstance(alert, WebhookAlert)
        assert alert.fingerprint == "a1b2c3d4e5f60718"

    @pytest.mark.parametrize(
        ("change", "field_path"),
        [(change, path) for _, change, path in POISON_ALERTS],
        ids=[name for name, _, _ in POISON_ALERTS],
    )
    def test_one_poison_alert_costs_only_itself(
        self, change: dict[str, Any], field_path: str
    ) -> None:
        good_a = {**GOOD_ALERT, "fingerprint": "aaaa"}
        good_b = {**GOOD_ALERT, "fingerprint": "bbbb"}
        poison = {**GOOD_ALERT, **change}
        raw = parse_body(alert_body(good_a, poison, good_b))  # the body itself is fine

        results = [validate_alert(i, item) for i, item in enumerate(raw.raw_alerts)]

        assert isinstance(results[0], WebhookAlert) and results[0].fingerprint == "aaaa"
        assert isinstance(results[2], WebhookAlert) and results[2].fingerprint == "bbbb"
        rejected = results[1]
        assert isinstance(rejected, RejectedAlert)
        assert rejected.index == 1
        assert rejected.path == f"$.alerts[1].{field_path}".replace(".[", "[")
        assert rejected.reason
        assert_safe(rejected)

    @pytest.mark.parametrize("raw", ["text", 3, None, True, [GOOD_ALERT]])
    def test_an_alert_that_is_not_an_object_is_rejected_at_its_index(self, raw: Any) -> None:
        rejected = validate_alert(7, raw)
        assert isinstance(rejected, RejectedAlert)
        assert (rejected.index, rejected.path) == (7, "$.alerts[7]")
        assert "must be a JSON object" in rejected.reason
        assert (rejected.fingerprint, rejected.alertname, dict(rejected.labels)) == ("", "", {})

    def test_a_rejection_keeps_what_can_be_stored_safely(self) -> None:
        poison = {
            **GOOD_ALERT,
            "startsAt": "0001-01-01T00:00:00+14:00",
            "fingerprint": "f\udfff" + "0" * 10_000,
            "labels": {
                "alertname": "Disk\ud800Full",
                "namespace": "shop",
                "count": 3,
                "huge": "x" * 100_000,
                **{f"l{i}": "v" for i in range(500)},
            },
        }
        rejected = validate_alert(0, poison)
        assert isinstance(rejected, RejectedAlert)
        assert rejected.path == "$.alerts[0].labels.count"  # the first problem pydantic met
        assert rejected.alertname == "Disk\ufffdFull"
        assert rejected.fingerprint.startswith("f\ufffd000")
        assert rejected.labels["namespace"] == "shop"
        assert "count" not in rejected.labels  # only string-to-string pairs are kept
        assert_safe(rejected)

    def test_several_problems_name_the_first_and_count_the_rest(self) -> None:
        rejected = validate_alert(2, {"status": "pending", "labels": {}, "startsAt": 5})
        assert isinstance(rejected, RejectedAlert)
        assert rejected.path == "$.alerts[2].status"
        assert "2 more problem" in rejected.reason

    def test_times_inside_the_range_with_any_offset_are_utc(self) -> None:
        alert = validate_alert(0, {**GOOD_ALERT, "startsAt": "2024-05-01T23:30:00-14:00"})
        assert isinstance(alert, WebhookAlert)
        assert alert.starts_at == datetime(2024, 5, 2, 13, 30, tzinfo=UTC)

    def test_a_go_zero_end_with_any_offset_means_no_end(self) -> None:
        alert = validate_alert(0, {**GOOD_ALERT, "endsAt": "0001-01-01T00:00:00+14:00"})
        assert isinstance(alert, WebhookAlert) and alert.ends_at is None


def assert_safe(rejected: RejectedAlert) -> None:
    """Every text of a rejection can be stored as UTF-8 and has a bounded length."""
    texts = [rejected.path, rejected.reason, rejected.fingerprint, rejected.alertname]
    texts += [*rejected.labels.keys(), *rejected.labels.values()]
    for text in texts:
        assert isinstance(text, str)
        text.encode("utf-8")  # raises on a lone surrogate
        assert len(text) <= 1024
    assert len(rejected.labels) <= 64


class TestRawAlertKey:
    def test_byte_identical_repeats_share_a_key(self) -> None:
        first = parse_body(body(MIXED_BODY)).raw_alerts
        again = parse_body(body(MIXED_BODY)).raw_alerts
        keys = [raw_alert_key(a) for a in first]
        assert keys == [raw_alert_key(a) for a in again]
        assert None not in keys and keys[0] != keys[1]

    @pytest.mark.parametrize(
        "change",
        [
            {"status": "resolved"},
            {"startsAt": "2024-05-01T12:05:00Z"},
            # The same instant written differently is a different send, not a repeat.
            {"startsAt": "2024-05-01T14:00:00.123456789+02:00"},
            {"fingerprint": "ffffffffffffffff"},
        ],
    )
    def test_a_different_status_start_or_identity_is_a_different_key(
        self, change: dict[str, Any]
    ) -> None:
        assert raw_alert_key({**GOOD_ALERT, **change}) != raw_alert_key(GOOD_ALERT)

    def test_without_a_fingerprint_the_labels_identify_in_any_order(self) -> None:
        bare = {k: v for k, v in GOOD_ALERT.items() if k != "fingerprint"}
        reordered = {**bare, "labels": dict(reversed(bare["labels"].items()))}
        other = {**bare, "labels": {**bare["labels"], "severity": "ticket"}}
        assert raw_alert_key(bare) == raw_alert_key(reordered) != raw_alert_key(other)
        assert raw_alert_key({**bare, "fingerprint": ""}) == raw_alert_key(bare)

    def test_the_key_is_short_ascii_even_for_poison_text(self) -> None:
        key = raw_alert_key({**GOOD_ALERT, "fingerprint": "\udfff" * 10_000})
        assert key is not None and key.isascii() and len(key) < 100

    @pytest.mark.parametrize(
        "raw",
        [
            None,
            "alert",
            [GOOD_ALERT],
            {**GOOD_ALERT, "status": 1},
            {**GOOD_ALERT, "startsAt": 1714564800},
            {k: v for k, v in GOOD_ALERT.items() if k != "startsAt"},
            {**GOOD_ALERT, "fingerprint": 12},
            {**GOOD_ALERT, "fingerprint": "", "labels": {"namespace": 3}},
            {**GOOD_ALERT, "fingerprint": "", "labels": "x"},
        ],
    )
    def test_no_key_when_the_fields_are_not_plain_strings(self, raw: Any) -> None:
        assert raw_alert_key(raw) is None


# --- properties: poison never escapes as anything but the documented errors ---

TEXT = st.text(st.characters() | st.sampled_from(["\udfff", "\ud800", "\x00", '"', "\\"]))
TIMES = st.sampled_from(
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.123456789+02:00",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "2024-13-45T99:99:99Z",
        "",
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
ALERTISH = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved"]) | JSONISH,
        "labels": st.dictionaries(TEXT, TEXT | JSONISH, max_size=5) | JSONISH,
        "annotations": st.dictionaries(TEXT, TEXT | JSONISH, max_size=3) | JSONISH,
        "startsAt": TIMES | TEXT | JSONISH,
        "endsAt": TIMES | TEXT | JSONISH,
        "generatorURL": TEXT | JSONISH,
        "fingerprint": TEXT | JSONISH,
    },
)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(min_value=0, max_value=10_000), raw=ALERTISH | JSONISH)
def test_validate_alert_never_raises_and_rejections_are_safe(index: int, raw: Any) -> None:
    result = validate_alert(index, raw)
    if isinstance(result, RejectedAlert):
        assert result.index == index
        assert result.path.startswith(f"$.alerts[{index}]")
        assert_safe(result)
    else:
        assert isinstance(result, WebhookAlert)
        # A validated alert is safe to journal and turns into a signal key.
        result.model_dump_json().encode("utf-8")
        assert 1970 <= result.starts_at.year < 3000
    key = raw_alert_key(raw)
    assert key is None or key.isascii()


def _payload_error_or_raw(raw: bytes) -> None:
    try:
        parsed = parse_body(raw)
    except PayloadError as exc:
        assert exc.status in (400, 422)
        assert exc.path.startswith("$")
        str(exc).encode("utf-8")
    else:
        assert isinstance(parsed.raw_alerts, list)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=512))
def test_parse_body_raises_only_payload_error_for_any_bytes(raw: bytes) -> None:
    _payload_error_or_raw(raw)


@settings(max_examples=300, deadline=None)
@given(
    value=JSONISH
    | st.fixed_dictionaries(
        {"version": st.sampled_from(["4", "3", 4]) | JSONISH},
        optional={"alerts": st.lists(ALERTISH | JSONISH, max_size=4) | JSONISH},
    ),
    cut=st.integers(min_value=0, max_value=64),
)
def test_parse_body_raises_only_payload_error_for_json_and_near_json(value: Any, cut: int) -> None:
    text = json.dumps(value)  # NaN and surrogate escapes included, as Python writes them
    _payload_error_or_raw(text.encode("utf-8"))
    _payload_error_or_raw(text.encode("utf-8")[:-cut] if cut else text.encode("utf-8") + b"]")


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
