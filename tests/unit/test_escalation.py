"""Escalation pages: one per (Deployment, reason) per incident, storms grouped per namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rollbackd.escalation import Escalations, GroupingPolicy
from rollbackd.journal import Journal
from rollbackd.model import (
    Action,
    Decision,
    RecordKind,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.base import Notification

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = GroupingPolicy(
    incident_window=timedelta(minutes=30), group_wait=timedelta(seconds=10), group_min=3
)


class RecordingPager:
    """The outbox as the escalation logic sees it: pages held until due, withdrawable."""

    def __init__(self) -> None:
        self.queued: list[tuple[Notification, datetime | None]] = []
        self.withdrawn: set[str] = set()

    async def enqueue(self, n: Notification, *, not_before: datetime | None = None) -> None:
        self.queued.append((n, not_before))

    async def revise(self, n: Notification) -> int:
        for i, (queued, due) in enumerate(self.queued):
            if queued.dedup_key == n.dedup_key:
                self.queued[i] = (n, due)
                return 1
        return 0

    async def withdraw(self, dedup_keys: Sequence[str], *, reason: str) -> int:
        keys = {n.dedup_key for n, _ in self.queued} & set(dedup_keys)
        self.withdrawn |= keys
        return len(keys)

    def sent(self) -> list[Notification]:
        """What a human would receive: everything not withdrawn."""
        return [n for n, _ in self.queued if n.dedup_key not in self.withdrawn]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(tmp_path / "journal.sqlite")
    yield j
    await j.close()


def escalation(name: str, reason: str = "no_recent_rollout", namespace: str = "shop") -> Decision:
    return Decision(Action.ESCALATE, Target(namespace, name), reason, f"{name}: {reason}")


def signal(name: str, started: datetime = NOW, namespace: str = "shop") -> Signal:
    return Signal(
        target=Target(namespace, name),
        source=SignalSource.ALERTMANAGER,
        name="DeploymentHighErrorRatio",
        status=SignalStatus.FIRING,
        started_at=started,
        observed_at=started,
    )


async def test_repeats_for_one_deployment_and_reason_page_once_per_incident(
    journal: Journal,
) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    d = escalation("cart", "no_previous_revision")
    # Ten alerts with ten different start times: still one incident.
    keys = {
        await subject.escalate(
            signal("cart", NOW - timedelta(seconds=i)), d, NOW + timedelta(seconds=i)
        )
        for i in range(10)
    }
    assert len(keys) == 1 and len(pager.sent()) == 1
    assert pager.queued[0][1] is None  # not a storm candidate: pages at once


async def test_after_the_incident_window_the_same_problem_pages_again(journal: Journal) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    d = escalation("cart", "no_previous_revision")
    await subject.escalate(signal("cart"), d, NOW)
    await subject.escalate(signal("cart"), d, NOW + timedelta(minutes=31))
    assert len(pager.sent()) == 2


async def test_a_restart_does_not_page_an_open_incident_again(journal: Journal) -> None:
    d = escalation("cart", "no_previous_revision")
    first = RecordingPager()
    await Escalations(first, journal, POLICY).escalate(signal("cart"), d, NOW)
    after_restart = RecordingPager()
    await Escalations(after_restart, journal, POLICY).escalate(
        signal("cart"), d, NOW + timedelta(minutes=5)
    )
    assert len(first.sent()) == 1 and after_restart.sent() == []


async def test_many_deployments_with_no_recent_rollout_are_one_grouped_page(
    journal: Journal,
) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    for i in range(50):
        for start in range(10):
            at = NOW + timedelta(milliseconds=10 * i + start)
            await subject.escalate(
                signal(f"svc-{i}", NOW - timedelta(seconds=start)), escalation(f"svc-{i}"), at
            )

    [page] = pager.sent()
    assert page.summary.startswith(
        "50 Deployments in namespace shop breaching; none recently rolled out"
    )
    assert len(page.details["deployments"]) == 50
    # The first few waited for the group and were withdrawn before anyone saw them.
    assert all(not_before is not None for n, not_before in pager.queued if n is not page)


async def test_a_few_deployments_below_the_group_size_page_individually(journal: Journal) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    await subject.escalate(signal("a"), escalation("a"), NOW)
    await subject.escalate(signal("b"), escalation("b"), NOW + timedelta(seconds=1))
    sent = pager.sent()
    assert [n.target.name for n in sent] == ["a", "b"]
    assert all(due == NOW + timedelta(seconds=10) for _, due in pager.queued[:1])


async def test_groups_are_per_namespace(journal: Journal) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    for ns in ("shop", "billing"):
        for i in range(3):
            await subject.escalate(
                signal(f"s{i}", namespace=ns), escalation(f"s{i}", namespace=ns), NOW
            )
    assert sorted(n.target.namespace for n in pager.sent()) == ["billing", "shop"]


async def test_deploy_problems_are_never_grouped_away(journal: Journal) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    for i in range(5):
        await subject.escalate(signal(f"s{i}"), escalation(f"s{i}", "guard_mutable_image"), NOW)
    assert len(pager.sent()) == 5 and pager.withdrawn == set()


async def test_every_escalation_page_is_a_record_with_its_timeline(journal: Journal) -> None:
    pager = RecordingPager()
    subject = Escalations(pager, journal, POLICY)
    d = escalation("cart", "no_previous_revision")
    key = await subject.escalate(signal("cart"), d, NOW)
    await subject.escalate(signal("cart"), d, NOW + timedelta(seconds=5))

    [record] = await journal.list_rollbacks(kind=RecordKind.ESCALATION)
    assert (record.id, record.target, record.reason_code) == (key, d.target, d.reason_code)
    kinds = [e.kind for e in await journal.timeline(key)]
    assert kinds == ["escalated", "escalation_repeated"]
    # An escalation record is not a rollback: no cooldown, nothing in flight.
    history = await journal.history(d.target)
    assert history.last_finished is None and history.in_flight is None


async def test_a_grouped_page_is_one_record_naming_its_members(journal: Journal) -> None:
    subject = Escalations(RecordingPager(), journal, POLICY)
    for name in ("a", "b", "c"):
        await subject.escalate(signal(name), escalation(name), NOW)
    groups = [
        r for r in await journal.list_rollbacks(kind=RecordKind.ESCALATION) if r.target.name == "*"
    ]
    [group] = groups
    assert group.reason.startswith("3 Deployments in namespace shop")
    assert (await journal.rollback_details(group.id)) == {"members": ["a", "b", "c"]}


async def test_members_who_join_an_open_group_survive_two_restarts(journal: Journal) -> None:
    first = RecordingPager()
    subject = Escalations(first, journal, POLICY)
    for name in ("a", "b", "c"):
        await subject.escalate(signal(name), escalation(name), NOW)
    later = NOW + timedelta(seconds=2)
    # A restart, then "d" joins the group that is still waiting to go out.
    await Escalations(RecordingPager(), journal, POLICY).escalate(
        signal("d", later), escalation("d"), later
    )
    # A second restart, then "e" joins: the page must still name all five.
    pager = RecordingPager()
    grouped = f"esc-group-shop-not-a-deploy-problem-{int(NOW.timestamp())}"
    pager.queued.append((first.sent()[-1], None))  # the pending grouped page, as in the outbox
    latest = NOW + timedelta(seconds=4)
    key = await Escalations(pager, journal, POLICY).escalate(
        signal("e", latest), escalation("e"), latest
    )
    assert key == grouped
    [page] = pager.sent()
    assert sorted(page.details["deployments"]) == ["a", "b", "c", "d", "e"]
