"""Accepting signals: journaled before queued, repeats dropped, own alerts ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.intake import SignalIntake
from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.server import AcceptError
from rollbackd.sources.alertmanager import PayloadError, TargetMapping

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def alert(
    name: str, status: str = "firing", fingerprint: str = "f1", **labels: str
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {},
        "startsAt": "2026-03-01T11:58:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }


def body(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "rollbackd",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": list(alerts),
        }
    ).encode()


@pytest.fixture
async def journal(tmp_path: Path) -> Any:
    opened = await Journal.open(tmp_path / "journal.sqlite")
    yield opened
    await opened.close()


def intake(journal: Any, metrics: Metrics | None = None) -> SignalIntake:
    return SignalIntake(
        journal=journal,
        metrics=metrics or Metrics(),
        mapping=TargetMapping(),
        resolve_pod=lambda namespace, pod: None,
        clock=lambda: NOW,
    )


async def test_an_alert_is_journaled_and_queued_once_even_when_resent(journal: Journal) -> None:
    subject = intake(journal)
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))

    first = await subject.accept_alerts(payload)
    resent = await subject.accept_alerts(payload)

    assert (first.accepted, first.duplicates) == (1, 0)
    assert (resent.accepted, resent.duplicates) == (0, 1)
    assert subject.queue.qsize() == 1
    queued = subject.queue.get_nowait()
    assert await journal.signal_seen(queued.key)


async def test_a_restarted_daemon_still_recognises_an_accepted_alert(journal: Journal) -> None:
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))
    await intake(journal).accept_alerts(payload)

    after_restart = intake(journal)  # fresh in-memory deduper, same journal
    result = await after_restart.accept_alerts(payload)
    assert result.duplicates == 1 and after_restart.queue.empty()


async def test_rollbackds_own_escalation_alert_is_never_acted_on(journal: Journal) -> None:
    subject = intake(journal)
    result = await subject.accept_alerts(
        body(alert("RollbackdEscalation", namespace="shop", deployment="cart"))
    )
    assert result.accepted == 0
    assert subject.queue.empty()


async def test_alert_without_a_target_is_recorded_and_counted(journal: Journal) -> None:
    metrics = Metrics()
    subject = intake(journal, metrics)
    result = await subject.accept_alerts(body(alert("DiskFull", instance="node-1")))
    assert result.unresolved == 1 and subject.queue.empty()
    assert "rollbackd_unresolved_alerts_total 1.0" in metrics.render().decode()


async def test_malformed_body_is_a_payload_error_and_nothing_is_queued(journal: Journal) -> None:
    subject = intake(journal)
    with pytest.raises(PayloadError):
        await subject.accept_alerts(b'{"version": "4", "alerts": [{"status": 1}]')
    assert subject.queue.empty()


class FlakyJournal:
    """Fails its first write, like a full disk that an operator then frees."""

    def __init__(self, real: Journal) -> None:
        self.real = real
        self.failures = 1

    async def signal_seen(self, key: str) -> bool:
        return await self.real.signal_seen(key)

    async def record_signal(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        await self.real.record_signal(*args, **kwargs)


async def test_journal_failure_refuses_the_alert_and_its_retry_is_accepted(
    journal: Journal,
) -> None:
    subject = intake(FlakyJournal(journal))
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))
    with pytest.raises(AcceptError):
        await subject.accept_alerts(payload)  # the server answers 503: Alertmanager retries
    assert subject.queue.empty()

    retried = await subject.accept_alerts(payload)
    assert retried.accepted == 1 and subject.queue.qsize() == 1
