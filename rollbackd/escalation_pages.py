"""What an escalation says, pure: its page, its grouped page, its journal record.

Kept apart from ``escalation.py`` (which decides which page goes out) so
the wording has one home.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rollbackd.model import Decision, Phase, RecordKind, Rollback, Signal, Target
from rollbackd.notify.model import Notification, NotificationKind
from rollbackd.reasons import ReasonCode

__all__ = [
    "ESCALATION_HEADLINES",
    "GROUP_KEY_PREFIX",
    "GROUP_NAME",
    "KIND_ADOPTED",
    "escalation_page",
    "escalation_record",
    "escalation_summary",
    "group_page",
]

GROUP_NAME = "*"  # the journal's name for a namespace-wide record
GROUP_KEY_PREFIX = "esc-group-"  # a grouped page's dedup key starts so
# The journal's event for a page another leader delivered (rollbackd.io/escalated)
KIND_ADOPTED = "escalation_adopted"

# The first words of an escalation page, by reason: what the on-call must know first.
ESCALATION_HEADLINES: dict[str, str] = {
    ReasonCode.NO_RECENT_ROLLOUT: "not caused by a recent rollout",
    ReasonCode.NO_PREVIOUS_REVISION: "manual rollback needed",
    ReasonCode.NO_STABLE_PREVIOUS_REVISION: "manual rollback needed",
    ReasonCode.RESTORED_REVISION_BREACHING: "the restored revision breaches too",
    ReasonCode.GUARD_DISALLOWED_FIELDS: "manual rollback needed: the change is not only image/config",
    ReasonCode.GUARD_MUTABLE_IMAGE: "manual rollback needed: the previous image reference is mutable",
    ReasonCode.PAUSED: "rollout paused by a human",
}


def escalation_summary(decision: Decision) -> str:
    headline = ESCALATION_HEADLINES.get(decision.reason_code, "needs a human")
    return f"{decision.target}: {headline}. {decision.reason}"


def escalation_record(
    record_id: str, target: Target, reason_code: str, reason: str, now: datetime
) -> Rollback:
    """The journal's record of a page (the API and `rollbackd history` list it)."""
    return Rollback(
        id=record_id,
        target=target,
        phase=Phase.ESCALATED,
        started_at=now,
        updated_at=now,
        reason_code=reason_code,
        reason=reason,
        finished_at=now,
        kind=RecordKind.ESCALATION,
    )


def group_page(
    namespace: str, dedup_key: str, reason_code: str, members: Iterable[Target], now: datetime
) -> Notification:
    """One page for the not-a-deploy-problem escalations of a namespace."""
    names = sorted(t.name for t in members)
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key=dedup_key,
        target=Target(namespace, GROUP_NAME),
        summary=(
            f"{len(names)} Deployments in namespace {namespace} breaching; none recently "
            "rolled out: not a deploy problem"
        ),
        details={
            "reason_code": reason_code,
            "namespace": namespace,
            "deployments": names,
            "hint": "many Deployments breach at once and none was recently rolled out: "
            "look at what they share (database, network, nodes)",
        },
        created_at=now,
    )


def escalation_page(
    signal: Signal, decision: Decision, dedup_key: str, now: datetime
) -> Notification:
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key=dedup_key,
        target=decision.target,
        summary=escalation_summary(decision),
        details={
            "reason_code": decision.reason_code,
            "reason": decision.reason,
            "signal": signal.name,
            "source": str(signal.source),
            "value": signal.value,
            "threshold": signal.threshold,
            "anomaly_started_at": signal.started_at.isoformat(),
        },
        created_at=now,
    )
