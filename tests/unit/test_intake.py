"""Accepting signals: committed before acknowledged, repeats dropped, nothing accepted lost."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rollbackd.errors import AcceptError
from rollbackd.intake import SignalIntake
from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.model import Target
from rollbackd.pending import PendingSignals
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


def intake(
    journal: Any,
    metrics: Metrics | None = None,
    *,
    known: set[Target] | None = None,
    pending: PendingSignals | None = None,
) -> SignalIntake:
    return SignalIntake(
        journal=journal,
        metrics=metrics or Metrics(),
        mapping=TargetMapping(),
        resolve_pod=lambda namespace, pod: None,
        clock=lambda: NOW,
        target_known=(lambda t: None) if known is None else (lambda t: t in known),
        pending=pending,
    )


def drain(subject: SignalIntake) -> list[Any]:
    """Everything the dispatcher would be handed, in target order."""
    out = []
    while (taken := subject.pending.take()) is not None:
        out.extend(taken[1])
    return out


async def test_an_alert_is_journaled_and_pending_once_even_when_resent(journal: Journal) -> None:
    subject = intake(journal)
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))

    first = await subject.accept_alerts(payload)
    resent = await subject.accept_alerts(payload)

    assert (first.accepted, first.duplicates) == (1, 0)
    assert (resent.accepted, resent.duplicates) == (0, 1)
    [pending] = drain(subject)
    assert await journal.signal_seen(pending.signal.key)
    [(row_id, undecided)] = await journal.undecided_signals()
    assert (row_id, undecided.key) == (pending.row_id, pending.signal.key)


async def test_a_restarted_daemon_still_recognises_an_accepted_alert(journal: Journal) -> None:
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))
    await intake(journal).accept_alerts(payload)

    after_restart = intake(journal)  # fresh in-memory caches, same journal
    result = await after_restart.accept_alerts(payload)
    assert result.duplicates == 1 and drain(after_restart) == []


async def test_concurrent_bodies_share_commits_and_every_alert_is_journaled(
    journal: Journal,
) -> None:
    import asyncio

    journal.close_direct()  # every commit to the journal's thread, as when the lock is busy
    subject = intake(journal)
    bodies = [
        body(
            *(
                alert("HighErrors", fingerprint=f"f{i}-{j}", namespace="shop", deployment="cart")
                for j in range(10)
            )
        )
        for i in range(50)
    ]
    # The journal's thread is busy (a decision's write, say) while all fifty
    # arrive: without that, a fast thread may commit each before the next
    # arrives, and nothing would be left to group.
    thread_busy = threading.Event()
    journal._post(lambda: thread_busy.wait(10))
    requests = asyncio.gather(*(subject.accept_alerts(b) for b in bodies))
    await asyncio.sleep(0.05)
    thread_busy.set()
    results = await requests

    assert sum(r.accepted for r in results) == 500
    assert len(await journal.undecided_signals(limit=1000)) == 500
    # One batch per target for the dispatcher, however many alerts.
    target, batch = subject.pending.take() or (None, [])
    assert target == Target("shop", "cart") and len(batch) == 500
    assert journal.intake_commits <= 2  # grouped, not one commit per request


async def test_a_repeat_within_one_body_and_across_bodies_is_one_signal(journal: Journal) -> None:
    subject = intake(journal)
    twice = alert("HighErrors", namespace="shop", deployment="cart")
    result = await subject.accept_alerts(body(twice, twice))
    assert (result.accepted, result.duplicates) == (1, 1)


async def test_rollbackds_own_escalation_alert_is_never_acted_on(journal: Journal) -> None:
    subject = intake(journal)
    result = await subject.accept_alerts(
        body(alert("RollbackdEscalation", namespace="shop", deployment="cart"))
    )
    assert result.accepted == 0
    assert drain(subject) == []


async def test_alert_without_a_target_is_recorded_once_and_counted(journal: Journal) -> None:
    metrics = Metrics()
    subject = intake(journal, metrics)
    for _ in range(3):
        result = await subject.accept_alerts(body(alert("DiskFull", instance="node-1")))
    assert drain(subject) == []
    [row] = await journal.unresolved_alerts()
    assert row["fingerprint"] == "f1" and row["count"] == 1  # repeats cost nothing
    assert result.unresolved == 0 and result.duplicates == 1
    assert "rollbackd_unresolved_alerts_total 1.0" in metrics.render().decode()


async def test_the_same_unresolved_fingerprint_after_the_cache_is_one_row(journal: Journal) -> None:
    for _ in range(200):
        await intake(journal).accept_alerts(body(alert("DiskFull", instance="node-1")))
    [row] = await journal.unresolved_alerts()
    assert row["count"] == 200


async def test_an_alert_naming_an_unknown_deployment_is_unresolved_not_pending(
    journal: Journal,
) -> None:
    subject = intake(journal, known={Target("shop", "cart")})
    result = await subject.accept_alerts(
        body(
            alert("HighErrors", fingerprint="a", namespace="shop", deployment="cart"),
            alert("HighErrors", fingerprint="b", namespace="shop", deployment="ghost"),
        )
    )
    assert (result.accepted, result.unresolved) == (1, 1)
    [pending] = drain(subject)
    assert pending.signal.target == Target("shop", "cart")
    [row] = await journal.unresolved_alerts()
    assert "shop/ghost not found" in row["reason"]


async def test_an_invalid_alert_is_recorded_and_its_neighbours_accepted(journal: Journal) -> None:
    subject = intake(journal)
    bad = alert("HighErrors", fingerprint="bad", namespace="shop", deployment="cart")
    bad["startsAt"] = "9999-12-31T23:59:59-14:00"
    good = alert("HighErrors", fingerprint="good", namespace="shop", deployment="cart")
    result = await subject.accept_alerts(body(bad, good))
    assert result.accepted == 1
    assert [r["path"] for r in result.rejected] == ["$.alerts[0].startsAt"]
    [row] = await journal.unresolved_alerts()
    assert row["fingerprint"] == "bad" and row["reason"].startswith("invalid: $.alerts[0]")


async def test_malformed_body_is_a_payload_error_and_nothing_is_pending(journal: Journal) -> None:
    subject = intake(journal)
    with pytest.raises(PayloadError):
        await subject.accept_alerts(b'{"version": "4", "alerts": [{"status": 1}]')
    assert drain(subject) == []


async def test_overflow_keeps_accepting_and_leaves_the_rest_to_the_journal(
    journal: Journal,
) -> None:
    subject = intake(journal, pending=PendingSignals(max_in_memory=5))
    subject.pending.reload_needed = False
    result = await subject.accept_alerts(
        body(
            *(
                alert("E", fingerprint=f"f{i}", namespace="shop", deployment="cart")
                for i in range(20)
            )
        )
    )
    assert result.accepted == 20  # never refused after commit
    assert len(subject.pending) == 5 and subject.pending.reload_needed
    assert len(await journal.undecided_signals()) == 20


class FlakyJournal:
    """Fails its first commit, like a full disk that an operator then frees."""

    def __init__(self, real: Journal) -> None:
        self.real = real
        self.failures = 1

    async def accept(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        return await self.real.accept(*args, **kwargs)


async def test_journal_failure_refuses_the_alert_and_its_retry_is_accepted(
    journal: Journal,
) -> None:
    subject = intake(FlakyJournal(journal))
    payload = body(alert("HighErrors", namespace="shop", deployment="cart"))
    with pytest.raises(AcceptError):
        await subject.accept_alerts(payload)  # the server answers 503: Alertmanager retries
    assert drain(subject) == []

    retried = await subject.accept_alerts(payload)
    assert retried.accepted == 1 and len(drain(subject)) == 1


async def test_a_byte_identical_resend_is_answered_from_memory_as_duplicates(
    journal: Journal,
) -> None:
    subject = intake(journal)
    payload = body(
        alert("E", fingerprint="a", namespace="shop", deployment="cart"),
        alert("E", fingerprint="b", namespace="shop", deployment="cart"),
    )
    await subject.accept_alerts(payload)
    commits = journal.intake_commits

    again = await subject.accept_alerts(payload)

    assert (again.accepted, again.duplicates) == (0, 2)
    assert journal.intake_commits == commits  # no journal work for a resend


async def test_a_resent_body_with_a_bad_alert_is_judged_again_not_cached(
    journal: Journal,
) -> None:
    subject = intake(journal)
    bad = alert("E", fingerprint="bad", namespace="shop", deployment="cart")
    bad["labels"]["namespace"] = "\udfff"
    payload = json.dumps(json.loads(body(bad)), ensure_ascii=True).encode()
    assert b"\\udfff" in payload  # the escape as Alertmanager's JSON would carry it

    for _ in range(2):
        result = await subject.accept_alerts(payload)
        assert [r["path"] for r in result.rejected] == ["$.alerts[0].labels.namespace"]
