"""The Notification: one message to the humans, its kinds and details, and its JSON form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rollbackd.jsonable import to_jsonable
from rollbackd.model import StrEnum, Target

Severity = Literal["info", "warning", "critical"]
_SEVERITY_RANK: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

# Keys of ``Notification.details`` that channels know how to present. Any other
# keys are passed through (PagerDuty custom_details, webhook body).
DETAIL_ROLLBACK_ID = "rollback_id"
DETAIL_REASON_CODE = "reason_code"
DETAIL_REASON = "reason"
DETAIL_FROM_REVISION = "from_revision"
DETAIL_TO_REVISION = "to_revision"
DETAIL_FROM_IMAGES = "from_images"
DETAIL_TO_IMAGES = "to_images"
DETAIL_REPORT_URL = "report_url"
DETAIL_PHASE = "phase"
# Set on a failover copy: the channel that could not deliver the original.
DETAIL_FAILOVER_FROM = "failover_from"


class NotificationKind(StrEnum):
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_COMPLETED = "rollback_completed"
    ESCALATION = "escalation"
    DRY_RUN = "dry_run"
    SUPERSEDED = "superseded"  # info: a human changed the target, rollbackd stepped back
    APPROVAL_REQUESTED = "approval_requested"  # approve mode: a human must approve or reject
    REJECTED = "rejected"  # approve mode: a human said no (resolves the request)


@dataclass(frozen=True)
class Notification:
    """One message to the humans; ``dedup_key`` ties a trigger to its resolve."""

    kind: NotificationKind
    severity: Severity
    dedup_key: str  # the rollback id, or an escalation id
    target: Target
    summary: str
    details: Mapping[str, Any]
    created_at: datetime
    resolves: bool = False  # close what was opened under dedup_key

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_RANK:
            raise ValueError(f"severity must be info, warning or critical, not {self.severity!r}")
        if not self.dedup_key:
            raise ValueError("dedup_key must not be empty")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")


def notification_to_json(n: Notification) -> dict[str, Any]:
    """The Notification as a JSON object (the generic webhook body; also for logs)."""
    return {
        "kind": n.kind.value,
        "severity": n.severity,
        "dedup_key": n.dedup_key,
        "target": {"namespace": n.target.namespace, "name": n.target.name},
        "summary": n.summary,
        "details": to_jsonable(n.details),
        "created_at": n.created_at.isoformat(),
        "resolves": n.resolves,
    }


def notification_from_json(body: Mapping[str, Any]) -> Notification:
    """The Notification ``notification_to_json`` wrote (details come back as JSON values)."""
    target = body["target"]
    return Notification(
        kind=NotificationKind(body["kind"]),
        severity=body["severity"],
        dedup_key=body["dedup_key"],
        target=Target(target["namespace"], target["name"]),
        summary=body["summary"],
        details=dict(body.get("details") or {}),
        created_at=datetime.fromisoformat(body["created_at"]),
        resolves=bool(body.get("resolves", False)),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)
