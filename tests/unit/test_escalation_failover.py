"""An escalation page across a change of leader, each leader with its own journal.

The Deployment is the only thing both leaders share: the old leader claims
its page there (``rollbackd.io/escalated``) and marks each delivery; the new
leader reads it from the watch cache. One incident stays one page; a page
the old leader never delivered is never lost.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollbackd.escalation import GROUP_NAME, KIND_REPEATED, Escalations
from rollbackd.incidents import marks_of
from rollbackd.journal import Journal
from rollbackd.kube.errors import ConflictError, KubeError, NotFoundError
from rollbackd.kube.fencing import FencedError
from rollbackd.model import ANNOTATION_ESCALATED, Phase, Target
from rollbackd.notify.base import Notification, Notifier
from rollbackd.notify.escalated import EscalatedLedger
from rollbackd.notify.reescalate import LeadEscalation, Unresolved, lead_page
from rollbackd.notify.routing import Route
from rollbackd.testing.kubesim.errors import ApiError
from rollbackd.testing.kubesim.patch import apply_json_patch
from tests.unit.test_escalation import NOW, POLICY, RecordingPager, escalation, signal

ROUTED = frozenset({"pagerduty", "slack"})
CART = Target("shop", "cart")


class Cluster:
    """Deployments as the API server and the watch cache hold them (``LedgerKube``)."""

    def __init__(self, *names: str) -> None:
        self.synced = True
        self.fenced = False
        self.conflicts = 0  # the next PATCHes that lose a race with another writer
        self.broken = False  # the API server answers 503
        self.slow = 0.0  # seconds each read takes (an API server under load)
        self.patches = 0
        self.objects: dict[Target, dict[str, Any]] = {
            Target("shop", n): {"metadata": {"name": n, "resourceVersion": "1"}} for n in names
        }

    def cached_deployment(self, target: Target) -> dict[str, Any] | None:
        found = self.objects.get(target)
        return copy.deepcopy(found) if found is not None else None

    async def read_deployment(self, target: Target) -> dict[str, Any]:
        await asyncio.sleep(self.slow)
        if self.broken:
            raise KubeError("service unavailable", 503)
        found = self.cached_deployment(target)
        if found is None:
            raise NotFoundError(f"{target} not found", 404)
        return found

    async def patch_deployment(self, target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
        if self.fenced:
            raise FencedError("not the leader")
        meta = self.objects[target]["metadata"]
        if self.conflicts:
            self.conflicts -= 1
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        try:
            patched = apply_json_patch(self.objects[target], ops)
        except ApiError as exc:  # the resourceVersion test failed: a conflict, as the adapter says
            raise ConflictError(f"{target} changed", 409) from exc
        patched["metadata"]["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.objects[target] = patched
        self.patches += 1
        return copy.deepcopy(patched)

    def check_state_term(self, deployment: Any, what: str) -> None:
        return None


def routed(n: Notification) -> Collection[str]:
    return ROUTED


class Leader:
    """One replica: its own journal and outbox, the shared cluster."""

    def __init__(self, journal: Journal, cluster: Cluster) -> None:
        self.pager = RecordingPager()
        self.ledger = EscalatedLedger(cluster, route=routed)
        self.escalations = Escalations(self.pager, journal, POLICY, ledger=self.ledger)

    async def deliver(self, *channels: str) -> None:
        """What the notifier's workers report: each channel took every page queued here."""
        for n in self.pager.sent():
            for channel in channels:
                await self.ledger.delivered(n, channel)


@pytest.fixture
async def journals(tmp_path: Path) -> AsyncIterator[tuple[Journal, Journal]]:
    a = await Journal.open(tmp_path / "a.sqlite")
    b = await Journal.open(tmp_path / "b.sqlite")
    yield a, b
    await a.close()
    await b.close()


async def test_an_incident_the_old_leader_delivered_is_noted_as_repeated_by_the_new_one(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)
    await a.deliver("pagerduty", "slack")

    later = NOW + timedelta(minutes=10)
    assert await b.escalations.escalate(signal("cart"), d, later) == key
    assert b.pager.sent() == []
    noted = await journals[1].last_event(CART, KIND_REPEATED, since=NOW)
    assert noted is not None and noted["dedup_key"] == key
    # And it stays one incident on the new leader.
    assert await b.escalations.escalate(signal("cart"), d, later + timedelta(minutes=1)) == key
    assert b.pager.sent() == []


async def test_a_page_the_old_leader_queued_but_never_delivered_is_paged_by_the_new_one(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)  # killed before any channel took it

    assert await b.escalations.escalate(signal("cart"), d, NOW + timedelta(minutes=1)) == key
    [page] = b.pager.sent()
    assert page.dedup_key == key  # PagerDuty folds it into the page, had it gone out after all


async def test_a_page_only_some_channels_took_is_paged_again(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)
    await a.deliver("slack")  # PagerDuty was answering 503 when the leader died

    await b.escalations.escalate(signal("cart"), d, NOW + timedelta(minutes=1))
    assert [n.dedup_key for n in b.pager.sent()] == [key]


async def test_after_the_incident_window_the_new_leader_opens_a_new_incident(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    old = await a.escalations.escalate(signal("cart"), d, NOW)
    await a.deliver("pagerduty", "slack")

    new = await b.escalations.escalate(signal("cart"), d, NOW + timedelta(minutes=31))
    assert new != old and [n.dedup_key for n in b.pager.sent()] == [new]
    # The Deployment now names the new incident: a third leader would join it.
    assert marks_of(cluster.objects[CART])["no_previous_revision"].key == new


async def test_a_cluster_that_cannot_tell_never_silences_the_page(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    await a.escalations.escalate(signal("cart"), d, NOW)
    await a.deliver("pagerduty", "slack")
    cluster.synced = False  # the new leader's watch cache has not synced yet

    await b.escalations.escalate(signal("cart"), d, NOW + timedelta(minutes=1))
    assert len(b.pager.sent()) == 1


async def test_a_hand_edited_record_never_silences_the_page(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    cluster.objects[CART]["metadata"]["annotations"] = {ANNOTATION_ESCALATED: "{oops"}
    b = Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await b.escalations.escalate(signal("cart"), d, NOW)
    assert [n.dedup_key for n in b.pager.sent()] == [key]
    # The page replaced the broken record with a readable one.
    assert marks_of(cluster.objects[CART])["no_previous_revision"].key == key


@pytest.mark.parametrize("failure", ["api_down", "fenced", "gone", "conflicts"])
async def test_a_record_that_cannot_be_written_never_holds_the_page_back(
    journals: tuple[Journal, Journal], failure: str
) -> None:
    cluster = Cluster("cart")
    if failure == "api_down":
        cluster.broken = True
    elif failure == "fenced":
        cluster.fenced = True
    elif failure == "gone":
        cluster.objects.clear()
    else:
        cluster.conflicts = 10  # someone else writes the Deployment faster than we can
    a = Leader(journals[0], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)
    await a.deliver("pagerduty", "slack")
    assert [n.dedup_key for n in a.pager.sent()] == [key]
    assert cluster.patches == 0


async def test_a_write_that_lost_a_race_is_made_again_on_a_fresh_read(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    cluster.conflicts = 1
    a = Leader(journals[0], cluster)
    key = await a.escalations.escalate(
        signal("cart"), escalation("cart", "no_previous_revision"), NOW
    )
    assert marks_of(cluster.objects[CART])["no_previous_revision"].key == key


async def test_a_delivered_grouped_page_covers_its_members_on_the_new_leader(
    journals: tuple[Journal, Journal],
) -> None:
    names = ("cart", "orders", "search")
    cluster = Cluster(*names)
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    keys = {
        await a.escalations.escalate(signal(n), escalation(n), NOW + timedelta(seconds=i))
        for i, n in enumerate(names)
    }
    [group] = a.pager.sent()
    assert group.target == Target("shop", GROUP_NAME) and group.dedup_key in keys
    await a.deliver("pagerduty", "slack")

    later = NOW + timedelta(minutes=5)
    for n in names:
        assert await b.escalations.escalate(signal(n), escalation(n), later) == group.dedup_key
    assert b.pager.sent() == []
    # A Deployment that starts breaching after the failover joins the open group.
    joined = await b.escalations.escalate(signal("payments"), escalation("payments"), later)
    assert joined == group.dedup_key and b.pager.sent() == []


async def test_a_delivered_rollback_page_is_not_an_escalation_record(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a = Leader(journals[0], cluster)
    d = escalation("cart", "no_previous_revision")
    await a.escalations.escalate(signal("cart"), d, NOW)
    [page] = a.pager.sent()
    rollback_page = Notification(
        kind=page.kind,
        severity="critical",
        dedup_key="rb-123",  # a rollback that ended ESCALATED: its state is on the Deployment
        target=CART,
        summary="verification failed",
        details={"reason_code": "verify_breach"},
        created_at=NOW,
    )
    before = cluster.patches
    await a.ledger.delivered(rollback_page, "pagerduty")
    assert cluster.patches == before


ESCALATE_AFTER = timedelta(minutes=10)
ROUTE = Route(
    "default",
    oncall=("pagerduty", "slack"),
    lead=("lead",),
    escalate_after=ESCALATE_AFTER,
    default=True,
)


def lead_escalation(
    journal: Journal, cluster: Cluster, pager: RecordingPager, at: datetime
) -> LeadEscalation:
    def annotations_of(target: Target) -> dict[str, str] | None:
        found = cluster.cached_deployment(target)
        return None if found is None else dict(found["metadata"].get("annotations") or {})

    return LeadEscalation(
        journal,
        pager,
        route_for=lambda target: ROUTE,
        annotations_of=annotations_of,
        clock=lambda: at,
        horizon=timedelta(hours=24),
        interval=1.0,
        soonest=ESCALATE_AFTER,
    )


async def test_the_new_leader_pages_the_lead_for_what_the_old_one_paged_on_call(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    key = await a.escalations.escalate(signal("cart"), escalation("cart"), NOW)
    await a.deliver("pagerduty", "slack")  # on-call heard it; the leader dies before escalate_after

    await b.escalations.escalate(signal("cart"), escalation("cart"), NOW + timedelta(minutes=2))
    assert b.pager.sent() == []
    lead_pager = RecordingPager()
    early = NOW + ESCALATE_AFTER - timedelta(seconds=1)
    assert await lead_escalation(journals[1], cluster, lead_pager, early).check() == []
    # The clock runs from the old leader's page, not from the new leader's adoption.
    due = NOW + ESCALATE_AFTER + timedelta(seconds=1)
    assert await lead_escalation(journals[1], cluster, lead_pager, due).check() == [key]
    [page] = lead_pager.sent()
    assert page.dedup_key == key and page.details["level"] == "lead"


async def test_the_new_leader_does_not_page_the_lead_again_when_the_old_one_did(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    key = await a.escalations.escalate(signal("cart"), escalation("cart"), NOW)
    await a.deliver("pagerduty", "slack")
    due = NOW + ESCALATE_AFTER + timedelta(seconds=1)
    # The old leader's re-escalation (its outbox row is what its own check reads).
    item = Unresolved(
        key, CART, Phase.ESCALATED, NOW, "no_recent_rollout", "cart: no_recent_rollout"
    )
    await a.ledger.delivered(lead_page(item, ROUTE, due), "lead")  # taken; then the leader died

    await b.escalations.escalate(signal("cart"), escalation("cart"), due + timedelta(seconds=5))
    b_lead = RecordingPager()
    assert (
        await lead_escalation(journals[1], cluster, b_lead, due + timedelta(minutes=1)).check()
        == []
    )
    assert b_lead.sent() == [] and b.pager.sent() == []


async def test_a_failover_copy_stands_in_for_the_channel_that_could_not_take_the_page(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)
    [page] = a.pager.sent()
    await a.ledger.delivered(page, "slack")
    # PagerDuty held it past failover_after: its copy went out on Slack, marked as such.
    copy_of = Notification(
        **{**page.__dict__, "details": {**page.details, "failover_from": "pagerduty"}}
    )
    await a.ledger.delivered(copy_of, "slack")

    assert await b.escalations.escalate(signal("cart"), d, NOW + timedelta(minutes=1)) == key
    assert b.pager.sent() == []


async def test_a_grouped_page_the_old_leader_took_to_the_lead_is_not_sent_to_the_lead_again(
    journals: tuple[Journal, Journal],
) -> None:
    names = ("cart", "orders", "search")
    cluster = Cluster(*names)
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    for i, n in enumerate(names):
        await a.escalations.escalate(signal(n), escalation(n), NOW + timedelta(seconds=i))
    [group] = a.pager.sent()
    await a.deliver("pagerduty", "slack")
    due = NOW + ESCALATE_AFTER + timedelta(seconds=5)
    item = Unresolved(
        group.dedup_key,
        group.target,
        Phase.ESCALATED,
        NOW,
        "no_recent_rollout",
        group.summary,
        names,
    )
    await a.ledger.delivered(lead_page(item, ROUTE, due), "lead")  # then the leader died

    for n in names:
        await b.escalations.escalate(signal(n), escalation(n), due + timedelta(seconds=1))
    b_lead = RecordingPager()
    assert (
        await lead_escalation(journals[1], cluster, b_lead, due + timedelta(minutes=1)).check()
        == []
    )
    assert b_lead.sent() == [] and b.pager.sent() == []


async def test_a_grouped_page_adopted_by_the_new_leader_reaches_the_lead_once(
    journals: tuple[Journal, Journal],
) -> None:
    names = ("cart", "orders", "search")
    cluster = Cluster(*names)
    a, b = Leader(journals[0], cluster), Leader(journals[1], cluster)
    for i, n in enumerate(names):
        await a.escalations.escalate(signal(n), escalation(n), NOW + timedelta(seconds=i))
    [group] = a.pager.sent()
    await a.deliver("pagerduty", "slack")  # the leader dies before escalate_after

    for n in names:
        await b.escalations.escalate(signal(n), escalation(n), NOW + timedelta(minutes=1))
    b_lead = RecordingPager()
    due = NOW + ESCALATE_AFTER + timedelta(seconds=5)
    assert await lead_escalation(journals[1], cluster, b_lead, due).check() == [group.dedup_key]
    [page] = b_lead.sent()
    assert sorted(page.details["deployments"]) == sorted(names)


async def test_a_slow_api_server_holds_a_grouped_page_s_channel_for_one_timeout_not_one_per_member(
    journals: tuple[Journal, Journal],
) -> None:
    names = ("cart", "orders", "search")
    cluster = Cluster(*names)
    a = Leader(journals[0], cluster)
    for i, n in enumerate(names):
        await a.escalations.escalate(signal(n), escalation(n), NOW + timedelta(seconds=i))
    [group] = a.pager.sent()
    cluster.slow = 5.0
    ledger = EscalatedLedger(cluster, route=routed, timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ledger.delivered(group, "pagerduty")
    assert loop.time() - started < 0.5  # 3 members x 0.2 s would be 0.6 s


class Channel:
    """A channel that records the dedup keys it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[str] = []

    async def send(self, n: Notification) -> None:
        self.sent.append(n.dedup_key)


async def test_a_channel_that_took_the_page_from_another_leader_is_not_sent_it_again(
    journals: tuple[Journal, Journal],
) -> None:
    cluster = Cluster("cart")
    a = Leader(journals[0], cluster)
    d = escalation("cart", "no_previous_revision")
    key = await a.escalations.escalate(signal("cart"), d, NOW)
    [page] = a.pager.sent()
    await a.deliver("slack")  # PagerDuty refused it; then this leader died

    # The next leader's outbox holds the same page for both channels (paged
    # again under its key); the one a channel took is withdrawn there, not re-sent.
    pagerduty, slack = Channel("pagerduty"), Channel("slack")
    notifier = Notifier([pagerduty, slack], journal=journals[1], failover_after=None)
    ledger = EscalatedLedger(cluster, route=routed)
    notifier.taken_elsewhere, notifier.on_delivered = ledger.taken, ledger.delivered
    await notifier.enqueue(page)
    async with notifier:
        assert await notifier.drain(5)
    assert pagerduty.sent == [key] and slack.sent == []
    assert marks_of(cluster.objects[CART])["no_previous_revision"].covered
    # A failover copy says something new (its channel failed): never withheld.
    copy_of = Notification(**{**page.__dict__, "details": {**page.details, "failover_from": "x"}})
    assert not ledger.taken(copy_of, "slack") and ledger.taken(page, "slack")
