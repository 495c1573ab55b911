"""A human's rollback request: the same decision rules and executor as any signal.

Without ``force`` the request is decided like an alert. In approve mode the
requester is the approver: a manual rollback does not wait for another. ``force`` lifts the
change window and the cooldown only (they protect against automatic
flapping, not against a human who asked); the guards always apply.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from rollbackd.config import Settings
from rollbackd.dispatch import Dispatcher
from rollbackd.journal import Journal
from rollbackd.model import Decision, Policy, Signal, SignalSource, SignalStatus, Target

__all__ = ["RollbackRefused", "manual_rollback", "request_rollback"]


class RollbackRefused(ValueError):
    """A manual rollback that the safety rules do not allow."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"{decision.reason_code}: {decision.reason}")
        self.decision = decision


async def request_rollback(
    dispatcher: Dispatcher,
    journal: Journal,
    target: Target,
    *,
    now: datetime,
    dry_run: bool,
    reason: str = "",
    force: bool = False,
) -> str:
    """Record the request as a signal, decide it under the target's lock, return the id."""
    signal = Signal(
        target=target,
        source=SignalSource.MANUAL,
        name="manual",
        status=SignalStatus.FIRING,
        started_at=now,
        observed_at=now,
        key=f"manual:{target}:{now.isoformat()}",
        summary=(reason or "manual rollback request") + (" (forced)" if force else ""),
    )
    await journal.record_signal(signal, accepted=True)

    def as_requested(policy: Policy) -> Policy:
        # The requester, with the operator's credential, is the approver: no
        # second approval in approve mode (dry-run still wins).
        policy = replace(policy, dry_run=policy.dry_run or dry_run, approve=False)
        if not force:
            return policy
        return replace(policy, change_window=timedelta(days=3650), cooldown=timedelta(0))

    decision = await dispatcher.handle(signal, adjust_policy=as_requested, page_escalations=False)
    if decision.rollback_id is None:
        raise RollbackRefused(decision)
    return decision.rollback_id


async def manual_rollback(
    settings: Settings,
    target: Target,
    *,
    dry_run: bool = False,
    reason: str = "",
    force: bool = False,
) -> str:
    """`rollbackd rollback NS/NAME`: one rollback through the same executor, then exit."""
    from rollbackd.daemon import Daemon  # the daemon imports this module
    from rollbackd.logs import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    daemon = Daemon(settings, one_shot=True)
    await daemon.start()
    try:
        rollback_id = await daemon.request_rollback(target, dry_run, reason=reason, force=force)
        await daemon.dispatcher.wait(target)
        return rollback_id
    finally:
        await daemon.stop()
