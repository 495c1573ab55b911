"""Alertmanager webhook (payload version 4) -> Signals.

Parsing is strict where a mistake would mislead (the version, each alert's
status and startsAt) and tolerant elsewhere: Alertmanager adds fields over
time, so unknown keys are ignored. Every problem becomes a ``PayloadError``
naming the field, which the HTTP layer turns into a 400.

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
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollbackd.model import Signal, SignalSource, SignalStatus, Target

__all__ = [
    "PayloadError",
    "SignalDeduper",
    "TargetMapping",
    "UnresolvedAlert",
    "WebhookAlert",
    "WebhookPayload",
    "alerts_to_signals",
    "parse_payload",
]

SUPPORTED_VERSION = "4"
# Go's zero time: Alertmanager sends it as endsAt for alerts with no end yet.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"


class PayloadError(ValueError):
    """The webhook body is not a usable Alertmanager v4 payload; the message says why."""


def _utc(value: datetime) -> datetime:
    # Alertmanager always sends an offset; a naive time is taken as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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

    @field_validator("ends_at", mode="before")
    @classmethod
    def _zero_time_is_no_end(cls, value: Any) -> Any:
        if value in (None, "") or (isinstance(value, str) and value.startswith(_ZERO_TIME_PREFIX)):
            return None
        return value

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

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


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(body)"
        problems.append(f"{path}: {item['msg']}")
    return "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")


def parse_payload(body: bytes) -> WebhookPayload:
    """Parse and validate a webhook body; raises ``PayloadError`` with the reason."""
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
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if version is None:
        raise PayloadError('version: missing (expected "4")')
    if version != SUPPORTED_VERSION:
        raise PayloadError(f'version: unsupported webhook version {version!r} (expected "4")')
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(_describe(exc)) from None


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


def alerts_to_signals(
    payload: WebhookPayload,
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
    now: datetime,
) -> tuple[list[Signal], list[UnresolvedAlert]]:
    """One Signal per alert with a target; the rest come back as UnresolvedAlert."""
    signals: list[Signal] = []
    unresolved: list[UnresolvedAlert] = []
    for alert in payload.alerts:
        alertname = alert.labels.get("alertname", "")
        target = _resolve(alert, mapping, resolve_pod)
        if isinstance(target, str):
            unresolved.append(UnresolvedAlert(alert.identity, alertname, alert.labels, target))
            continue
        status = SignalStatus.FIRING if alert.status == "firing" else SignalStatus.RESOLVED
        summary = (
            alert.annotations.get("summary") or alert.annotations.get("description") or alertname
        )
        signals.append(
            Signal(
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
        )
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
