"""Pages are never lost: the outbox over real HTTP, through outages, restarts and a SIGKILL."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio

from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.model import Target
from rollbackd.notify import Notification, NotificationKind, Notifier, PagerDutyChannel
from rollbackd.notify.outbox import OutboxStore
from rollbackd.notify.webhook import WebhookChannel
from rollbackd.testing.sink import HttpSink, RecordedRequest

ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
PD_PATH = "/v2/enqueue"
TARGET = Target("shop", "checkout")

Result = tuple[str, str, bool, str]


def trigger(key: str) -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key=key,
        target=TARGET,
        summary=f"Rolling back shop/checkout ({key})",
        details={"rollback_id": key},
        created_at=datetime.now(UTC),
    )


def resolve(key: str) -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key=key,
        target=TARGET,
        summary=f"Rollback of shop/checkout verified healthy ({key})",
        details={"rollback_id": key},
        created_at=datetime.now(UTC),
        resolves=True,
    )


def pagerduty(sink: HttpSink) -> PagerDutyChannel:
    return PagerDutyChannel(ROUTING_KEY, url=f"{sink.url}{PD_PATH}")


def events(requests: list[RecordedRequest], status: int = 202) -> list[tuple[str, str]]:
    """(dedup_key, event_action) of the PagerDuty events the sink answered with ``status``."""
    return [
        (r.json["dedup_key"], r.json["event_action"])
        for r in requests
        if r.path == PD_PATH and r.status == status
    ]


class Results:
    """The on_result callback, recording (dedup_key, channel, ok, detail)."""

    def __init__(self) -> None:
        self.seen: list[Result] = []

    async def __call__(self, n: Notification, channel: str, ok: bool, detail: str) -> None:
        self.seen.append((n.dedup_key, channel, ok, detail))


@pytest_asyncio.fixture
async def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest_asyncio.fixture
async def journal(journal_path: Path) -> AsyncIterator[Journal]:
    async with await Journal.open(journal_path) as j:
        yield j


async def test_a_pager_outage_delays_pages_but_loses_none(
    pager_sink: HttpSink, journal: Journal
) -> None:
    # The 60 s outage during a real rollback is tests/integration/test_pages.py;
    # here a shorter one, with backoff scaled down alike, pins the notifier's rules.
    outage = 12.0
    pager_sink.fail_for(PD_PATH, outage, status=503)
    outage_ends = time.monotonic() + outage
    results = Results()
    notifier = Notifier(
        [pagerduty(pager_sink)],
        journal=journal,
        on_result=results,
        initial_backoff=0.2,
        max_backoff=1.5,
        failover_after=None,
    )
    async with notifier:
        for n in (trigger("rb-1"), trigger("rb-2"), resolve("rb-1"), resolve("rb-2")):
            await notifier.enqueue(n)
        assert await notifier.drain(outage + 20)
    recovered_after = time.monotonic() - outage_ends

    delivered = events(pager_sink.requests)
    # Exactly once per dedup key and action, and each trigger before its resolve.
    assert Counter(delivered) == {
        ("rb-1", "trigger"): 1,
        ("rb-1", "resolve"): 1,
        ("rb-2", "trigger"): 1,
        ("rb-2", "resolve"): 1,
    }
    for key in ("rb-1", "rb-2"):
        assert [a for k, a in delivered if k == key] == ["trigger", "resolve"]
    # Retried for the whole outage, far past the old limit of 5 attempts ...
    rows = {(r.dedup_key, r.resolves): r for r in await OutboxStore(journal).rows()}
    assert all(r.state == "delivered" for r in rows.values())
    assert rows[("rb-1", False)].attempts > 5 and rows[("rb-2", False)].attempts > 5
    # ... and a resolve was not even tried while its trigger was pending.
    failed_resolves = [e for e in events(pager_sink.requests, 503) if e[1] == "resolve"]
    assert failed_resolves == []
    assert sorted(ok for _, _, ok, _ in results.seen) == [True] * 4
    # Delivered within one backoff cap (plus slack) of the service coming back.
    assert recovered_after < 1.5 + 3.0, f"pages delivered {recovered_after:.1f}s after recovery"
    print(f"\npages delivered {recovered_after:.2f}s after a {outage:.0f}s outage ended")


async def test_retry_after_is_honoured_for_the_whole_channel(
    pager_sink: HttpSink, journal: Journal
) -> None:
    pager_sink.fail_next(PD_PATH, 429, headers={"Retry-After": "2"})
    notifier = Notifier(
        [pagerduty(pager_sink)], journal=journal, initial_backoff=0.01, max_backoff=0.05
    )
    async with notifier:
        await notifier.enqueue(trigger("rb-1"))
        limited = await pager_sink.wait_for(lambda r: r.status == 429)
        await notifier.enqueue(trigger("rb-2"))  # another page, same rate-limited service
        assert await notifier.drain(10.0)
    later = [r for r in pager_sink.requests if r is not limited]
    assert events(later) == [("rb-1", "trigger"), ("rb-2", "trigger")]
    for r in later:
        assert r.at - limited.at >= timedelta(seconds=2), "sent before Retry-After elapsed"


async def test_pending_pages_survive_a_restart_and_keep_their_order(
    pager_sink: HttpSink, journal_path: Path
) -> None:
    pager_sink.fail_for(PD_PATH, 3600, status=502)
    async with await Journal.open(journal_path) as first_journal:
        first = Notifier(
            [pagerduty(pager_sink)],
            journal=first_journal,
            initial_backoff=0.01,
            max_backoff=0.05,
        )
        await first.start()
        await first.enqueue(trigger("rb-1"))
        await first.enqueue(resolve("rb-1"))
        await first.enqueue(trigger("rb-2"))
        await pager_sink.wait_for_count(PD_PATH, 4)  # tried and failed a few times
        await first.stop()  # shutdown or lost leadership: nothing is given up
        pending = await OutboxStore(first_journal).pending()
        assert [(r.dedup_key, r.resolves) for r in pending] == [
            ("rb-1", False),
            ("rb-1", True),
            ("rb-2", False),
        ]
        assert pending[0].attempts >= 1 and pending[0].last_error.startswith("pagerduty: HTTP 502")

    pager_sink.clear()  # the outage ends while no rollbackd runs
    # Every row is due again by the restart: the order is the outbox's, not the backoff's.
    due = max(r.next_attempt_at for r in pending) - datetime.now(UTC)
    await asyncio.sleep(max(0.0, due.total_seconds()))
    results = Results()
    async with await Journal.open(journal_path) as second_journal:
        second = Notifier([pagerduty(pager_sink)], journal=second_journal, on_result=results)
        async with second:
            assert await second.drain(10.0)
    assert events(pager_sink.requests) == [
        ("rb-1", "trigger"),
        ("rb-1", "resolve"),
        ("rb-2", "trigger"),
    ]
    assert [(k, ok) for k, _, ok, _ in results.seen] == [("rb-1", True)] * 2 + [("rb-2", True)]


_KILLED_CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from rollbackd.journal import Journal
from rollbackd.model import Target
from rollbackd.notify import Notification, NotificationKind, Notifier, PagerDutyChannel

async def main() -> None:
    journal = await Journal.open(sys.argv[1])
    notifier = Notifier([PagerDutyChannel(sys.argv[3], url=sys.argv[2])], journal=journal)
    await notifier.start()
    await notifier.enqueue(Notification(
        kind=NotificationKind.ROLLBACK_STARTED, severity="info", dedup_key="rb-kill",
        target=Target("shop", "checkout"), summary="Rolling back shop/checkout",
        details={"rollback_id": "rb-kill"}, created_at=datetime.now(UTC),
    ))
    print("ENQUEUED", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_page_enqueued_just_before_sigkill_is_sent_by_the_next_process(
    pager_sink: HttpSink, journal_path: Path
) -> None:
    # The first process's send hangs in the pager; it is killed mid-send.
    pager_sink.hold_next(PD_PATH)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_CHILD,
        str(journal_path),
        f"{pager_sink.url}{PD_PATH}",
        ROUTING_KEY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            while (await child.stdout.readline()).strip() != b"ENQUEUED":
                pass
            await pager_sink.wait_for_count(PD_PATH, 1)
    finally:
        child.kill()  # SIGKILL: no shutdown code runs
        await child.wait()
    pager_sink.release()

    results = Results()
    async with await Journal.open(journal_path) as journal:
        notifier = Notifier([pagerduty(pager_sink)], journal=journal, on_result=results)
        async with notifier:
            assert await notifier.drain(10.0)
    # At least once: the page the killed process was sending goes out again.
    requests = pager_sink.requests_to(PD_PATH)
    assert len(requests) == 2
    assert [(r.json["dedup_key"], r.json["event_action"]) for r in requests] == [
        ("rb-kill", "trigger")
    ] * 2
    assert results.seen == [("rb-kill", "pagerduty", True, "sent")]


async def test_a_page_undelivered_for_max_age_expires_and_is_counted(
    pager_sink: HttpSink, journal: Journal
) -> None:
    pager_sink.fail_for(PD_PATH, 3600, status=503)
    results = Results()
    metrics = Metrics()
    notifier = Notifier(
        [pagerduty(pager_sink)],
        journal=journal,
        on_result=results,
        metrics=metrics,
        max_age=timedelta(seconds=1.5),
        initial_backoff=0.05,
        max_backoff=0.2,
    )
    async with notifier:
        await notifier.enqueue(trigger("rb-1"))
        assert await notifier.drain(10.0)
    [(key, channel, ok, detail)] = results.seen
    assert (key, channel, ok) == ("rb-1", "pagerduty", False)
    assert detail.startswith("expired: undelivered for 1s after ")
    assert "last error: pagerduty: HTTP 503" in detail
    [row] = await OutboxStore(journal).rows()
    assert row.state == "expired" and row.attempts >= 2
    assert metrics.notifications_expired_total.labels(channel="pagerduty")._value.get() == 1


async def test_a_channel_down_longer_than_failover_after_hands_its_page_over_once(
    http_sink_factory: Callable[..., Awaitable[HttpSink]], journal: Journal
) -> None:
    pager = await http_sink_factory()
    hook = await http_sink_factory()
    pager.fail_for(PD_PATH, 3600, status=503)

    def channels() -> list[Any]:
        return [pagerduty(pager), WebhookChannel(f"{hook.url}/hook")]

    def is_copy(r: RecordedRequest) -> bool:
        return bool(r.json["details"].get("failover_from"))

    settings: dict[str, Any] = {
        "failover_after": timedelta(seconds=1),
        "initial_backoff": 0.05,
        "max_backoff": 0.2,
    }
    async with Notifier(channels(), journal=journal, **settings) as notifier:
        enqueued_at = datetime.now(UTC)
        await notifier.enqueue(trigger("rb-1"))
        await hook.wait_for(lambda r: not is_copy(r))  # the webhook's own copy, at once
        copy = await hook.wait_for(is_copy, timeout=10)
        assert copy.at - enqueued_at >= timedelta(seconds=1)
        assert copy.json["summary"] == (
            "[pagerduty undeliverable for 1s] Rolling back shop/checkout (rb-1)"
        )
        assert copy.json["details"] == {"rollback_id": "rb-1", "failover_from": "pagerduty"}
        assert (copy.json["dedup_key"], copy.json["kind"]) == ("rb-1", "rollback_started")
        # Only once, however long the pager stays down ...
        await pager.wait_for_count(PD_PATH, len(pager.requests) + 5)
        assert len(hook.requests) == 2
    # ... and across a restart on the same journal.
    async with Notifier(channels(), journal=journal, **settings):
        await pager.wait_for_count(PD_PATH, len(pager.requests) + 5)
        assert len(hook.requests) == 2
        pager.clear()  # the pager comes back: the original page still goes out
        await pager.wait_for(lambda r: r.status == 202)
    assert events(pager.requests) == [("rb-1", "trigger")]


async def test_enqueueing_the_same_page_again_sends_it_once(
    pager_sink: HttpSink, journal: Journal
) -> None:
    async with Notifier([pagerduty(pager_sink)], journal=journal) as notifier:
        await notifier.enqueue(trigger("rb-1"))
        notifier.submit(trigger("rb-1"))
        await notifier.enqueue(trigger("rb-1"))
        assert await notifier.drain(10.0)
        await notifier.enqueue(trigger("rb-1"))  # after delivery: a resumed rollback
        assert await notifier.drain(10.0)
    assert events(pager_sink.requests) == [("rb-1", "trigger")]
    assert len(pager_sink.requests) == 1
