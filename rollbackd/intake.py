"""Accepting signals: webhook bodies and poller results become journaled, pending Signals.

The intake is the only place where a signal is *accepted*: once it returns
without raising, the signal is committed to the journal (the durable queue)
and visible to the dispatcher, so nothing acknowledged is forgotten, even if
the process dies the next instant (it is replayed at start). It refuses
(``AcceptError``, a 503) only before anything is recorded, and a refused
signal is never remembered as seen, so the sender's retry is accepted.

Cheap where Alertmanager is repetitive: a repeat of an alert already
committed is recognised from the raw JSON before any object is built, and
an alert naming no known Deployment is recorded once per fingerprint.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from rollbackd.errors import AcceptError, AcceptResult
from rollbackd.journal import Journal, UnresolvedRecord
from rollbackd.metrics import Metrics
from rollbackd.model import Signal, SignalStatus, Target
from rollbackd.notify.alertmanager import ALERTNAME
from rollbackd.pending import Accepted, PendingSignals
from rollbackd.sources.alertmanager import (
    RejectedAlert,
    TargetMapping,
    UnresolvedAlert,
    WebhookAlert,
    alert_to_signal,
    may_hold_surrogates,
    parse_body,
    raw_alert_key,
    validate_alert,
)

log = structlog.get_logger("rollbackd.intake")

# rollbackd's own escalation alert comes back through Alertmanager when the
# receiver routes everything here; acting on it would be a feedback loop.
OWN_ALERTNAMES = frozenset({ALERTNAME})

# Bodies remembered for the repeat fast path (16-byte digests: about 2 MB).
_MAX_REMEMBERED_BODIES = 20_000


class SeenKeys:
    """Keys already committed, for ``ttl`` seconds, at most ``max_entries`` (oldest out first).

    A front line only: the journal's own key check is what survives restarts.
    """

    def __init__(self, max_entries: int = 200_000, ttl: float = 6 * 3600.0) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        at = self._seen.get(key)
        return at is not None and time.monotonic() - at < self._ttl

    def add(self, key: str) -> None:
        self._seen[key] = time.monotonic()
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)


@dataclass
class _BodySorting:
    """Where the alerts of one webhook body went, before and after the commit."""

    duplicates: int = 0
    rejected: list[RejectedAlert] = field(default_factory=list)
    unresolved: list[tuple[str | None, UnresolvedAlert]] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    signal_keys: list[str | None] = field(default_factory=list)

    def records(self, now: datetime) -> list[UnresolvedRecord]:
        """The journal's rows for the alerts that name no Deployment or are invalid."""
        return [
            UnresolvedRecord(u.fingerprint, u.alertname, u.labels, u.reason, now)
            for _, u in self.unresolved
        ] + [
            UnresolvedRecord(
                r.fingerprint, r.alertname, r.labels, f"invalid: {r.path}: {r.reason}", now
            )
            for r in self.rejected
        ]


class SignalIntake:
    """Validate, dedupe, journal (group commit) and hand signals to the dispatcher."""

    def __init__(
        self,
        *,
        journal: Journal,
        metrics: Metrics,
        mapping: TargetMapping,
        resolve_pod: Callable[[str, str], Target | None],
        clock: Callable[[], datetime],
        target_known: Callable[[Target], bool | None] = lambda target: None,
        pending: PendingSignals | None = None,
        unresolved_ttl: float = 300.0,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._mapping = mapping
        self._resolve_pod = resolve_pod
        self._clock = clock
        self._target_known = target_known
        self.pending = pending if pending is not None else PendingSignals()
        self._committed = SeenKeys()
        # Unmappable alerts are remembered briefly: the Deployment may appear.
        self._unresolved = SeenKeys(max_entries=50_000, ttl=unresolved_ttl)
        # Whole bodies whose every alert is journaled: digest -> (alerts, when).
        self._repeated_bodies: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        self._repeat_ttl = 3600.0

    async def accept_alerts(self, body: bytes) -> AcceptResult:
        """Handle one Alertmanager webhook body (raises PayloadError on a bad envelope)."""
        digest = hashlib.blake2b(body, digest_size=16).digest()
        repeated = self._repeated_bodies.get(digest)
        if repeated is not None and time.monotonic() - repeated[1] < self._repeat_ttl:
            # Alertmanager re-sends whole groups every group_interval: byte for
            # byte a body whose every alert is already journaled.
            return AcceptResult(accepted=0, duplicates=repeated[0], unresolved=0)
        payload = parse_body(body)
        now = self._clock()
        sorting = _BodySorting()
        fresh = self._validate(payload.raw_alerts, may_hold_surrogates(body), sorting)
        self._convert(fresh, now, sorting)
        ids = await self._commit(sorting.signals, sorting.records(now))
        accepted = self._publish(sorting.signals, ids)
        self._remember_outcome(sorting)
        if not sorting.rejected and not sorting.unresolved and payload.raw_alerts:
            self._remember_body(digest, len(payload.raw_alerts))
        return AcceptResult(
            accepted=accepted,
            duplicates=sorting.duplicates + len(sorting.signals) - accepted,
            unresolved=len(sorting.unresolved),
            rejected=[r.as_json() for r in sorting.rejected],
        )

    def _validate(
        self, raw_alerts: Sequence[object], check_surrogates: bool, sorting: _BodySorting
    ) -> list[tuple[str | None, WebhookAlert]]:
        """The alerts not already committed or unresolved, valid; the rest counted or rejected."""
        fresh: list[tuple[str | None, WebhookAlert]] = []
        for index, raw in enumerate(raw_alerts):
            key = raw_alert_key(raw)
            if key is not None and (key in self._committed or key in self._unresolved):
                sorting.duplicates += 1
                continue
            checked = validate_alert(index, raw, check_surrogates=check_surrogates)
            if isinstance(checked, RejectedAlert):
                sorting.rejected.append(checked)
            else:
                fresh.append((key, checked))
        return fresh

    def _convert(
        self, fresh: Sequence[tuple[str | None, WebhookAlert]], now: datetime, sorting: _BodySorting
    ) -> None:
        """Each valid alert becomes a signal, an unresolved alert, or (rollbackd's own) nothing."""
        for key, alert in fresh:
            converted = alert_to_signal(alert, self._mapping, self._resolve_pod, now)
            if isinstance(converted, UnresolvedAlert):
                sorting.unresolved.append((key, converted))
            elif converted.name in OWN_ALERTNAMES:
                sorting.duplicates += 1
            elif self._target_known(converted.target) is False:
                reason = f"Deployment {converted.target} not found in the cluster"
                missing = UnresolvedAlert(alert.identity, converted.name, alert.labels, reason)
                sorting.unresolved.append((key, missing))
            else:
                sorting.signals.append(converted)
                sorting.signal_keys.append(key)

    def _remember_outcome(self, sorting: _BodySorting) -> None:
        """After the commit: keys remembered, unresolved and rejected alerts counted and logged."""
        for key in sorting.signal_keys:
            if key is not None:
                self._committed.add(key)
        for key, missing in sorting.unresolved:
            self._metrics.unresolved_alerts_total.inc()
            log.warning(
                "alert_without_target",
                alertname=missing.alertname,
                fingerprint=missing.fingerprint,
                reason=missing.reason,
            )
            if key is not None:
                self._unresolved.add(key)
        for r in sorting.rejected:
            log.warning("alert_rejected", index=r.index, path=r.path, reason=r.reason)

    def _remember_body(self, digest: bytes, alerts: int) -> None:
        self._repeated_bodies[digest] = (alerts, time.monotonic())
        self._repeated_bodies.move_to_end(digest)
        while len(self._repeated_bodies) > _MAX_REMEMBERED_BODIES:
            self._repeated_bodies.popitem(last=False)

    async def accept(self, signal: Signal) -> bool:
        """Accept one signal (the poller's); False when it repeats one already accepted."""
        return (await self.accept_many([signal]))[0]

    async def accept_many(self, signals: Sequence[Signal]) -> list[bool]:
        """Accept signals in one shared commit; True for each one that is new."""
        ids = await self._commit(signals, [])
        self._publish(signals, ids)
        return [row_id is not None for row_id in ids]

    async def _commit(
        self, signals: Sequence[Signal], records: Sequence[UnresolvedRecord]
    ) -> list[int | None]:
        try:
            return await self._journal.accept(signals, records)
        except Exception as exc:
            # Nothing of this call was committed: refuse, remember nothing.
            raise AcceptError(f"journal unavailable: {type(exc).__name__}: {exc}") from exc

    def _publish(self, signals: Sequence[Signal], ids: Sequence[int | None]) -> int:
        """Count and hand committed signals to the dispatcher; how many were new."""
        fresh = [Accepted(row_id, s) for row_id, s in zip(ids, signals, strict=True) if row_id]
        counts = Counter((item.signal.source, item.signal.status) for item in fresh)
        for (source, status), count in counts.items():
            self._metrics.signals_total.labels(source=str(source), status=str(status)).inc(count)
        for item in fresh:
            signal = item.signal
            if signal.status is SignalStatus.NO_DATA:
                log.warning(
                    "signal_no_data",
                    target=str(signal.target),
                    signal=signal.name,
                    summary=signal.summary,
                )
        self.pending.add(fresh)
        return len(fresh)
