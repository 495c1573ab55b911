"""Step 2: validate one raw alert on its own; a bad one is a RejectedAlert naming its path."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from rollbackd.sources.alertmanager.envelope import (
    SUPPORTED_VERSION,
    PayloadError,
    parse_body,
    safe_labels,
)
from rollbackd.sources.jsonsafe import has_surrogate, json_path, json_type, safe_text

# Go's zero time: Alertmanager sends it as endsAt for alerts with no end yet.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"
_RFC3339_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}")
# Times outside this range are nonsense for an alert, and near datetime's own
# limits they overflow in ordinary arithmetic (startsAt - change_window).
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# Bounds for a rejected alert's name fields and reason.
_MAX_NAME = 256
_MAX_REASON = 512


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


def _reject(index: int, path: str, reason: str, raw: Any) -> RejectedAlert:
    labels = safe_labels(raw.get("labels")) if isinstance(raw, dict) else {}
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
