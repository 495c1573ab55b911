"""Notifications and the fan-out that delivers them without ever blocking a rollback.

A rollback must not wait for a pager. ``Notifier.submit`` only appends to one
bounded in-memory queue per channel and returns; one worker task per channel
sends, retrying retryable failures with exponential backoff and jitter
(tenacity), and reports every outcome through ``on_result`` so the caller can
journal it and count ``rollbackd_notifications_total{channel,result}``. A slow
or dead channel delays only its own queue.

Overflow policy (per channel, ``max_queue`` entries): when a new notification
arrives at a full queue, the least severe queued-or-new notification is
dropped, the oldest first among equals (info before warning). A critical
notification is never dropped: if everything is critical the queue grows past
its bound, because losing an escalation page is worse than using memory.
Dropped notifications are logged and reported with ``ok=False`` and a detail
starting with ``dropped:``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from rollbackd.model import StrEnum, Target

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


class NotificationKind(StrEnum):
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_COMPLETED = "rollback_completed"
    ESCALATION = "escalation"
    DRY_RUN = "dry_run"


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


@dataclass
class _Lane:
    """One channel's queue and worker."""

    channel: Channel
    queue: collections.deque[Notification] = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    current: Notification | None = None  # being sent right now
    task: asyncio.Task[None] | None = None


class Notifier:
    """Fan-out to channels: one bounded queue and one worker per channel."""

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        on_result: OnResult | None = None,
        attempts: int = 5,
        max_backoff: float = 30.0,
        initial_backoff: float = 0.5,
        max_queue: int = 1000,
    ) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._lanes = [_Lane(c) for c in channels]
        self._on_result = on_result
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._initial_backoff = initial_backoff
        self._max_queue = max_queue
        self._idle = asyncio.Condition()
        self._reports: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False

    @property
    def channel_names(self) -> list[str]:
        return [lane.channel.name for lane in self._lanes]

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("Notifier already started")
        self._started = True
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
        for lane in self._lanes:
            lane.task = asyncio.create_task(
                self._work(lane), name=f"rollbackd-notify-{lane.channel.name}"
            )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is queued within ``drain_timeout``, then cancel and close channels.

        Whatever could not be delivered in time is reported as dropped.
        """
        if self._stopped:
            # Calling stop again waits for reports of notifications dropped since.
            await self._flush_reports()
            return
        self._stopped = True
        if self._started:
            await self.drain(drain_timeout)
        for lane in self._lanes:
            if lane.task is not None:
                if lane.current is not None:
                    self._report_later(lane.current, lane, "dropped: notifier stopped mid-send")
                lane.task.cancel()
        for lane in self._lanes:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None
            while lane.queue:
                self._report_later(lane.queue.popleft(), lane, "dropped: notifier stopped")
        await self._flush_reports()
        if self._started:
            for lane in self._lanes:
                await _stop_channel(lane.channel)

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def submit(self, n: Notification) -> None:
        """Queue ``n`` for every channel and return at once (never raises for delivery)."""
        if self._stopped:
            log.warning("notification after stop dropped", dedup_key=n.dedup_key, kind=str(n.kind))
            for lane in self._lanes:
                if channel_accepts(lane.channel, n):
                    self._report_later(n, lane, "dropped: notifier stopped")
            return
        for lane in self._lanes:
            if not channel_accepts(lane.channel, n):
                continue
            lane.queue.append(n)
            if len(lane.queue) > self._max_queue:
                victim = _overflow_victim(lane.queue)
                if victim is not None:
                    lane.queue.remove(victim)
                    self._report_later(victim, lane, "dropped: queue full")
            lane.wakeup.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is empty and no send is in progress; False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._idle:
                await self._idle.wait_for(self._all_idle)
        except TimeoutError:
            return False
        return True

    def pending(self) -> int:
        """Notifications queued or being sent, over all channels."""
        return sum(len(lane.queue) + (1 if lane.current is not None else 0) for lane in self._lanes)

    # --- internals -------------------------------------------------------

    def _all_idle(self) -> bool:
        return self.pending() == 0

    async def _work(self, lane: _Lane) -> None:
        while True:
            # Clear before looking, so a submit() between the look and the wait
            # still wakes us.
            lane.wakeup.clear()
            if not lane.queue:
                async with self._idle:
                    self._idle.notify_all()
                await lane.wakeup.wait()
                continue
            n = lane.queue.popleft()
            lane.current = n
            try:
                ok, detail = await self._deliver(lane.channel, n)
                lane.current = None
                await self._report(n, lane, ok, detail)
            finally:
                lane.current = None

    async def _deliver(self, channel: Channel, n: Notification) -> tuple[bool, str]:
        """Send with retries; returns (ok, detail). Cancellation propagates."""
        attempts_made = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            reraise=True,
            before_sleep=lambda state: _log_retry(channel.name, n, state),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts_made += 1
                    await channel.send(n)
        except ChannelError as exc:
            log.warning(
                "notification failed",
                channel=channel.name,
                dedup_key=n.dedup_key,
                kind=str(n.kind),
                attempts=attempts_made,
                error=str(exc),
            )
            return False, f"{exc} (after {attempts_made} attempt(s))"
        except Exception as exc:  # a channel bug must not kill the worker
            log.exception("notification channel crashed", channel=channel.name)
            return False, f"{type(exc).__name__}: {exc}"
        log.info(
            "notification sent",
            channel=channel.name,
            dedup_key=n.dedup_key,
            kind=str(n.kind),
            resolves=n.resolves,
            attempts=attempts_made,
        )
        return True, "sent" if attempts_made == 1 else f"sent after {attempts_made} attempts"

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, but never shorter than a server's Retry-After."""
        backoff = wait_random_exponential(multiplier=self._initial_backoff, max=self._max_backoff)
        delay = float(backoff(state))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ChannelError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._max_backoff))
        return delay

    async def _report(self, n: Notification, lane: _Lane, ok: bool, detail: str) -> None:
        if self._on_result is None:
            return
        try:
            await self._on_result(n, lane.channel.name, ok, detail)
        except Exception:
            log.exception("on_result callback failed", channel=lane.channel.name)

    async def _flush_reports(self) -> None:
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)

    def _report_later(self, n: Notification, lane: _Lane, detail: str) -> None:
        """Report from synchronous code (submit, overflow): a tracked task, awaited in stop."""
        log.warning(
            "notification dropped",
            channel=lane.channel.name,
            dedup_key=n.dedup_key,
            kind=str(n.kind),
            severity=n.severity,
            detail=detail,
        )
        if self._on_result is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._report(n, lane, False, detail))
        except RuntimeError:  # no loop running: nobody to report to
            return
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)


def _overflow_victim(queue: collections.deque[Notification]) -> Notification | None:
    """The least severe notification, oldest first; None when all are critical."""
    victim: Notification | None = None
    for n in queue:
        if victim is None or _SEVERITY_RANK[n.severity] < _SEVERITY_RANK[victim.severity]:
            victim = n
    if victim is None or victim.severity == "critical":
        return None
    return victim


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ChannelError) and exc.retryable


def _log_retry(channel: str, n: Notification, state: RetryCallState) -> None:
    outcome = state.outcome
    log.info(
        "notification retry",
        channel=channel,
        dedup_key=n.dedup_key,
        attempt=state.attempt_number,
        error=str(outcome.exception()) if outcome is not None else "",
        sleep=round(state.upcoming_sleep, 3),
    )


async def _stop_channel(channel: Channel) -> None:
    stop = getattr(channel, "stop", None)
    if stop is None:
        return
    try:
        await stop()
    except Exception:
        log.exception("channel stop failed", channel=channel.name)
