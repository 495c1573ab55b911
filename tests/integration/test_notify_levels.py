"""Escalation levels over real HTTP: routes choose routing keys, the lead hears what needs a human.

Each "replica" here is rollbackd's paging half as the daemon wires it: a
journal file, the configured channels (PagerDuty Events API v2 to the local
sink), the router, the executor's pager adapter, the escalations and the lead
escalation. A restart is a new replica on the same journal file. The clock of
the lead escalation is driven by the test (escalate_after is minutes long);
pages are sent in real time and asserted on what the sink received.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.config import Settings
from rollbackd.escalation import Escalations, GroupingPolicy
from rollbackd.journal import Journal
from rollbackd.model import (
    Action,
    Decision,
    Phase,
    Rollback,
    Signal,
    Target,
    utcnow,
)
from rollbackd.notify.base import NotificationKind, Notifier
from rollbackd.notify.configured import build_channels, lead_check_interval
from rollbackd.notify.reescalate import ANNOTATION_ACKNOWLEDGED, LeadEscalation
from rollbackd.notify.routing import Router, TargetFacts, routes_from_settings
from rollbackd.stages import NotifierPager
from rollbackd.testing.sink import HttpSink, RecordedRequest
from tests.factories import firing_alert

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ONCALL_PATH = "/v2/enqueue"
LEAD_PATH = "/lead/v2/enqueue"
KEYS = {
    "pay_oncall": "pay-oncall-key",
    "pay_lead": "pay-lead-key",
    "sre_oncall": "sre-oncall-key",
    "sre_lead": "sre-lead-key",
}
SHOP = Target("shop", "checkout")  # rollbackd.io/team: payments
WEB = Target("web", "frontend")  # rollbackd.io/team: web, which no route names
FACTS = {
    SHOP: TargetFacts("shop", labels={"app": "checkout"}, team="payments"),
    WEB: TargetFacts("web", labels={"app": "frontend"}, team="web"),
}
ESCALATE_AFTER = timedelta(minutes=10)


def settings(tmp_path: Path, sink: HttpSink) -> Settings:
    channels: dict[str, Any] = {}
    for name, key in KEYS.items():
        key_file = tmp_path / f"{name}.key"
        key_file.write_text(key + "\n")
        path = LEAD_PATH if name.endswith("_lead") else ONCALL_PATH
        channels[name] = {
            "type": "pagerduty",
            "url": f"{sink.url}{path}",
            "routing_key_file": str(key_file),
        }
    return Settings.model_validate(
        {
            "prometheus": {"url": "http://prometheus:9090"},
            "webhook": {"bearer_token": "t" * 24},
            "notify": {
                "channels": channels,
                "escalate_after": "10m",
                "routes": [
                    {
                        "name": "payments",
                        "match": {"teams": ["payments"]},
                        "oncall": ["pay_oncall"],
                        "lead": ["pay_lead"],
                    },
                    {"oncall": ["sre_oncall"], "lead": ["sre_lead"]},
                ],
            },
        }
    )


@dataclass
class Replica:
    journal: Journal
    notifier: Notifier
    pager: NotifierPager
    escalations: Escalations
    lead: LeadEscalation
    now: list[datetime]  # the lead escalation's clock, moved by the test

    async def check_at(self, at: datetime) -> list[str]:
        self.now[0] = at
        return await self.lead.check()


@contextlib.asynccontextmanager
async def replica(
    tmp_path: Path,
    sink: HttpSink,
    *,
    annotations: Mapping[Target, dict[str, str]] | None = None,
    journal_wrapper: Callable[[Journal], Any] = lambda j: j,
    failover_after: timedelta = timedelta(minutes=5),
    group_min: int = 50,
    group_wait: timedelta = timedelta(milliseconds=10),
) -> AsyncIterator[Replica]:
    s = settings(tmp_path, sink)
    journal = await Journal.open(tmp_path / "journal.sqlite")
    notifier = Notifier(
        build_channels(s),
        journal=journal,
        initial_backoff=0.2,
        max_backoff=1.0,
        failover_after=failover_after,
    )
    router = Router(
        routes_from_settings(s.notify),
        lambda t: FACTS.get(t, TargetFacts(t.namespace, known=False)),
    )
    notifier.route = router.channels_for
    now = [datetime.now(UTC)]
    lead = LeadEscalation(
        journal_wrapper(journal),
        notifier,
        route_for=router.route_for,
        annotations_of=lambda t: (annotations or {}).get(t),
        clock=lambda: now[0],
        horizon=s.notify.max_age,
        interval=lead_check_interval(router.routes),
    )
    escalations = Escalations(
        notifier,
        journal,
        GroupingPolicy(group_wait=group_wait, group_min=group_min),
    )
    await notifier.start()
    try:
        pager = NotifierPager(notifier, utcnow)
        yield Replica(journal, notifier, pager, escalations, lead, now)
    finally:
        await notifier.stop(drain_timeout=5)
        await journal.close()


def events(sink: HttpSink, key: str, *, accepted: bool = True) -> list[dict[str, Any]]:
    """What PagerDuty received for one routing key, in arrival order (2xx only by default)."""
    return [
        r.json
        for r in sink.requests
        if isinstance(r.json, dict)
        and r.json.get("routing_key") == key
        and (not accepted or 200 <= r.status < 300)
    ]


def is_trigger_for(key: str, dedup_key: str) -> Callable[[RecordedRequest], bool]:
    return lambda r: (
        isinstance(r.json, dict)
        and r.json.get("routing_key") == key
        and r.json.get("dedup_key") == dedup_key
        and r.json.get("event_action") == "trigger"
        and 200 <= r.status < 300
    )


def rollback(target: Target, rollback_id: str, phase: Phase, started_at: datetime) -> Rollback:
    return Rollback(
        id=rollback_id,
        target=target,
        phase=phase,
        started_at=started_at,
        updated_at=started_at,
        from_revision=3,
        to_revision=2,
        reason_code="verify_breach" if phase is Phase.ESCALATED else "",
        finished_at=started_at if phase.terminal else None,
    )


def signal(target: Target, at: datetime) -> Signal:
    return firing_alert(
        f"am:{target}:{at.timestamp()}", at, target=target, value=0.4, threshold=0.1
    )


async def not_a_deploy_problem(r: Replica, target: Target, at: datetime) -> str:
    decision = Decision(
        Action.ESCALATE, target, "no_recent_rollout", "no rollout in the change window"
    )
    return await r.escalations.escalate(signal(target, at), decision, at)


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as started:
        yield started


# --- routes ---------------------------------------------------------------------------


async def test_two_routing_keys_on_two_routes_each_get_their_own_pages(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink) as r:
        shop = rollback(SHOP, "rb-shop", Phase.ROLLING_BACK, t0)
        web = rollback(WEB, "rb-web", Phase.ROLLING_BACK, t0)
        await r.pager.notify(NotificationKind.ROLLBACK_STARTED, shop, "rolling back shop", {})
        await r.pager.notify(NotificationKind.ROLLBACK_STARTED, web, "rolling back web", {})
        assert await r.notifier.drain(10)
    # Team "payments" -> its route; team "web" matches nothing -> the default route.
    assert [e["dedup_key"] for e in events(sink, "pay-oncall-key")] == ["rb-shop"]
    assert [e["dedup_key"] for e in events(sink, "sre-oncall-key")] == ["rb-web"]
    # A start page is for on-call only.
    assert events(sink, "pay-lead-key") == events(sink, "sre-lead-key") == []


async def test_a_failed_verification_pages_the_lead_as_well_as_on_call(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink) as r:
        started = rollback(SHOP, "rb-1", Phase.ROLLING_BACK, t0)
        await r.pager.notify(NotificationKind.ROLLBACK_STARTED, started, "rolling back", {})
        failed = rollback(SHOP, "rb-1", Phase.ESCALATED, t0)
        await r.journal.save_rollback(failed)
        await r.pager.notify(
            NotificationKind.ESCALATION,
            failed,
            "rollbackd could not roll back shop/checkout: the restored revision breaches",
            {"reason_code": "verify_breach", "reason": "error ratio 0.4 > 0.1"},
        )
        assert await r.notifier.drain(10)
        oncall = events(sink, "pay-oncall-key")
        assert [e["payload"]["severity"] for e in oncall] == ["info", "critical"]
        (lead,) = events(sink, "pay-lead-key")
        assert lead["dedup_key"] == "rb-1" and lead["payload"]["severity"] == "critical"
        assert lead["payload"]["custom_details"]["reason_code"] == "verify_breach"
        # Already heard by the lead: escalate_after later, nothing more is paged.
        assert await r.check_at(t0 + 2 * ESCALATE_AFTER) == []
        assert await r.notifier.drain(10)
    assert len(events(sink, "pay-lead-key")) == 1
    assert events(sink, "sre-oncall-key") == events(sink, "sre-lead-key") == []


# --- re-escalation by time ---------------------------------------------------------------


async def test_an_unresolved_page_reaches_the_lead_once_after_escalate_after_across_restarts(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink) as first:
        key = await not_a_deploy_problem(first, SHOP, t0)
        await sink.wait_for(is_trigger_for("pay-oncall-key", key))
        # Not a deploy problem: on-call first, the lead not yet.
        assert await first.check_at(t0 + ESCALATE_AFTER - timedelta(seconds=1)) == []
    assert events(sink, "pay-lead-key") == []

    async with replica(tmp_path, sink) as second:  # the daemon restarted
        assert await second.check_at(t0 + ESCALATE_AFTER + timedelta(seconds=1)) == [key]
        await sink.wait_for(is_trigger_for("pay-lead-key", key))
        assert await second.check_at(t0 + 2 * ESCALATE_AFTER) == []

    async with replica(tmp_path, sink) as third:  # and again: derived from the journal
        assert await third.check_at(t0 + 3 * ESCALATE_AFTER) == []
        assert await third.notifier.drain(10)
    (lead,) = events(sink, "pay-lead-key")
    assert "still unresolved 10m1s after it was escalated" in lead["payload"]["summary"]
    assert lead["payload"]["custom_details"]["level"] == "lead"
    # On-call was paged once; the re-escalation was not a repeat to them.
    assert len([e for e in events(sink, "pay-oncall-key") if e["dedup_key"] == key]) == 1


class _DiesAfterThePage:
    """A journal that fails writing the "escalated_to_lead" note: killed between the two writes."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    async def record_event(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed")


async def test_killed_between_the_lead_page_and_its_note_the_lead_is_still_paged_once(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink, journal_wrapper=_DiesAfterThePage) as first:
        key = await not_a_deploy_problem(first, SHOP, t0)
        with pytest.raises(RuntimeError, match="killed"):
            await first.check_at(t0 + ESCALATE_AFTER)
        await sink.wait_for(is_trigger_for("pay-lead-key", key))
    async with replica(tmp_path, sink) as second:
        # The page is in the outbox: that is what "already escalated" reads.
        assert await second.check_at(t0 + 2 * ESCALATE_AFTER) == []
        assert await second.notifier.drain(10)
    assert len(events(sink, "pay-lead-key")) == 1


async def test_resolved_or_acknowledged_problems_are_not_escalated_to_the_lead(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    resolved, acked, fixed = Target("shop", "a"), Target("shop", "b"), Target("shop", "c")
    for target in (resolved, acked, fixed):
        FACTS[target] = TargetFacts("shop", team="payments")
    try:
        async with replica(tmp_path, sink) as r:
            keys = [await not_a_deploy_problem(r, t, t0) for t in (resolved, acked, fixed)]
            # a: the alert cleared (a signal_resolved decision after the page).
            cleared = Decision(Action.SKIP, resolved, "signal_resolved", "alert resolved")
            await r.journal.record_decision(cleared, signal_key="k", at=t0 + timedelta(minutes=1))
            # c: a later rollback of the Deployment completed.
            done = rollback(fixed, "rb-c", Phase.ROLLBACK_COMPLETED, t0 + timedelta(minutes=2))
            await r.journal.save_rollback(done)
        # b: a human acknowledged it on the Deployment.
        ack = {acked: {ANNOTATION_ACKNOWLEDGED: keys[1]}}
        async with replica(tmp_path, sink, annotations=ack) as r:
            assert await r.check_at(t0 + 2 * ESCALATE_AFTER) == []
            assert await r.notifier.drain(10)
        assert events(sink, "pay-lead-key") == []
        # The same problem, unacknowledged and unresolved, would have been paged.
        async with replica(tmp_path, sink) as r:
            assert await r.check_at(t0 + 2 * ESCALATE_AFTER) == [keys[1]]
    finally:
        for target in (resolved, acked, fixed):
            FACTS.pop(target)


async def test_a_grouped_page_reaches_the_lead_once_not_once_per_deployment(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    storm = [Target("infra", f"svc-{i}") for i in range(3)]
    async with replica(tmp_path, sink, group_min=3, group_wait=timedelta(seconds=1)) as r:
        keys = {await not_a_deploy_problem(r, target, t0) for target in storm}
        (group_key,) = keys - {k for k in keys if not k.startswith("esc-group-")}
        await sink.wait_for(is_trigger_for("sre-oncall-key", group_key))
        # The members' own pages were withdrawn into the group's: not escalated one by one.
        # A namespace-wide page has no Deployment: routed by namespace (here the default).
        assert await r.check_at(t0 + ESCALATE_AFTER) == [group_key]
        await sink.wait_for(is_trigger_for("sre-lead-key", group_key))
        assert await r.notifier.drain(10)
    (lead,) = events(sink, "sre-lead-key")
    assert "3 Deployments in namespace infra" in lead["payload"]["summary"]


async def test_a_rollback_stuck_in_flight_pages_the_lead_and_its_completion_resolves_it(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink) as r:
        stuck = rollback(SHOP, "rb-stuck", Phase.VERIFYING, t0)
        await r.journal.save_rollback(stuck)
        await r.pager.notify(NotificationKind.ROLLBACK_STARTED, stuck, "rolling back", {})
        assert await r.check_at(t0 + ESCALATE_AFTER + timedelta(minutes=2)) == ["rb-stuck"]
        await sink.wait_for(is_trigger_for("pay-lead-key", "rb-stuck"))
        done = rollback(SHOP, "rb-stuck", Phase.ROLLBACK_COMPLETED, t0)
        await r.journal.save_rollback(done)
        await r.pager.notify(NotificationKind.ROLLBACK_COMPLETED, done, "verified", {})
        assert await r.notifier.drain(10)
    lead = events(sink, "pay-lead-key")
    assert [e["event_action"] for e in lead] == ["trigger", "resolve"]
    assert "rollback rb-stuck still in VERIFYING after 12m" in lead[0]["payload"]["summary"]
    oncall = events(sink, "pay-oncall-key")
    assert [e["event_action"] for e in oncall] == ["trigger", "resolve"]


# --- a lead channel that is down ----------------------------------------------------------


async def test_a_lead_channel_down_is_retried_and_does_not_hold_back_on_call(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    sink.fail_next(LEAD_PATH, 429, headers={"Retry-After": "1"})
    sink.fail_for(LEAD_PATH, 2.5, status=503)
    async with replica(tmp_path, sink) as r:
        failed = rollback(SHOP, "rb-1", Phase.ESCALATED, t0)
        await r.pager.notify(
            NotificationKind.ESCALATION,
            failed,
            "verification failed",
            {"reason_code": "verify_breach"},
        )
        await sink.wait_for(is_trigger_for("pay-oncall-key", "rb-1"), timeout=2)
        # On-call pages keep flowing while the lead's channel refuses.
        later = rollback(SHOP, "rb-2", Phase.ROLLING_BACK, t0)
        await r.pager.notify(NotificationKind.ROLLBACK_STARTED, later, "rolling back", {})
        await sink.wait_for(is_trigger_for("pay-oncall-key", "rb-2"), timeout=2)
        assert events(sink, "pay-lead-key") == []  # still down
        lead = await sink.wait_for(is_trigger_for("pay-lead-key", "rb-1"), timeout=15)
    refused = [e for e in events(sink, "pay-lead-key", accepted=False)]
    statuses = [r.status for r in sink.requests_to(LEAD_PATH)]
    assert statuses[0] == 429 and 503 in statuses and statuses[-1] == 202, statuses
    assert len(refused) == len(statuses) >= 3
    # The first lead attempt after the 429 waited its Retry-After.
    lead_times = [r.at for r in sink.requests_to(LEAD_PATH)]
    assert (lead_times[1] - lead_times[0]).total_seconds() >= 0.95
    assert lead.json["dedup_key"] == "rb-1"
    # Delivered once, however many attempts it took.
    assert len(events(sink, "pay-lead-key")) == 1


async def test_a_re_escalation_the_lead_cannot_receive_falls_over_to_on_call(
    tmp_path: Path, sink: HttpSink
) -> None:
    t0 = datetime.now(UTC)
    sink.fail_for(LEAD_PATH, 30, status=503)
    async with replica(tmp_path, sink, failover_after=timedelta(seconds=1)) as r:
        key = await not_a_deploy_problem(r, SHOP, t0)
        await sink.wait_for(is_trigger_for("pay-oncall-key", key))
        assert await r.check_at(t0 + ESCALATE_AFTER) == [key]
        copy = await sink.wait_for(
            lambda q: (
                is_trigger_for("pay-oncall-key", key)(q)
                and "[pay_lead undeliverable for" in q.json["payload"]["summary"]
            ),
            timeout=10,
        )
    assert "still unresolved" in copy.json["payload"]["summary"]
    assert copy.json["payload"]["custom_details"]["failover_from"] == "pay_lead"
    assert events(sink, "pay-lead-key") == []  # still down
    assert events(sink, "sre-oncall-key") == []  # another team's pager is never the fallback


async def test_the_periodic_check_runs_on_its_own(tmp_path: Path, sink: HttpSink) -> None:
    t0 = datetime.now(UTC)
    async with replica(tmp_path, sink) as r:
        key = await not_a_deploy_problem(r, SHOP, t0)
        r.now[0] = t0 + ESCALATE_AFTER
        task = asyncio.create_task(r.lead.run())
        try:
            await sink.wait_for(is_trigger_for("pay-lead-key", key), timeout=10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
