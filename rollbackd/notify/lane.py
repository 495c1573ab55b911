"""One channel's lane in the Notifier: its worker's state, backoff, and outbox rows."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rollbackd.notify.channel import Channel
from rollbackd.notify.model import DETAIL_ROLLBACK_ID, Notification, notification_to_json
from rollbackd.notify.outbox import NewRow, row_kind


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
class Lane:
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


def pending_of(lane: Lane) -> float:
    return float(lane.pending)


def new_row(n: Notification, channel: str, *, failover_from: str | None = None) -> NewRow:
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
