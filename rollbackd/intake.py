"""Accepting signals: webhook bodies and poller results become queued Signals.

The intake is the only place where a signal is *accepted*: once it returns
without raising, the signal is in the journal and on the queue, so nothing
accepted is forgotten. It does no deciding; the dispatcher does that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.model import Signal, SignalStatus, Target
from rollbackd.server import AcceptError, AcceptResult
from rollbackd.sources.alertmanager import (
    SignalDeduper,
    TargetMapping,
    alerts_to_signals,
    parse_payload,
)

log = structlog.get_logger("rollbackd.intake")

# rollbackd's own escalation alert comes back through Alertmanager when the
# receiver routes everything here; acting on it would be a feedback loop.
OWN_ALERTNAMES = frozenset({"RollbackdEscalation"})


class SignalIntake:
    """Journal, dedupe and enqueue signals for the dispatcher."""

    def __init__(
        self,
        *,
        journal: Journal,
        metrics: Metrics,
        mapping: TargetMapping,
        resolve_pod: Callable[[str, str], Target | None],
        clock: Callable[[], datetime],
        queue_size: int = 10_000,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._mapping = mapping
        self._resolve_pod = resolve_pod
        self._clock = clock
        self._deduper = SignalDeduper()
        self.queue: asyncio.Queue[Signal] = asyncio.Queue(maxsize=queue_size)

    async def accept_alerts(self, body: bytes) -> AcceptResult:
        """Handle one Alertmanager webhook body (raises PayloadError on bad input)."""
        payload = parse_payload(body)
        now = self._clock()
        signals, unresolved = alerts_to_signals(payload, self._mapping, self._resolve_pod, now)
        for alert in unresolved:
            self._metrics.unresolved_alerts_total.inc()
            log.warning(
                "alert_without_target",
                alertname=alert.alertname,
                fingerprint=alert.fingerprint,
                reason=alert.reason,
            )
            try:
                await self._journal.record_unresolved_alert(
                    alert.fingerprint, alert.alertname, alert.labels, alert.reason, now
                )
            except Exception as exc:
                raise AcceptError(f"journal unavailable: {exc}") from exc
        accepted = duplicates = 0
        for signal in signals:
            if signal.name in OWN_ALERTNAMES:
                duplicates += 1
                continue
            if await self.accept(signal):
                accepted += 1
            else:
                duplicates += 1
        return AcceptResult(accepted=accepted, duplicates=duplicates, unresolved=len(unresolved))

    async def accept(self, signal: Signal) -> bool:
        """Accept one signal; False when it is a repeat of one already accepted."""
        now = self._clock()
        if signal.key and not self._deduper.first_time(signal.key, now):
            return False
        try:
            if not await self._record(signal):
                return False
        except AcceptError:
            # Not accepted, so the sender's retry must not look like a repeat.
            if signal.key:
                self._deduper.forget(signal.key)
            raise
        self._metrics.signals_total.labels(
            source=str(signal.source), status=str(signal.status)
        ).inc()
        if signal.status is SignalStatus.NO_DATA:
            log.warning(
                "signal_no_data",
                target=str(signal.target),
                signal=signal.name,
                summary=signal.summary,
            )
        self.queue.put_nowait(signal)
        return True

    async def _record(self, signal: Signal) -> bool:
        """Journal ``signal``; False when the journal already holds it (a restart's repeat)."""
        if self.queue.full():
            raise AcceptError("signal queue is full")
        try:
            if signal.key and await self._journal.signal_seen(signal.key):
                return False
            await self._journal.record_signal(signal, accepted=True)
        except Exception as exc:
            raise AcceptError(f"journal unavailable: {exc}") from exc
        return True
