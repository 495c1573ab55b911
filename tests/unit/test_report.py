"""The post-incident report tells the whole story of a rollback, and never fails on gaps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollbackd.journal import Journal, TimelineEntry
from rollbackd.model import (
    Action,
    Decision,
    Phase,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.base import Notification, NotificationKind
from rollbackd.report import render_report

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
APP = Target("shop", "checkout")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def completed_rollback() -> Rollback:
    return Rollback(
        id="rb-20260301-120005-abc123",
        target=APP,
        phase=Phase.ROLLBACK_COMPLETED,
        started_at=at(5),
        updated_at=at(95),
        from_revision=7,
        to_revision=6,
        reason_code="verified",
        reason="3 of 3 intervals healthy",
        finished_at=at(95),
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "journal.sqlite")
    yield j
    await j.close()


async def record_story(j: Journal, rb: Rollback) -> None:
    """What the daemon and the executor journal during a successful rollback."""
    signal = Signal(
        target=APP,
        source=SignalSource.PROMETHEUS,
        name="error_ratio",
        status=SignalStatus.FIRING,
        started_at=at(-55),
        observed_at=at(4),
        value=0.3125,
        threshold=0.05,
        key="prom:shop/checkout:error_ratio:t",
        summary="5xx ratio 31% on shop/checkout",
    )
    await j.record_signal(signal, accepted=True)
    decision = Decision(
        Action.ROLLBACK,
        APP,
        "rollback",
        "error_ratio breached 40 s after revision 7 | rolled out",
        7,
        6,
    )
    await j.record_decision(decision, signal_key=signal.key, at=at(5), rollback_id=rb.id)
    await j.save_rollback(rb)
    await j.record_event(
        rb.id,
        APP,
        "plan",
        "restore revision 6",
        at=at(6),
        data={
            "images_from": ["registry.local/checkout:1.4.0"],
            "images_to": ["registry.local/checkout:1.3.2"],
        },
    )
    await j.record_event(rb.id, APP, "phase:ROLLING_BACK", "restoring revision 6", at=at(7))
    n = Notification(
        kind=NotificationKind.ROLLBACK_STARTED,
        severity="info",
        dedup_key=rb.id,
        target=APP,
        summary="rolling back",
        details={"rollback_id": rb.id},
        created_at=at(7),
    )
    await j.record_notification(n, "pagerduty", True, "sent", at(8))
    await j.record_notification(n, "slack", False, "HTTP 500 (after 5 attempt(s))", at(20))
    await j.record_event(
        rb.id,
        APP,
        "images",
        "image digests running after the rollback",
        at=at(35),
        data={"images": {"app": ["registry.local/checkout@sha256:" + "ab" * 32]}},
    )
    await j.record_event(rb.id, APP, "phase:VERIFYING", "verifying", at=at(35))
    for i in (1, 2, 3):
        await j.record_event(
            rb.id,
            APP,
            "verify_interval",
            f"interval {i}: healthy",
            at=at(35 + 20 * i),
            data={
                "index": i,
                "at": at(35 + 20 * i).isoformat(),
                "healthy": True,
                "readiness_ok": True,
                "detail": "3/3 pods ready",
                "evaluations": [
                    {
                        "signal": "error_ratio",
                        "verdict": "healthy",
                        "value": 0.001 * i,
                        "threshold": 0.05,
                    },
                    {
                        "signal": "latency_p99",
                        "verdict": "healthy",
                        "value": 0.12,
                        "threshold": 0.5,
                    },
                ],
            },
        )
    resolve = Notification(
        kind=NotificationKind.ROLLBACK_COMPLETED,
        severity="info",
        dedup_key=rb.id,
        target=APP,
        summary="verified",
        details={"rollback_id": rb.id},
        created_at=at(95),
        resolves=True,
    )
    await j.record_notification(resolve, "pagerduty", True, "sent", at(96))


async def test_completed_rollback_report_tells_the_story(journal: Journal) -> None:
    rb = completed_rollback()
    await record_story(journal, rb)
    text = render_report(rb, await journal.timeline(rb.id), await journal.rollback_details(rb.id))

    assert text.startswith("# Rollback `rb-20260301-120005-abc123`: shop/checkout\n")
    assert "**Outcome:** ✅ Rolled back and verified healthy (`ROLLBACK_COMPLETED`)" in text
    # Key times and the durations an SRE quotes in the review.
    assert "| Anomaly began | 2026-03-01 11:59:05.000 UTC |" in text
    assert "| Detected at | 2026-03-01 12:00:04.000 UTC |" in text
    assert "| Rollback started | 2026-03-01 12:00:07.000 UTC |" in text
    assert "| Rollout ready | 2026-03-01 12:00:35.000 UTC |" in text
    assert "| Verified | 2026-03-01 12:01:35.000 UTC |" in text
    assert "| Time to detect | 59.0 s |" in text
    assert "| Time to rollback (detected → ready) | 31.0 s |" in text
    assert "| Impact window (anomaly → verified) | 2 min 30 s |" in text
    # Trigger and decision, with the table pipe escaped.
    assert "| error_ratio | prometheus | firing | 0.3125 | 0.05 |" in text
    assert "- 5xx ratio 31% on shop/checkout" in text
    assert (
        "**rollback** (`rollback`): error_ratio breached 40 s after revision 7 | rolled out" in text
    )
    # The change, with digests.
    assert "Revision **7** → **6**" in text
    assert "Images before: `registry.local/checkout:1.4.0`" in text
    assert "Images restored: `registry.local/checkout:1.3.2`" in text
    assert "| app | `registry.local/checkout@sha256:" + "ab" * 32 + "` |" in text
    # Each verification interval with values against thresholds.
    for i in (1, 2, 3):
        assert f"**Interval {i}** at" in text
    assert "| error_ratio | healthy | 0.003 | 0.05 |" in text
    assert "| latency_p99 | healthy | 0.12 | 0.5 |" in text
    # Pages sent, including the failed one, called out.
    assert "| pagerduty | rollback_started | info | ok | sent |" in text
    assert "| slack | rollback_started | info | FAILED | HTTP 500 (after 5 attempt(s)) |" in text
    assert "| pagerduty | rollback_completed (resolve) | info | ok | sent |" in text
    assert "**1 notification(s) failed**" in text


async def test_timeline_section_lists_every_entry_in_order(journal: Journal) -> None:
    rb = completed_rollback()
    await record_story(journal, rb)
    timeline = await journal.timeline(rb.id)
    text = render_report(rb, timeline, None)
    section = text.split("## Timeline", 1)[1]
    positions = [section.index(e.message.replace("|", "\\|")) for e in timeline]
    assert positions == sorted(positions)
    assert len(timeline) == 12
    assert "| 2026-03-01 12:00:04.000 UTC | +0 ms | signal |" in section
    assert "| +1 min 32 s | notification |" in section


def test_escalated_rollback_says_a_human_must_act() -> None:
    rb = Rollback(
        id="rb-2",
        target=APP,
        phase=Phase.ESCALATED,
        started_at=at(0),
        updated_at=at(60),
        from_revision=7,
        to_revision=6,
        reason_code="verify_breach",
        reason="interval 2: error_ratio 0.2 > 0.05",
        finished_at=at(60),
    )
    timeline = [
        TimelineEntry(at(30), "phase:VERIFYING", "verifying", {}),
        TimelineEntry(
            at(50),
            "verify_interval",
            "interval 1: unhealthy",
            {
                "index": 1,
                "healthy": False,
                "readiness_ok": True,
                "detail": "error_ratio 0.2 > 0.05",
            },
        ),
    ]
    text = render_report(rb, timeline)
    assert "**Outcome:** 🚨 Escalated: a human must act (`ESCALATED`)" in text
    assert "**Action needed:** a human must resolve `shop/checkout` (verify_breach)." in text
    assert (
        "**Interval 1** at 2026-03-01 12:00:50.000 UTC: **unhealthy** (pods ready): error_ratio 0.2 > 0.05"
        in text
    )
    assert "| Failed / escalated | 2026-03-01 12:01:00.000 UTC |" in text
    assert "| Impact window (anomaly → verified) | — |" in text


def test_a_rollback_with_nothing_recorded_still_renders() -> None:
    rb = Rollback(
        id="rb-3",
        target=APP,
        phase=Phase.DRY_RUN,
        started_at=at(0),
        updated_at=at(0),
        reason_code="dry_run",
        reason="would roll back 7 -> 6",
        finished_at=at(0),
    )
    text = render_report(rb, [])
    assert "📝 Dry run: nothing was changed" in text
    assert "No triggering signal was recorded for this rollback." in text
    assert "No verification interval was recorded." in text
    assert "No notification was recorded." in text
    assert "Dry run: the Deployment was not modified." in text
    assert "| Rollout ready | — |" in text
