"""Escalations pushed into a real Alertmanager fire as RollbackdEscalation and resolve cleanly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from rollbackd.model import Target
from rollbackd.notify import AlertmanagerPushChannel, Notification, NotificationKind, Notifier
from rollbackd.testing.promstack import AlertmanagerFactory, poll_until
from rollbackd.testing.sink import HttpSink, RecordedRequest

APP = Target("shop", "checkout")


def escalation(created_at: datetime, key: str = "rb-9") -> Notification:
    return Notification(
        kind=NotificationKind.ESCALATION,
        severity="critical",
        dedup_key=key,
        target=APP,
        summary="rollbackd could not roll back shop/checkout: verification failed",
        details={
            "rollback_id": key,
            "reason": "interval 2: error_ratio 0.2 > 0.05",
            "from_revision": 7,
            "to_revision": 6,
        },
        created_at=created_at,
    )


def resolution(created_at: datetime, key: str = "rb-9") -> Notification:
    return Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key=key,
        target=APP,
        summary="resolved",
        details={"rollback_id": key},
        created_at=created_at,
        resolves=True,
    )


def assert_postable_alerts(body: Any) -> None:
    """The shape Alertmanager's v2 API requires of POST /api/v2/alerts (postableAlerts)."""
    assert isinstance(body, list) and body
    for alert in body:
        assert set(alert) <= {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
        assert isinstance(alert["labels"], dict) and alert["labels"]
        for mapping in (alert["labels"], alert.get("annotations", {})):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        for field in ("startsAt", "endsAt"):
            if field in alert:
                assert datetime.fromisoformat(alert[field]).tzinfo is not None


async def test_push_body_matches_the_v2_api(pager_sink: HttpSink) -> None:
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    channel = AlertmanagerPushChannel(
        pager_sink.url,
        extra_labels={"cluster": "prod-eu"},
        report_url_template="https://r/{rollback_id}",
    )
    async with Notifier([channel]) as notifier:
        notifier.submit(escalation(t0))
        notifier.submit(resolution(t0 + timedelta(minutes=5)))
        assert await notifier.drain(10.0)
    fire, resolve = (r.json for r in pager_sink.requests_to("/api/v2/alerts"))
    assert_postable_alerts(fire)
    assert_postable_alerts(resolve)
    assert fire == [
        {
            "labels": {
                "alertname": "RollbackdEscalation",
                "cluster": "prod-eu",
                "namespace": "shop",
                "deployment": "checkout",
                "severity": "critical",
                "rollback_id": "rb-9",
            },
            "annotations": {
                "summary": "rollbackd could not roll back shop/checkout: verification failed",
                "description": "interval 2: error_ratio 0.2 > 0.05 Revision 7 -> 6. Report: https://r/rb-9",
                "report_url": "https://r/rb-9",
            },
            "startsAt": "2026-03-01T12:00:00+00:00",
            "endsAt": "2026-03-02T12:00:00+00:00",
            "generatorURL": "https://r/rb-9",
        }
    ]
    # The resolve repeats the firing alert's labels exactly (the alert's identity).
    assert resolve[0]["labels"] == fire[0]["labels"]
    assert resolve[0]["startsAt"] == "2026-03-01T12:00:00+00:00"
    assert resolve[0]["endsAt"] == "2026-03-01T12:05:00+00:00"


def test_only_escalations_and_their_resolves_are_pushed() -> None:
    channel = AlertmanagerPushChannel("http://127.0.0.1:9")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    started = Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key="rb-1",
        target=APP,
        summary="rolling back",
        details={},
        created_at=t0,
    )
    assert not channel.accepts(started)
    assert not channel.accepts(resolution(t0, key="rb-never-escalated"))
    assert channel.accepts(escalation(t0))


async def alerts(url: str, **params: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v2/alerts", params=params) as resp,
    ):
        assert resp.status == 200, await resp.text()
        result: list[dict[str, Any]] = await resp.json()
        return result


def named(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in found if a["labels"].get("alertname") == name]


async def test_real_alertmanager_fires_and_resolves_the_escalation(
    alertmanager_factory: AlertmanagerFactory,
    pager_sink: HttpSink,
) -> None:
    am = await alertmanager_factory(f"{pager_sink.url}/am-webhook")
    results: list[tuple[str, bool, str]] = []

    async def on_result(n: Notification, channel: str, ok: bool, detail: str) -> None:
        results.append((channel, ok, detail))

    async with Notifier([AlertmanagerPushChannel(am.url)], on_result=on_result) as notifier:
        notifier.submit(escalation(datetime.now(UTC)))
        assert await notifier.drain(10.0)
        assert results == [("alertmanager", True, "sent")]

        async def active() -> list[dict[str, Any]] | None:
            return named(await alerts(am.url), "RollbackdEscalation") or None

        [alert] = await poll_until(active, within=10, message="RollbackdEscalation active")
        assert alert["status"]["state"] == "active"
        assert alert["labels"] == {
            "alertname": "RollbackdEscalation",
            "namespace": "shop",
            "deployment": "checkout",
            "severity": "critical",
            "rollback_id": "rb-9",
        }
        # Alertmanager routed it on to its receiver, as it would to a pager.
        firing = await pager_sink.wait_for(_webhook_with_status("firing"), timeout=15)
        assert firing.json["receiver"] == "rollbackd"

        notifier.submit(resolution(datetime.now(UTC)))
        assert await notifier.drain(10.0)

        async def gone() -> bool | None:
            return True if not named(await alerts(am.url), "RollbackdEscalation") else None

        await poll_until(gone, within=10, message="RollbackdEscalation resolved")
        await pager_sink.wait_for(_webhook_with_status("resolved"), timeout=15)
    assert [ok for _, ok, _ in results] == [True, True]


def _webhook_with_status(status: str) -> Callable[[RecordedRequest], bool]:
    def seen(r: RecordedRequest) -> bool:
        return (
            r.path == "/am-webhook"
            and isinstance(r.json, dict)
            and r.json.get("status") == status
            and any(a["labels"].get("alertname") == "RollbackdEscalation" for a in r.json["alerts"])
        )

    return seen
