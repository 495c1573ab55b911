"""Each channel sends exactly the body its service expects, and retries only what can succeed."""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.journal import Journal
from rollbackd.model import Target
from rollbackd.notify import (
    Notification,
    NotificationKind,
    Notifier,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from rollbackd.notify.base import Channel
from rollbackd.notify.outbox import OutboxStore
from rollbackd.testing.sink import HttpSink

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TARGET = Target("shop", "checkout")
ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"

Result = tuple[str, str, bool, str]


def started(**details: Any) -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key="rb-1",
        target=TARGET,
        summary="Rolling back shop/checkout from revision 7 to 6",
        details={
            "rollback_id": "rb-1",
            "from_revision": 7,
            "to_revision": 6,
            "from_images": ["registry.local/checkout:1.4.0"],
            "to_images": ["registry.local/checkout:1.3.2"],
            "reason_code": "rollback",
            "reason": "error_ratio 0.31 > 0.05 began 2 min after revision 7 rolled out",
            **details,
        },
        created_at=T0,
    )


def escalation() -> Notification:
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key="rb-1",
        target=TARGET,
        summary="Rollback of shop/checkout failed verification: manual action needed",
        details={"rollback_id": "rb-1", "reason_code": "verification_failed"},
        created_at=T0,
    )


def completed() -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key="rb-1",
        target=TARGET,
        summary="Rollback of shop/checkout verified healthy",
        details={"rollback_id": "rb-1"},
        created_at=T0,
        resolves=True,
    )


async def run_notifier(
    channels: list[Channel],
    notifications: list[Notification],
    **kwargs: Any,
) -> list[Result]:
    """Submit, wait until everything is delivered or finished, return on_result calls."""
    results: list[Result] = []

    async def on_result(n: Notification, channel: str, ok: bool, detail: str) -> None:
        results.append((n.kind.value, channel, ok, detail))

    kwargs.setdefault("initial_backoff", 0.01)
    kwargs.setdefault("max_backoff", 0.05)
    async with Notifier(channels, on_result=on_result, **kwargs) as notifier:
        for n in notifications:
            notifier.submit(n)
        assert await notifier.drain(10.0), "notifier did not drain"
    return results


def pagerduty(sink: HttpSink, **kwargs: Any) -> PagerDutyChannel:
    return PagerDutyChannel(ROUTING_KEY + "\n", url=f"{sink.url}/v2/enqueue", **kwargs)


async def test_pagerduty_start_escalate_resolve_share_the_rollback_dedup_key(
    pager_sink: HttpSink,
) -> None:
    channel = pagerduty(pager_sink, report_url_template="https://rb.example/r/{rollback_id}")
    results = await run_notifier([channel], [started(), escalation(), completed()])

    assert [r[2] for r in results] == [True, True, True]
    trigger, page, resolve = (r.json for r in pager_sink.requests_to("/v2/enqueue"))
    assert trigger == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "rb-1",
        "client": "rollbackd",
        "client_url": "https://rb.example/r/rb-1",
        "links": [{"href": "https://rb.example/r/rb-1", "text": "rollbackd post-incident report"}],
        "payload": {
            "summary": "Rolling back shop/checkout from revision 7 to 6",
            "source": "shop/checkout",
            "severity": "info",
            "timestamp": "2026-03-01T12:00:00.123456+00:00",
            "component": "checkout",
            "group": "shop",
            "class": "rollback_started",
            "custom_details": {
                "target": "shop/checkout",
                "kind": "rollback_started",
                "rollback_id": "rb-1",
                "from_revision": 7,
                "to_revision": 6,
                "from_images": ["registry.local/checkout:1.4.0"],
                "to_images": ["registry.local/checkout:1.3.2"],
                "reason_code": "rollback",
                "reason": "error_ratio 0.31 > 0.05 began 2 min after revision 7 rolled out",
                "report_url": "https://rb.example/r/rb-1",
            },
        },
    }
    assert page["event_action"] == "trigger"
    assert page["dedup_key"] == "rb-1"
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["class"] == "escalation"
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "rb-1"}


async def test_pagerduty_uses_cluster_in_source_and_explicit_report_url(
    pager_sink: HttpSink,
) -> None:
    channel = pagerduty(pager_sink, cluster="prod-eu")
    await run_notifier([channel], [started(report_url="https://x.example/report")])
    [req] = pager_sink.requests
    assert req.json["payload"]["source"] == "prod-eu/shop/checkout"
    assert req.json["links"] == [
        {"href": "https://x.example/report", "text": "rollbackd post-incident report"}
    ]


async def test_pagerduty_does_not_page_for_dry_runs(pager_sink: HttpSink) -> None:
    dry = Notification(
        kind=NotificationKind.DRY_RUN,
        severity="info",
        dedup_key="rb-2",
        target=TARGET,
        summary="would roll back",
        details={},
        created_at=T0,
    )
    results = await run_notifier([pagerduty(pager_sink)], [dry])
    assert results == []
    assert pager_sink.requests == []


def test_pagerduty_rejects_an_empty_routing_key() -> None:
    with pytest.raises(ValueError, match="routing key is empty"):
        PagerDutyChannel(" \n", url="http://127.0.0.1:1/")


async def test_429_then_success_is_retried_and_reported_ok(pager_sink: HttpSink) -> None:
    pager_sink.fail_next("/v2/enqueue", 429, count=2, headers={"Retry-After": "0"})
    results = await run_notifier([pagerduty(pager_sink)], [started()])
    assert [r.status for r in pager_sink.requests] == [429, 429, 202]
    assert results == [("rollback_started", "pagerduty", True, "sent after 3 attempts")]


async def test_5xx_is_retried_until_delivered_with_no_attempt_limit(pager_sink: HttpSink) -> None:
    pager_sink.fail_next("/v2/enqueue", 503, count=10)
    results = await run_notifier([pagerduty(pager_sink)], [escalation()])
    assert [r.status for r in pager_sink.requests] == [503] * 10 + [202]
    assert results == [("escalation", "pagerduty", True, "sent after 11 attempts")]


async def test_400_is_not_retried(pager_sink: HttpSink) -> None:
    pager_sink.fail_next("/v2/enqueue", 400, body={"status": "invalid event"})
    results = await run_notifier([pagerduty(pager_sink)], [started(), escalation()])
    assert [r.status for r in pager_sink.requests] == [400, 202]
    assert results[0][2] is False and "HTTP 400" in results[0][3]
    assert "invalid event" in results[0][3]
    assert results[1][2] is True


async def test_unreachable_server_is_retried_until_the_page_expires() -> None:
    # Bound and never listening, so refused for the whole test: a stopped server's
    # port could be taken meanwhile by another test's server.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        channel = PagerDutyChannel(ROUTING_KEY, url=f"{url}/v2/enqueue")
        [(_, _, ok, detail)] = await run_notifier(
            [channel], [started()], max_age=timedelta(seconds=0.5)
        )
    assert ok is False
    # The age is the page's when it expired: past max_age, by how much depends on the load.
    assert re.match(r"expired: undelivered for \d+s after \d+ attempt\(s\); last error: ", detail)
    assert "ClientConnectorError" in detail  # the last error, for the timeline


async def test_a_stalled_channel_does_not_delay_another(
    http_sink_factory: Callable[..., Awaitable[HttpSink]],
) -> None:
    stalled = await http_sink_factory()
    healthy = await http_sink_factory()
    stalled.hold_next("/", count=100)
    results: list[Result] = []

    async def on_result(n: Notification, channel: str, ok: bool, detail: str) -> None:
        results.append((n.kind.value, channel, ok, detail))

    async with await Journal.open(":memory:") as journal:
        notifier = Notifier(
            [
                WebhookChannel(f"{stalled.url}/hook", name="stalled"),
                WebhookChannel(f"{healthy.url}/hook", name="healthy"),
            ],
            journal=journal,
            on_result=on_result,
        )
        await notifier.start()
        try:
            notifier.submit(started())
            notifier.submit(escalation())
            await healthy.wait_for_count("/hook", 2)
            await stalled.wait_for_count("/hook", 1)
            assert len(stalled.requests) == 1  # still stuck on the first one
            assert not await notifier.drain(0.01)
        finally:
            await notifier.stop(drain_timeout=0.01)
        assert sorted(results) == [
            ("escalation", "healthy", True, "sent"),
            ("rollback_started", "healthy", True, "sent"),
        ]
        # Stopping gives nothing up: the stalled channel's pages wait in the
        # outbox for whoever starts a Notifier on this journal next.
        left = [(r.channel, r.kind, r.state) for r in await OutboxStore(journal).pending()]
        assert left == [
            ("stalled", "rollback_started", "pending"),
            ("stalled", "escalation", "pending"),
        ]


async def test_slack_message_is_short_text_with_blocks(pager_sink: HttpSink) -> None:
    channel = SlackChannel(
        f"{pager_sink.url}/services/T/B/X", report_url_template="https://r/{rollback_id}"
    )
    await run_notifier([channel], [started(), escalation()])
    first, second = (r.json for r in pager_sink.requests)
    assert first["text"] == (
        ":rewind: Rollback started: shop/checkout: Rolling back shop/checkout from revision 7 to 6"
    )
    section = first["blocks"][0]["text"]["text"]
    assert "`shop/checkout`" in section
    assert "_Revision:_ 7 → 6" in section
    assert "<https://r/rb-1|Post-incident report>" in section
    assert "error_ratio 0.31 &gt; 0.05" in section  # escaped for mrkdwn
    assert first["blocks"][1]["type"] == "context"
    assert second["text"].startswith(":rotating_light: Escalation")


async def test_webhook_posts_the_notification_as_json_with_headers(pager_sink: HttpSink) -> None:
    channel = WebhookChannel(f"{pager_sink.url}/rollbackd", headers={"Authorization": "Bearer s3"})
    await run_notifier([channel], [completed()])
    [req] = pager_sink.requests
    assert req.header("authorization") == "Bearer s3"
    assert req.json == {
        "kind": "rollback_completed",
        "severity": "info",
        "dedup_key": "rb-1",
        "target": {"namespace": "shop", "name": "checkout"},
        "summary": "Rollback of shop/checkout verified healthy",
        "details": {"rollback_id": "rb-1"},
        "created_at": "2026-03-01T12:00:00.123456+00:00",
        "resolves": True,
    }
