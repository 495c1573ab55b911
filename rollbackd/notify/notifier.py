"""Notifications, and the Notifier that delivers them through a durable outbox.

A rollback must not wait for a pager, and a page that was meant must not be
lost (safety rule 14). ``Notifier.enqueue`` writes one row per channel into
the journal's outbox (``rollbackd.notify.outbox``) and returns once it is
committed; ``submit`` does the same from synchronous code as a tracked task.
One worker per channel sends pending rows in order (per dedup key: triggers
before resolves, then oldest first) and reports every final outcome through
``on_result`` so the caller can journal it and count
``rollbackd_notifications_total{channel,result}``.

A retryable failure (HTTP 408/425/429/5xx, network) keeps the row pending:
it is tried again after an exponential backoff with jitter, never sooner
than the server's Retry-After, until delivered or older than ``max_age``
(then it expires: logged at error, reported, counted). A failure that
retrying cannot fix marks the row failed at once. A channel that has held a
page longer than ``failover_after`` hands a copy to every other channel that
takes it, saying so in the summary. A slow or dead channel delays only its
own rows.

A rollback's start page is checked against the cluster before each send
(``rollback_state``, see ``rollbackd.notify.stale``): one that an earlier term
left unsent, for a rollback another leader has since ended, is withdrawn; so
is an escalation page the channel already took from another leader
(``taken_elsewhere``, see ``rollbackd.notify.escalated``).

Only the leader sends: ``start`` on gaining leadership, ``stop`` on losing
it. ``stop`` cancels sends in flight and leaves their rows pending; whoever
starts a Notifier on the same journal next delivers them. Delivery is
at-least-once: a process killed between a channel's 2xx and the commit of
"delivered" sends that page again (PagerDuty and Alertmanager fold repeats
by dedup key / labels).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from rollbackd.notify.channel import Channel, OnResult, channel_accepts, stop_channel
from rollbackd.notify.delivery import Delivery
from rollbackd.notify.lane import Lane, new_row, pending_of
from rollbackd.notify.model import Notification, notification_to_json, utcnow
from rollbackd.notify.outbox import OutboxStore, row_kind
from rollbackd.supervision import cancel_and_wait

if TYPE_CHECKING:
    from rollbackd.journal import Journal
    from rollbackd.metrics import Metrics

log = structlog.get_logger("rollbackd.notify")


class Notifier(Delivery):
    """Fan-out to channels through the journal's outbox; one worker per channel.

    ``journal=None`` gives a private in-memory outbox (tests, tools): nothing
    in it survives ``stop()``. Timing knobs mirror ``notify`` in the config:
    ``max_age``, ``failover_after`` (None: no failover), ``initial_backoff``
    and ``max_backoff`` (seconds).
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        journal: Journal | None = None,
        on_result: OnResult | None = None,
        metrics: Metrics | None = None,
        max_age: timedelta = timedelta(hours=24),
        failover_after: timedelta | None = timedelta(minutes=5),
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
    ) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        if max_age <= timedelta(0):
            raise ValueError("max_age must be greater than zero")
        if failover_after is not None and failover_after <= timedelta(0):
            raise ValueError("failover_after must be greater than zero (or None)")
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("expected 0 < initial_backoff <= max_backoff")
        self._lanes = [Lane(c) for c in channels]
        self._own_journal: Journal | None = None
        self._store: OutboxStore | None = OutboxStore(journal) if journal is not None else None
        self._on_result = on_result
        self._metrics = metrics
        self._max_age = max_age
        self._failover_after = failover_after
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._clock = clock
        self._rng = rng
        self._changed = asyncio.Condition()
        self._enqueues: set[asyncio.Task[None]] = set()
        self._running = False

    @property
    def channel_names(self) -> list[str]:
        return [lane.name for lane in self._lanes]

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``: this process sends."""
        return self._running

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the channels and start one worker per channel (again after ``stop``)."""
        if self._running:
            raise RuntimeError("Notifier already started")
        store = await self._outbox()
        started: list[Channel] = []
        try:
            for lane in self._lanes:
                start = getattr(lane.channel, "start", None)
                if start is not None:
                    await start()
                started.append(lane.channel)
        except BaseException:
            for channel in reversed(started):
                await stop_channel(channel)
            raise
        self._running = True
        self._export_gauges()
        for lane in self._lanes:
            lane.hold_until = None
            lane.task = asyncio.create_task(self._work(lane), name=f"rollbackd-notify-{lane.name}")
        unknown = sorted(set(await store.channels_with_pending()) - set(self.channel_names))
        if unknown:
            # Rows for a channel no longer configured wait until it is again.
            log.warning("outbox_rows_for_unconfigured_channels", channels=unknown)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Finish pending ``submit`` writes, then stop sending.

        With ``drain_timeout`` > 0, first wait up to that long for due rows to
        go out (a graceful shutdown); on losing leadership pass 0. Rows still
        pending stay in the outbox for the next ``start``.
        """
        await self._flush_enqueues()
        if self._running:
            if drain_timeout > 0:
                await self.drain(drain_timeout)
            await cancel_and_wait(lane.task for lane in self._lanes if lane.task is not None)
            for lane in self._lanes:
                lane.task = None
                lane.sending = False
                # Not sending: not this replica's lag to report.
                lane.pending, lane.oldest = 0, None
            self._running = False
            for lane in self._lanes:
                await stop_channel(lane.channel)
            await self._notify_changed()
        if self._own_journal is not None:
            journal, self._own_journal, self._store = self._own_journal, None, None
            await journal.close()

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- intake --------------------------------------------------------------

    async def enqueue(self, n: Notification, *, not_before: datetime | None = None) -> None:
        """Write ``n`` for every channel that takes it; returns once committed.

        Idempotent: the same (channel, dedup_key, kind, resolves) is stored
        once, so re-sending a resumed rollback's pages is safe. A resolve also
        goes to every channel that has the trigger in its outbox, even when
        the channel itself no longer remembers it (after a restart).
        """
        if self.gate is not None and not self.gate():
            # A replica not sure it leads pages nothing; the leader pages for itself.
            log.warning("notification_fenced", dedup_key=n.dedup_key, kind=str(n.kind))
            return
        store = await self._outbox()
        lanes = await self._routes(store, n)
        rows = [new_row(n, lane.name) for lane in lanes]
        inserted = await store.add(rows, self._clock(), not_before=not_before)
        for lane, new in zip(lanes, inserted, strict=True):
            log.info(
                "notification_enqueued" if new else "notification_already_enqueued",
                channel=lane.name,
                dedup_key=n.dedup_key,
                kind=str(n.kind),
                resolves=n.resolves,
            )
            lane.wake.set()
        if not lanes:
            log.debug("notification_not_routed", dedup_key=n.dedup_key, kind=str(n.kind))

    async def withdraw(self, dedup_keys: Sequence[str], *, reason: str) -> int:
        """Take back pages not yet tried on any channel (grouped into another page)."""
        store = await self._outbox()
        count = await store.withdraw(dedup_keys, at=self._clock(), reason=reason)
        log.info("notifications_withdrawn", count=count, reason=reason)
        return count

    async def revise(self, n: Notification) -> int:
        """Replace the content of ``n``'s pages not yet tried (a grouped page that grew)."""
        store = await self._outbox()
        return await store.revise(n.dedup_key, row_kind(n.kind.value), notification_to_json(n))

    def submit(self, n: Notification) -> None:
        """``enqueue`` from synchronous code: a tracked task that ``stop`` awaits.

        Prefer ``await enqueue(n)``: only then is the page durable when the
        caller goes on.
        """
        try:
            task = asyncio.get_running_loop().create_task(
                self._enqueue_or_report(n), name=f"rollbackd-enqueue-{n.dedup_key}"
            )
        except RuntimeError:
            log.error("notification_lost", dedup_key=n.dedup_key, kind=str(n.kind), error="no loop")
            return
        self._enqueues.add(task)
        task.add_done_callback(self._enqueues.discard)

    # --- observation ---------------------------------------------------------

    async def pending(self) -> int:
        """Rows not yet delivered, failed or expired, over this Notifier's channels."""
        if self._store is None:
            return 0
        return await self._store.count_pending(self.channel_names)

    async def drain(self, timeout: float) -> bool:
        """Wait until every row of these channels due within ``timeout`` is finished.

        False on timeout. A row not due until later (a held escalation, a
        retry backing off past the deadline) cannot go out in time anyway and
        stays for the next start: waiting for it only kept a stopping leader
        at work for the whole timeout.
        """
        deadline = self._clock() + timedelta(seconds=timeout)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._enqueues:
                        await self._flush_enqueues()
                        continue
                    async with self._changed:
                        if not self._enqueues and await self._idle(deadline):
                            return True
                        await self._changed.wait()
        except TimeoutError:
            return False

    # --- internals -----------------------------------------------------------

    async def _enqueue_or_report(self, n: Notification) -> None:
        try:
            await self.enqueue(n)
        except Exception as exc:
            log.exception("notification_lost", dedup_key=n.dedup_key, kind=str(n.kind))
            for lane in self._lanes:
                if channel_accepts(lane.channel, n):
                    await self._report(n, lane, False, f"lost: outbox write failed: {exc}")

    async def _flush_enqueues(self) -> None:
        while self._enqueues:
            # Shielded: a caller's timeout (``drain``) must not cancel the
            # outbox writes themselves, or a submitted page would be lost.
            await asyncio.shield(asyncio.gather(*list(self._enqueues), return_exceptions=True))

    async def _idle(self, deadline: datetime) -> bool:
        if any(lane.sending for lane in self._lanes):
            return False
        if self._store is None:
            return True
        return await self._store.count_pending(self.channel_names, due_before=deadline) == 0

    def _export_gauges(self) -> None:
        """Pending count and delivery lag per channel, read at scrape time."""
        if self._metrics is None:
            return
        m = self._metrics
        for lane in self._lanes:
            m.notifications_expired_total.labels(channel=lane.name)  # exported as 0
            m.notifications_pending.labels(channel=lane.name).set_function(
                functools.partial(pending_of, lane)
            )
            m.notification_delivery_lag_seconds.labels(channel=lane.name).set_function(
                functools.partial(self._lag, lane)
            )

    def _lag(self, lane: Lane) -> float:
        if lane.oldest is None:
            return 0.0
        return max(0.0, (self._clock() - lane.oldest).total_seconds())
