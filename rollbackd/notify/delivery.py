"""The Notifier's workers: send due rows, retry, expire, fail over, withdraw stale triggers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from rollbackd.durations import format_age
from rollbackd.errors import FencedError
from rollbackd.journal import Journal
from rollbackd.notify.channel import ChannelError, OnResult, channel_accepts
from rollbackd.notify.lane import Lane, backoff_delay, new_row
from rollbackd.notify.model import DETAIL_FAILOVER_FROM, Notification, notification_from_json
from rollbackd.notify.outbox import PENDING, OutboxRow, OutboxStore, PendingEntry, heads
from rollbackd.notify.stale import SEND, RollbackStateOf, Verdict, judge_trigger, tied_to_rollback

if TYPE_CHECKING:
    from rollbackd.metrics import Metrics

log = structlog.get_logger("rollbackd.notify")


class Delivery:
    """Sending half of the Notifier; ``Notifier`` sets these attributes in ``__init__``."""

    # Fencing (safety rule 13): when set, pages are accepted and sent only
    # while it returns True; the daemon sets it to the Lease fence.
    gate: Callable[[], bool] | None = None
    # When set, a rollback's start page is checked against the Deployment's
    # recorded rollback before it goes out (see ``rollbackd.notify.stale``);
    # ``stages.build_pipeline`` sets it to a watch-cache read.
    rollback_state: RollbackStateOf | None = None
    # When set, the channels a page is for (its Deployment's route and the
    # page's levels, ``rollbackd.notify.routing``); None: every channel.
    # ``stages.build_pipeline`` sets it.
    route: Callable[[Notification], Collection[str]] | None = None
    # When set, an escalation page the Deployment's record says this channel
    # already took from another leader (``rollbackd.notify.escalated``) is
    # withdrawn: re-sent after a human resolved it, it would open a new incident.
    taken_elsewhere: Callable[[Notification, str], bool] | None = None
    # When set, awaited after a channel took a page (an escalation is marked on
    # its Deployment, ``rollbackd.notify.escalated``); must not raise.
    on_delivered: Callable[[Notification, str], Awaitable[None]] | None = None
    _lanes: list[Lane]
    _own_journal: Journal | None
    _store: OutboxStore | None
    _on_result: OnResult | None
    _metrics: Metrics | None
    _max_age: timedelta
    _failover_after: timedelta | None
    _initial_backoff: float
    _max_backoff: float
    _clock: Callable[[], datetime]
    _rng: Callable[[], float]
    _changed: asyncio.Condition

    async def _outbox(self) -> OutboxStore:
        if self._store is None:
            self._own_journal = await Journal.open(":memory:")
            self._store = OutboxStore(self._own_journal)
        return self._store

    async def _routes(self, store: OutboxStore, n: Notification) -> list[Lane]:
        audience = self._audience(n)
        lanes = []
        for lane in self._lanes:
            meant = audience is None or lane.name in audience
            if (meant and channel_accepts(lane.channel, n)) or (
                # A resolve closes what its trigger opened, wherever that went.
                n.resolves and await store.has_trigger(lane.name, n.dedup_key)
            ):
                lanes.append(lane)
        return lanes

    def _audience(self, n: Notification) -> Collection[str] | None:
        if self.route is None:
            return None
        try:
            return self.route(n)
        except Exception:
            # A routing bug must not silence a page: every channel hears it.
            log.exception("notify_route_failed", dedup_key=n.dedup_key, kind=str(n.kind))
            return None

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _work(self, lane: Lane) -> None:
        """One channel's worker: a pass, then sleep until due or woken; never dies of a bug."""
        failures = 0
        while True:
            # Clear before looking, so an enqueue during the pass still wakes us.
            lane.wake.clear()
            try:
                wait = await self._pass(lane)
                failures = 0
            except Exception:
                wait = min(30.0, 2.0**failures)
                failures += 1
                log.exception("outbox_worker_failed", channel=lane.name, retry_in=wait)
            await self._notify_changed()
            if wait == 0:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await lane.wake.wait()

    async def _pass(self, lane: Lane) -> float | None:
        """Expire, fail over, send the due rows; returns seconds until the next due event.

        0: go again now; None: nothing pending, sleep until woken.
        """
        store = await self._outbox()
        now = self._clock()
        entries = await store.entries(lane.name)
        if entries and min(e.created_at for e in entries) < now - self._max_age:
            await self._expire(store, lane, now)
            entries = await store.entries(lane.name)
        lane.pending = len(entries)
        lane.oldest = min((e.created_at for e in entries), default=None)
        if not entries:
            return None
        if self._failover_after is not None:
            await self._fail_over(store, lane, entries, now)
        hold = lane.hold_until if lane.hold_until is not None and lane.hold_until > now else None
        first = heads(entries)
        due = [e for e in first if e.next_attempt_at <= now] if hold is None else []
        if due:
            # One row a pass, then look again: delivering a trigger makes its
            # resolve a head, and that resolve is older than later triggers.
            await self._deliver(store, lane, due[0], entries)
            return 0
        return self._until_next_event(lane, entries, first, hold, now)

    async def _deliver(
        self, store: OutboxStore, lane: Lane, head: PendingEntry, entries: Sequence[PendingEntry]
    ) -> None:
        """Send the row of ``head`` unless it is gone, taken, or withdrawn as stale."""
        row = await store.get(head.id)
        if row is not None and row.state == PENDING:
            if not await self._withdrawn_as_stale(store, lane, row, entries):
                await self._send(store, lane, row)

    def _until_next_event(
        self,
        lane: Lane,
        entries: Sequence[PendingEntry],
        first: Sequence[PendingEntry],
        hold: datetime | None,
        now: datetime,
    ) -> float:
        """Seconds until a head is due, a row expires, or a row may fail over."""
        wake_at = [max(e.next_attempt_at, hold or e.next_attempt_at) for e in first]
        wake_at.append(min(e.created_at for e in entries) + self._max_age)
        if self._failover_after is not None:
            wake_at.extend(
                e.created_at + self._failover_after for e in entries if self._may_fail_over(lane, e)
            )
        return max(0.001, (min(wake_at) - now).total_seconds())

    async def _withdrawn_as_stale(
        self, store: OutboxStore, lane: Lane, row: OutboxRow, entries: Sequence[PendingEntry]
    ) -> bool:
        """Withdraw ``row`` if another leader made it pointless (see ``_judge``); True if so."""
        if row.resolves or (self.rollback_state is None and self.taken_elsewhere is None):
            return False
        n = notification_from_json(row.body)
        verdict = self._judge(n, lane, entries)
        if verdict.send:
            return False
        # Shielded: a lost leadership cancels this worker, and a row withdrawn
        # in the journal must still be logged, counted and put on the timeline.
        return await asyncio.shield(self._withdraw(store, lane, row, n, verdict.reason))

    def _judge(self, n: Notification, lane: Lane, entries: Sequence[PendingEntry]) -> Verdict:
        """A start page whose rollback ended elsewhere, or a page this channel already took."""
        try:
            if self.taken_elsewhere is not None and self.taken_elsewhere(n, lane.name):
                return Verdict.withdraw(
                    f"delivered: {lane.name} already took {n.dedup_key} from another leader"
                    " (rollbackd.io/escalated)"
                )
            if self.rollback_state is None or not tied_to_rollback(n):
                return SEND
            state = self.rollback_state(n.target)
        except Exception:
            # Cannot tell: a late page beats a lost page.
            log.exception("rollback_state_read_failed", channel=lane.name, dedup_key=n.dedup_key)
            return SEND
        return judge_trigger(n, state, entries)

    async def _withdraw(
        self, store: OutboxStore, lane: Lane, row: OutboxRow, n: Notification, reason: str
    ) -> bool:
        now = self._clock()
        if not await store.withdraw_row(row.id, at=now, reason=reason):
            return False
        log.warning(
            "stale_trigger_withdrawn",
            channel=lane.name,
            dedup_key=n.dedup_key,
            kind=str(n.kind),
            target=str(n.target),
            attempts=row.attempts,
            reason=reason,
        )
        if self._metrics is not None:
            self._metrics.notifications_total.labels(channel=lane.name, result="withdrawn").inc()
        await store.note_withdrawn(n, lane.name, reason, now)
        return True

    async def _send(self, store: OutboxStore, lane: Lane, row: OutboxRow) -> None:
        n = notification_from_json(row.body)
        attempt = row.attempts + 1
        fields = {
            "channel": lane.name,
            "dedup_key": n.dedup_key,
            "kind": str(n.kind),
            "resolves": n.resolves,
            "attempt": attempt,
        }
        if self.gate is not None and not self.gate():
            # Fenced (e.g. woken from a freeze past the Lease): the row stays pending.
            lane.hold_until = self._clock() + timedelta(seconds=1)
            log.warning("notification_send_fenced", **fields)
            return
        # Sending until the outcome is recorded and reported: a drain that saw the
        # row delivered but not yet reported would let a stop cut the report off.
        lane.sending = True
        try:
            await self._attempt(store, lane, row, n, attempt, fields)
        finally:
            lane.sending = False

    async def _attempt(
        self,
        store: OutboxStore,
        lane: Lane,
        row: OutboxRow,
        n: Notification,
        attempt: int,
        fields: dict[str, Any],
    ) -> None:
        """One send of ``row``, its outcome written to the outbox, then reported."""
        try:
            await lane.channel.send(n)
        except FencedError:
            # Checked again as the request left, after a freeze past the Lease:
            # nothing was sent, and the row stays pending, as at the gate.
            lane.hold_until = self._clock() + timedelta(seconds=1)
            log.warning("notification_send_fenced", **fields, stage="as the request left")
            return
        except ChannelError as exc:
            now = self._clock()
            if exc.retryable:
                delay = backoff_delay(
                    attempt,
                    initial=self._initial_backoff,
                    cap=self._max_backoff,
                    retry_after=exc.retry_after,
                    rng=self._rng,
                )
                if exc.retry_after is not None:
                    lane.hold_until = now + timedelta(seconds=exc.retry_after)
                await asyncio.shield(
                    store.retry_later(
                        row.id,
                        attempts=attempt,
                        next_attempt_at=now + timedelta(seconds=delay),
                        error=str(exc),
                    )
                )
                log.warning(
                    "notification_retry", **fields, error=str(exc), retry_in=round(delay, 3)
                )
                return
            await asyncio.shield(store.failed(row.id, attempts=attempt, at=now, error=str(exc)))
            log.error("notification_failed", **fields, error=str(exc))
            await self._report(n, lane, False, f"{exc} (after {attempt} attempt(s))")
            return
        except Exception as exc:  # a channel bug must not kill the worker
            detail = f"{type(exc).__name__}: {exc}"
            log.exception("notification_channel_crashed", **fields)
            await asyncio.shield(
                store.failed(row.id, attempts=attempt, at=self._clock(), error=detail)
            )
            await self._report(n, lane, False, detail)
            return
        # The page is out: record it even if we are being cancelled right now.
        await asyncio.shield(store.delivered(row.id, attempts=attempt, at=self._clock()))
        log.info("notification_sent", **fields)
        await self._report(
            n, lane, True, "sent" if attempt == 1 else f"sent after {attempt} attempts"
        )

    async def _expire(self, store: OutboxStore, lane: Lane, now: datetime) -> None:
        for row in await store.expire(lane.name, created_before=now - self._max_age, at=now):
            n = notification_from_json(row.body)
            age = format_age(now - row.created_at)
            log.error(
                "notification_expired",
                channel=lane.name,
                dedup_key=n.dedup_key,
                kind=str(n.kind),
                resolves=n.resolves,
                age=age,
                attempts=row.attempts,
                last_error=row.last_error,
            )
            if self._metrics is not None:
                self._metrics.notifications_expired_total.labels(channel=lane.name).inc()
            detail = f"expired: undelivered for {age} after {row.attempts} attempt(s)"
            if row.last_error:
                detail += f"; last error: {row.last_error}"
            await self._report(n, lane, False, detail)

    def _may_fail_over(self, lane: Lane, entry: PendingEntry) -> bool:
        # A copy is not copied again: two channels down would ping-pong.
        return (
            len(self._lanes) > 1 and not entry.is_failover_copy and entry.id not in lane.failed_over
        )

    async def _fail_over(
        self, store: OutboxStore, lane: Lane, entries: Sequence[PendingEntry], now: datetime
    ) -> None:
        """Hand rows pending longer than ``failover_after`` to the other channels, once."""
        assert self._failover_after is not None
        for entry in entries:
            if now - entry.created_at < self._failover_after or not self._may_fail_over(
                lane, entry
            ):
                continue
            row = await store.get(entry.id)
            if row is None:
                continue
            age = format_age(now - row.created_at)
            n = notification_from_json(row.body)
            copy = dataclasses.replace(
                n,
                summary=f"[{lane.name} undeliverable for {age}] {n.summary}",
                details={**n.details, DETAIL_FAILOVER_FROM: lane.name},
            )
            targets: list[Lane] = []
            for other in await self._routes(store, copy):
                if other is lane:
                    continue
                # A late trigger after a delivered resolve would reopen the incident.
                if not copy.resolves and await store.has_delivered_resolve(other.name, n.dedup_key):
                    continue
                targets.append(other)
            rows = [new_row(copy, other.name, failover_from=lane.name) for other in targets]
            inserted = await store.add(rows, now)
            lane.failed_over.add(row.id)
            for other, new in zip(targets, inserted, strict=True):
                if not new:
                    continue
                log.warning(
                    "notification_failover",
                    channel=lane.name,
                    to_channel=other.name,
                    dedup_key=n.dedup_key,
                    kind=str(n.kind),
                    resolves=n.resolves,
                    age=age,
                    last_error=row.last_error,
                )
                other.wake.set()

    async def _report(self, n: Notification, lane: Lane, ok: bool, detail: str) -> None:
        if ok and self.on_delivered is not None:
            try:
                await self.on_delivered(n, lane.name)
            except Exception:
                log.exception("on_delivered_failed", channel=lane.name)
        if self._on_result is None:
            return
        try:
            await self._on_result(n, lane.name, ok, detail)
        except Exception:
            log.exception("on_result_failed", channel=lane.name)
