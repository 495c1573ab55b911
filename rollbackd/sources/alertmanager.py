"""Alertmanager webhook (payload version 4) -> Signals.

A body is taken in two steps, so one bad alert never costs the good ones
beside it and repeats can be dropped before any object is built:

1. ``parse_body`` decodes the bytes and checks only the envelope (a JSON
   object, ``version`` "4", ``alerts`` a list). Anything wrong here is the
   sender's fault for the whole body: ``PayloadError`` with an HTTP status
   (400 not JSON at all, 422 JSON but not a v4 payload) and the JSON path.
2. ``validate_alert`` checks one raw alert and never raises: a bad one comes
   back as ``RejectedAlert`` naming its path, with best-effort fields that
   are safe to store. ``raw_alert_key`` gives a cheap dedupe key in between.

Validation is strict where a mistake would mislead (each alert's status,
startsAt, labels, text that is not valid Unicode) and tolerant elsewhere:
Alertmanager adds fields over time, so unknown keys are ignored.

Each alert's own ``status`` is used: the top-level status says "firing" as
soon as one alert of a group fires, even when others in the same body are
resolved. Repeats are normal (Alertmanager re-sends on every
group_interval/repeat_interval, and an HA pair sends everything twice), so
each signal carries the key ``am:<fingerprint>:<status>:<startsAt>`` and
``SignalDeduper`` tells first sightings from repeats.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from rollbackd.model import Signal, SignalSource, SignalStatus, Target
from rollbackd.sources.jsonsafe import (
    has_surrogate,
    json_path,
    json_type,
    nesting_exceeds,
    safe_text,
)

__all__ = [
    "MAX_NESTING",
    "PayloadError",
    "RawPayload",
    "RejectedAlert",
    "SignalDeduper",
    "TargetMapping",
    "UnresolvedAlert",
    "WebhookAlert",
    "WebhookPayload",
    "alert_to_signal",
    "alerts_to_signals",
    "parse_body",
    "parse_payload",
    "raw_alert_key",
    "validate_alert",
]

SUPPORTED_VERSION = "4"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
# Alertmanager's body nests four levels (body, alerts, alert, labels); far
# deeper is an attack or a bug, and deep enough makes Python's json recurse out.
MAX_NESTING = 32
# Go's zero time: Alertmanager sends it as endsAt for alerts with no end yet.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"
_RFC3339_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}")
# Times outside this range are nonsense for an alert, and near datetime's own
# limits they overflow in ordinary arithmetic (startsAt - change_window).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# Bounds for the best-effort fields of a rejected alert: stored, logged, shown.
_MAX_KEPT_LABELS = 64
_MAX_LABEL_NAME = 128
_MAX_LABEL_VALUE = 1024
_MAX_NAME = 256
_MAX_REASON = 512
_MAX_ENVELOPE_TEXT = 4096


class PayloadError(ValueError):
    """The body as a whole is unusable; the sender must not retry it.

    ``status`` is the HTTP answer: 400 when the body is not JSON at all (not
    UTF-8, malformed, nested too deeply, a number too big, not an object),
    422 when it is JSON but not a usable v4 payload. ``path`` is the JSON
    path of the problem (``$`` for the whole body).
    """

    def __init__(self, message: str, *, status: int = 400, path: str = "$") -> None:
        super().__init__(message)
        self.status = status
        self.path = path


def _utc(value: datetime) -> datetime:
    # Alertmanager always sends an offset; a naive time is taken as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_zero_time(value: Any) -> bool:
    return value in (None, "") or (isinstance(value, str) and value.startswith(_ZERO_TIME_PREFIX))


class WebhookAlert(BaseModel):
    """One alert of the webhook body (Alertmanager's ``template.Alert``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def _some_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("an alert needs at least one label")
        return value

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would also take numbers and bare dates; Alertmanager sends
        # RFC 3339 text, and anything else would be read as a misleading time.
        if info.field_name == "ends_at" and _is_zero_time(value):
            return None
        if not isinstance(value, str) or not _RFC3339_PREFIX.match(value):
            raise ValueError("must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z")
        return value

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            utc = _utc(value)
        except OverflowError:
            # OverflowError is not a ValueError: pydantic would let it escape.
            raise ValueError("out of range once converted to UTC") from None
        if not _EARLIEST <= utc < _LATEST:
            raise ValueError(f"must lie between {_EARLIEST:%Y-%m-%d} and {_LATEST:%Y-%m-%d} UTC")
        return utc

    @property
    def identity(self) -> str:
        """Alertmanager's fingerprint, or a stable stand-in derived from the labels."""
        if self.fingerprint:
            return self.fingerprint
        canonical = json.dumps(sorted(self.labels.items()), separators=(",", ":"))
        return "labels-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class WebhookPayload(BaseModel):
    """The webhook body (Alertmanager's ``webhook.Message``: version 4 + ``template.Data``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    version: str
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert]


@dataclass(frozen=True)
class RawPayload:
    """A body whose envelope is a usable v4 payload; the alerts are not yet validated.

    The envelope fields are informational and best-effort: a malformed one
    is replaced by its default rather than costing the alerts. All text is
    safe to log and store.
    """

    raw_alerts: list[Any]
    group_key: str = ""
    receiver: str = ""
    status: str = ""
    external_url: str = ""
    truncated_alerts: int = 0
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedAlert:
    """One alert of a body that cannot be used; the others in the body still are.

    ``path`` names the first problem (``$.alerts[3].startsAt``). The other
    fields are best-effort, for the journal and the logs: surrogates
    replaced, only string-to-string labels kept, every length bounded.
    """

    index: int
    path: str
    reason: str
    fingerprint: str = ""
    alertname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """What the HTTP answer says about this alert."""
        return {"index": self.index, "path": self.path, "reason": self.reason}


def _decode(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise PayloadError(f"body nests deeper than {MAX_NESTING} levels") from None
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits.
        raise PayloadError("body holds a number too large to read") from None
    # Counting brackets is a C-speed upper bound on the depth: most bodies skip the walk.
    if body.count(b"[") + body.count(b"{") > MAX_NESTING and nesting_exceeds(data, MAX_NESTING):
        raise PayloadError(f"body nests deeper than {MAX_NESTING} levels")
    return data


def _show(value: Any) -> str:
    if isinstance(value, str):
        return safe_text(json.dumps(value, ensure_ascii=False), 64)
    return f"a JSON {json_type(value)}"


def _envelope_text(value: Any) -> str:
    return safe_text(value, _MAX_ENVELOPE_TEXT) if isinstance(value, str) else ""


def _safe_labels(value: Any) -> dict[str, str]:
    """The string-to-string pairs of ``value``, made safe and bounded; never raises."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, str] = {}
    for key, item in value.items():
        if len(kept) >= _MAX_KEPT_LABELS:
            break
        if isinstance(key, str) and isinstance(item, str):
            kept[safe_text(key, _MAX_LABEL_NAME)] = safe_text(item, _MAX_LABEL_VALUE)
    return kept


def parse_body(body: bytes) -> RawPayload:
    """Decode a webhook body and check its envelope; raises only ``PayloadError``."""
    data = _decode(body)
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {json_type(data)}")
    if "version" not in data:
        raise PayloadError('version is missing (expected "4")', status=422, path="$.version")
    version = data["version"]
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            f'unsupported webhook version {_show(version)} (expected "4")',
            status=422,
            path="$.version",
        )
    if "alerts" not in data:
        raise PayloadError("alerts is missing", status=422, path="$.alerts")
    alerts = data["alerts"]
    if not isinstance(alerts, list):
        raise PayloadError(
            f"alerts must be a JSON array, got {json_type(alerts)}", status=422, path="$.alerts"
        )
    truncated = data.get("truncatedAlerts")
    return RawPayload(
        raw_alerts=alerts,
        group_key=_envelope_text(data.get("groupKey")),
        receiver=_envelope_text(data.get("receiver")),
        status=_envelope_text(data.get("status")),
        external_url=_envelope_text(data.get("externalURL")),
        truncated_alerts=(
            truncated if isinstance(truncated, int) and not isinstance(truncated, bool) else 0
        ),
        group_labels=_safe_labels(data.get("groupLabels")),
        common_labels=_safe_labels(data.get("commonLabels")),
    )


def raw_alert_key(raw: Any) -> str | None:
    """A dedupe key for a raw alert, computed without validating it.

    Built from the fingerprint (or, without one, the labels in canonical
    order), the status and startsAt exactly as sent, so byte-identical
    repeats share it and a resolve or a new firing does not. None when
    ``raw`` is not an object or those fields are not plain strings.
    """
    if not isinstance(raw, dict):
        return None
    status, starts_at, fingerprint = raw.get("status"), raw.get("startsAt"), raw.get("fingerprint")
    if not isinstance(status, str) or not isinstance(starts_at, str):
        return None
    identity: list[Any]
    if isinstance(fingerprint, str) and fingerprint:
        plain = f"{fingerprint}\x1f{status}\x1f{starts_at}"
        if len(plain) <= 96 and plain.isascii():
            # The common case (16 hex digits), kept cheap: no hashing.
            return "am-raw:f\x1f" + plain
        identity = ["fingerprint", fingerprint]
    elif fingerprint is None or fingerprint == "":
        labels = raw.get("labels")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            return None
        identity = ["labels", sorted(labels.items())]
    else:
        return None
    # ensure_ascii keeps even lone surrogates hashable.
    canonical = json.dumps([identity, status, starts_at], separators=(",", ":"))
    return "am-raw:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _reject(index: int, path: str, reason: str, raw: Any) -> RejectedAlert:
    labels = _safe_labels(raw.get("labels")) if isinstance(raw, dict) else {}
    fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
    return RejectedAlert(
        index=index,
        path=path,
        reason=safe_text(reason, _MAX_REASON),
        fingerprint=safe_text(fingerprint, _MAX_NAME) if isinstance(fingerprint, str) else "",
        alertname=safe_text(labels.get("alertname", ""), _MAX_NAME),
        labels=labels,
    )


def _first_unencodable(alert: WebhookAlert) -> tuple[str, ...] | None:
    """Where ``alert`` holds text that is not valid Unicode, or None."""
    for name, mapping in (("labels", alert.labels), ("annotations", alert.annotations)):
        for key, value in mapping.items():
            if has_surrogate(key) or has_surrogate(value):
                return (name, key)
    for alias, text in (("fingerprint", alert.fingerprint), ("generatorURL", alert.generator_url)):
        if has_surrogate(text):
            return (alias,)
    return None


def may_hold_surrogates(body: bytes) -> bool:
    """False when no string in ``body`` can decode to a lone surrogate.

    A UTF-8 body cannot carry one raw; only a ``\\uD800``-``\\uDFFF`` escape
    makes one. One C-speed scan of the body spares the per-string check for
    every alert of the (usual) clean body; a false positive only costs time.
    """
    return _SURROGATE_ESCAPE.search(body) is not None


def validate_alert(
    index: int, raw: Any, *, check_surrogates: bool = True
) -> WebhookAlert | RejectedAlert:
    """Validate ``raw``, the alert at ``$.alerts[index]``; never raises.

    Any problem (a field pydantic refuses, a time out of range, text that is
    not valid Unicode, no labels) gives a ``RejectedAlert`` naming its path.
    ``check_surrogates=False`` is for bodies ``may_hold_surrogates`` cleared.
    """
    base = f"$.alerts[{index}]"
    try:
        if not isinstance(raw, dict):
            return _reject(
                index, base, f"an alert must be a JSON object, got {json_type(raw)}", raw
            )
        try:
            alert = WebhookAlert.model_validate(raw)
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False)
            first = problems[0]
            reason = str(first["msg"]).removeprefix("Value error, ")
            if len(problems) > 1:
                reason += f" (and {len(problems) - 1} more problem(s))"
            return _reject(index, json_path(base, first["loc"]), reason, raw)
        where = _first_unencodable(alert) if check_surrogates else None
        if where is not None:
            return _reject(
                index, json_path(base, where), "text is not valid Unicode (lone surrogate)", raw
            )
        return alert
    except Exception as exc:
        # Whatever slipped past the checks above costs this alert, not the body.
        return _reject(index, base, f"unusable alert ({type(exc).__name__})", raw)


def parse_payload(body: bytes) -> WebhookPayload:
    """The whole body, all or nothing: ``PayloadError`` on the first bad alert.

    Kept for callers that want a single object; the intake uses
    ``parse_body`` + ``validate_alert`` so one bad alert costs only itself.
    """
    raw = parse_body(body)
    alerts: list[WebhookAlert] = []
    for index, item in enumerate(raw.raw_alerts):
        checked = validate_alert(index, item)
        if isinstance(checked, RejectedAlert):
            raise PayloadError(f"{checked.path}: {checked.reason}", status=422, path=checked.path)
        alerts.append(checked)
    return WebhookPayload.model_validate(
        {
            "version": SUPPORTED_VERSION,
            "groupKey": raw.group_key,
            "truncatedAlerts": raw.truncated_alerts,
            "status": "resolved" if raw.status == "resolved" else "firing",
            "receiver": raw.receiver,
            "groupLabels": dict(raw.group_labels),
            "commonLabels": dict(raw.common_labels),
            "externalURL": raw.external_url,
            "alerts": alerts,
        }
    )


@dataclass(frozen=True)
class TargetMapping:
    """Which alert labels name the Deployment; the first label present wins."""

    namespace_labels: tuple[str, ...] = ("namespace",)
    deployment_labels: tuple[str, ...] = ("deployment",)
    pod_labels: tuple[str, ...] = ("pod",)


@dataclass(frozen=True)
class UnresolvedAlert:
    """An alert that names no Deployment rollbackd can find: recorded, counted, not acted on."""

    fingerprint: str
    alertname: str
    labels: Mapping[str, str]
    reason: str


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _resolve(
    alert: WebhookAlert,
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
) -> Target | str:
    """The alert's target, or the reason there is none."""
    namespace = _first(alert.labels, mapping.namespace_labels)
    if namespace is None:
        return f"no namespace label (looked for {', '.join(mapping.namespace_labels)})"
    deployment = _first(alert.labels, mapping.deployment_labels)
    if deployment is not None:
        return Target(namespace, deployment)
    pod = _first(alert.labels, mapping.pod_labels)
    if pod is None:
        looked_for = ", ".join(mapping.deployment_labels + mapping.pod_labels)
        return f"no deployment or pod label (looked for {looked_for})"
    target = resolve_pod(namespace, pod)
    if target is None:
        return f"pod {namespace}/{pod} has no known owning Deployment"
    return target


def alert_to_signal(
    alert: WebhookAlert,
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
    now: datetime,
) -> Signal | UnresolvedAlert:
    """The Signal for one validated alert, or why it names no target."""
    alertname = alert.labels.get("alertname", "")
    target = _resolve(alert, mapping, resolve_pod)
    if isinstance(target, str):
        return UnresolvedAlert(alert.identity, alertname, alert.labels, target)
    status = SignalStatus.FIRING if alert.status == "firing" else SignalStatus.RESOLVED
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or alertname
    return Signal(
        target=target,
        source=SignalSource.ALERTMANAGER,
        name=alertname,
        status=status,
        started_at=alert.starts_at,
        observed_at=now,
        key=f"am:{alert.identity}:{alert.status}:{alert.starts_at.isoformat()}",
        labels=dict(alert.labels),
        summary=summary,
    )


def alerts_to_signals(
    alerts: WebhookPayload | Iterable[WebhookAlert],
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
    now: datetime,
) -> tuple[list[Signal], list[UnresolvedAlert]]:
    """One Signal per alert with a target; the rest come back as UnresolvedAlert."""
    signals: list[Signal] = []
    unresolved: list[UnresolvedAlert] = []
    for alert in alerts.alerts if isinstance(alerts, WebhookPayload) else alerts:
        converted = alert_to_signal(alert, mapping, resolve_pod, now)
        if isinstance(converted, UnresolvedAlert):
            unresolved.append(converted)
        else:
            signals.append(converted)
    return signals, unresolved


class SignalDeduper:
    """Remembers signal keys for ``ttl`` so re-sends and HA duplicates are seen once.

    Bounded: past ``max_entries`` the oldest keys are forgotten first. The
    journal's ``signal_seen`` is the restart-proof check; this one is the
    cheap in-memory front line.
    """

    def __init__(self, max_entries: int = 100_000, ttl: timedelta = timedelta(hours=6)) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._ttl = ttl
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, key: str, now: datetime) -> bool:
        """True the first time ``key`` is seen (or once it has expired)."""
        self._expire(now)
        seen_at = self._seen.get(key)
        if seen_at is not None and now - seen_at < self._ttl:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        """Drop ``key``: it was not accepted after all, so its re-send must not be a repeat."""
        self._seen.pop(key, None)

    def _expire(self, now: datetime) -> None:
        # Insertion order is time order, so expired keys sit at the front.
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._ttl:
                return
            del self._seen[key]
