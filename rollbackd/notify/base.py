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

Only the leader sends: ``start`` on gaining leadership, ``stop`` on losing
it. ``stop`` cancels sends in flight and leaves their rows pending; whoever
starts a Notifier on the same journal next delivers them. Delivery is
at-least-once: a process killed between a channel's 2xx and the commit of
"delivered" sends that page again (PagerDuty and Alertmanager fold repeats
by dedup key / labels).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import structlog

from rollbackd.model import StrEnum, Target
from rollbackd.notify.outbox import (
    PENDING,
    NewRow,
    OutboxRow,
    OutboxStore,
    PendingEntry,
    heads,
    row_kind,
)

if TYPE_CHECKING:  # journal.py imports this module
    from rollbackd.journal import Journal
    from rollbackd.metrics import Metrics

log = structlog.get_logger("rollbackd.notify")

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


class ChannelError(Exception):
    """A channel could not deliver; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait, if any


@runtime_checkable
class Channel(Protocol):
    """Delivers one notification or raises ``ChannelError``.

    A channel may also have ``async start()`` and ``async stop()``; the
    Notifier calls them when present (HTTP channels open and close their
    ``aiohttp.ClientSession`` there).
    """

    name: str

    async def send(self, n: Notification) -> None: ...


def channel_accepts(channel: Channel, n: Notification) -> bool:
    """A channel may declare ``accepts(n)`` to opt out of some notifications.

    Filtering at submit time (instead of a silent no-op in ``send``) keeps
    ``notifications_total{result="ok"}`` honest.
    """
    accepts = getattr(channel, "accepts", None)
    return True if accepts is None else bool(accepts(n))


OnResult = Callable[[Notification, str, bool, str], Awaitable[None]]


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from what rollbackd keeps in details (datetimes, enums, targets)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN is "no data" (and not valid JSON)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Target):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


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


def format_age(age: timedelta) -> str:
    """``42s``, ``5m3s``, ``2h5m``: how long a page has waited, for humans."""
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def backoff_delay(
    attempts: int,
    *,
    initial: float,
    cap: float,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``attempts`` failed attempts.

    Exponential (``initial * 2**(attempts-1)``, at most ``cap``) with "equal
    jitter" (half fixed, half random), so replicas and rows spread out without
    retrying at once; never shorter than the server's Retry-After.
    """
    ceiling = min(cap, initial * 2.0 ** min(max(attempts, 1) - 1, 60))
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class _Lane:
    """One channel and its worker."""

    channel: Channel
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sending: bool = False
    # A Retry-After speaks for the server, not for one row: hold the channel.
    hold_until: datetime | None = None
    # Source rows whose failover copies this process already wrote.
    failed_over: set[int] = field(default_factory=set)
    # For the gauges, refreshed by every worker pass.
    pending: int = 0
    oldest: datetime | None = None

    @property
    def name(self) -> str:
        return self.channel.name


class Notifier:
    """Fan-out to channels through the journal's outbox; one worker per channel.

    ``journal=None`` gives a private in-memory outbox (tests, tools): nothing
    in it survives ``stop()``. Timing knobs mirror ``notify`` in the config:
    ``max_age``, ``failover_after`` (None: no failover), ``initial_backoff``
    and ``max_backoff`` (seconds).
    """

    # Fencing (safety rule 13): when set, pages are accepted and sent only
    # while it returns True; the daemon sets it to the Lease fence.
    gate: Callable[[], bool] | None = None

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
        self._lanes = [_Lane(c) for c in channels]
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
                await _stop_channel(channel)
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
            for lane in self._lanes:
                if lane.task is not None:
                    lane.task.cancel()
            for lane in self._lanes:
                if lane.task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await lane.task
                    lane.task = None
                lane.sending = False
                # Not sending: not this replica's lag to report.
                lane.pending, lane.oldest = 0, None
            self._running = False
            for lane in self._lanes:
                await _stop_channel(lane.channel)
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
        rows = [_new_row(n, lane.name) for lane in lanes]
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
        """Wait until every row of these channels is finished; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self._enqueues:
                        await self._flush_enqueues()
                        continue
                    async with self._changed:
                        if not self._enqueues and await self._idle():
                            return True
                        await self._changed.wait()
        except TimeoutError:
            return False

    # --- internals -----------------------------------------------------------

    async def _outbox(self) -> OutboxStore:
        if self._store is None:
            # Imported here: journal.py imports this module.
            from rollbackd.journal import Journal

            self._own_journal = await Journal.open(":memory:")
            self._store = OutboxStore(self._own_journal)
        return self._store

    async def _routes(self, store: OutboxStore, n: Notification) -> list[_Lane]:
        lanes = []
        for lane in self._lanes:
            if channel_accepts(lane.channel, n) or (
                n.resolves and await store.has_trigger(lane.name, n.dedup_key)
            ):
                lanes.append(lane)
        return lanes

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
            await asyncio.gather(*list(self._enqueues), return_exceptions=True)

    async def _idle(self) -> bool:
        if any(lane.sending for lane in self._lanes):
            return False
        return await self.pending() == 0

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _work(self, lane: _Lane) -> None:
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

    async def _pass(self, lane: _Lane) -> float | None:
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
        for entry in due:
            row = await store.get(entry.id)
            if row is not None and row.state == PENDING:
                await self._send(store, lane, row)
            if lane.hold_until is not None and lane.hold_until > self._clock():
                break  # the service asked us to wait: not another request now
        if due:
            return 0
        wake_at = [max(e.next_attempt_at, hold or e.next_attempt_at) for e in first]
        wake_at.append(min(e.created_at for e in entries) + self._max_age)
        if self._failover_after is not None:
            wake_at.extend(
                e.created_at + self._failover_after for e in entries if self._may_fail_over(lane, e)
            )
        return max(0.001, (min(wake_at) - now).total_seconds())

    async def _send(self, store: OutboxStore, lane: _Lane, row: OutboxRow) -> None:
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
        lane.sending = True
        try:
            await lane.channel.send(n)
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
        finally:
            lane.sending = False
        # The page is out: record it even if we are being cancelled right now.
        await asyncio.shield(store.delivered(row.id, attempts=attempt, at=self._clock()))
        log.info("notification_sent", **fields)
        await self._report(
            n, lane, True, "sent" if attempt == 1 else f"sent after {attempt} attempts"
        )

    async def _expire(self, store: OutboxStore, lane: _Lane, now: datetime) -> None:
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

    def _may_fail_over(self, lane: _Lane, entry: PendingEntry) -> bool:
        # A copy is not copied again: two channels down would ping-pong.
        return (
            len(self._lanes) > 1 and not entry.is_failover_copy and entry.id not in lane.failed_over
        )

    async def _fail_over(
        self, store: OutboxStore, lane: _Lane, entries: Sequence[PendingEntry], now: datetime
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
            targets: list[_Lane] = []
            for other in await self._routes(store, copy):
                if other is lane:
                    continue
                # A late trigger after a delivered resolve would reopen the incident.
                if not copy.resolves and await store.has_delivered_resolve(other.name, n.dedup_key):
                    continue
                targets.append(other)
            rows = [_new_row(copy, other.name, failover_from=lane.name) for other in targets]
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

    async def _report(self, n: Notification, lane: _Lane, ok: bool, detail: str) -> None:
        if self._on_result is None:
            return
        try:
            await self._on_result(n, lane.name, ok, detail)
        except Exception:
            log.exception("on_result_failed", channel=lane.name)

    def _export_gauges(self) -> None:
        """Pending count and delivery lag per channel, read at scrape time."""
        if self._metrics is None:
            return
        m = self._metrics
        for lane in self._lanes:
            m.notifications_expired_total.labels(channel=lane.name)  # exported as 0
            m.notifications_pending.labels(channel=lane.name).set_function(
                functools.partial(_pending_of, lane)
            )
            m.notification_delivery_lag_seconds.labels(channel=lane.name).set_function(
                functools.partial(self._lag, lane)
            )

    def _lag(self, lane: _Lane) -> float:
        if lane.oldest is None:
            return 0.0
        return max(0.0, (self._clock() - lane.oldest).total_seconds())


def _pending_of(lane: _Lane) -> float:
    return float(lane.pending)


def _new_row(n: Notification, channel: str, *, failover_from: str | None = None) -> NewRow:
    rollback_id = n.details.get(DETAIL_ROLLBACK_ID)
    return NewRow(
        channel=channel,
        dedup_key=n.dedup_key,
        kind=row_kind(n.kind.value, failover_from),
        resolves=n.resolves,
        severity=n.severity,
        rollback_id=str(rollback_id) if rollback_id else None,
        body=notification_to_json(n),
    )


async def _stop_channel(channel: Channel) -> None:
    stop = getattr(channel, "stop", None)
    if stop is None:
        return
    try:
        await stop()
    except Exception:
        log.exception("channel_stop_failed", channel=channel.name)
