"""A rollback's start page left in an outbox is withdrawn once the cluster says the rollback is over.

The rule (``judge_trigger``) is pure: the row, what the Deployment's state
annotation says, and the channel's pending rows. The Notifier applies it
before each send of a start page; the last tests run it over an in-memory
outbox with a channel that records what it was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from rollbackd.journal import Journal
from rollbackd.metrics import Metrics
from rollbackd.model import Phase, Target
from rollbackd.notify import ChannelError, Notification, NotificationKind, Notifier
from rollbackd.notify.outbox import OutboxStore, PendingEntry
from rollbackd.notify.stale import ENDED_PHASES, SEND, judge_trigger, tied_to_rollback
from rollbackd.state import RollbackState

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
SHOP = Target("shop", "checkout")
R = "rb-20260301-030000-aaaaaa"
NEWER = "rb-20260301-031500-bbbbbb"
OLDER = "rb-20260301-020000-cccccc"
LIVE_PHASES = [
    Phase.PENDING,
    Phase.PENDING_APPROVAL,
    Phase.PLANNING,
    Phase.ROLLING_BACK,
    Phase.VERIFYING,
]


def page(
    kind: NotificationKind = NotificationKind.ROLLBACK_STARTED,
    *,
    key: str = R,
    rollback_id: str | None = R,
    resolves: bool = False,
    at: datetime = T0,
) -> Notification:
    details = {"rollback_id": rollback_id} if rollback_id else {}
    return Notification(
        kind=kind,
        severity="critical" if kind is NotificationKind.ESCALATION else "info",
        dedup_key=key,
        target=SHOP,
        summary=f"{kind} {key}",
        details=details,
        created_at=at,
        resolves=resolves,
    )


def state(
    phase: Phase, rollback_id: str = R, *, started_at: datetime = T0, holder: str = "replica-b"
) -> RollbackState:
    return RollbackState(
        rollback_id=rollback_id,
        phase=phase,
        from_revision=2,
        to_revision=1,
        started_at=started_at,
        updated_at=started_at,
        reason_code="error_ratio",
        holder=holder,
        term=3,
    )


def pending(row_id: int, key: str = R, *, resolves: bool = False) -> PendingEntry:
    kind = "rollback_completed" if resolves else "rollback_started"
    return PendingEntry(row_id, key, kind, resolves, T0, T0)


ALONE = [pending(1)]  # the trigger itself, nothing after it


# --- the rule ------------------------------------------------------------------


def test_the_phases_that_end_a_rollback() -> None:
    assert ENDED_PHASES == {
        Phase.ROLLBACK_COMPLETED,
        Phase.ROLLBACK_FAILED,
        Phase.ESCALATED,
        Phase.SUPERSEDED,
        Phase.REJECTED,
        Phase.SKIPPED,
        Phase.DRY_RUN,
    }
    assert set(Phase) == ENDED_PHASES | set(LIVE_PHASES)


@pytest.mark.parametrize("phase", sorted(ENDED_PHASES))
def test_a_start_page_of_a_rollback_that_ended_elsewhere_is_withdrawn(phase: Phase) -> None:
    verdict = judge_trigger(page(), state(phase), ALONE)
    assert not verdict.send
    assert verdict.reason.startswith(f"superseded: rollback {R} ended under another leader")
    assert str(phase) in verdict.reason and "replica-b" in verdict.reason


@pytest.mark.parametrize("phase", LIVE_PHASES)
def test_a_start_page_of_a_rollback_still_in_flight_is_sent(phase: Phase) -> None:
    assert judge_trigger(page(), state(phase), ALONE) == SEND


def test_an_approval_request_is_sent_while_its_rollback_waits_for_approval() -> None:
    request = page(NotificationKind.APPROVAL_REQUESTED)
    assert judge_trigger(request, state(Phase.PENDING_APPROVAL), ALONE) == SEND


@pytest.mark.parametrize("phase", [Phase.PLANNING, Phase.VERIFYING, Phase.REJECTED])
def test_an_approval_request_for_a_decided_rollback_is_withdrawn(phase: Phase) -> None:
    verdict = judge_trigger(page(NotificationKind.APPROVAL_REQUESTED), state(phase), ALONE)
    assert not verdict.send
    assert str(phase) in verdict.reason


@pytest.mark.parametrize("phase", [Phase.ROLLING_BACK, Phase.ROLLBACK_COMPLETED])
def test_a_newer_rollback_on_the_deployment_withdraws_the_older_start_page(phase: Phase) -> None:
    newer = state(phase, NEWER, started_at=T0 + timedelta(minutes=15))
    verdict = judge_trigger(page(), newer, ALONE)
    assert not verdict.send
    assert verdict.reason.startswith(f"superseded: rollback {R} was replaced by")
    assert NEWER in verdict.reason


def test_an_older_rollback_on_the_deployment_says_nothing_about_this_one() -> None:
    # This rollback's own state never landed: the cluster cannot tell, so it is sent.
    older = state(Phase.ROLLBACK_COMPLETED, OLDER, started_at=T0 - timedelta(hours=1))
    assert judge_trigger(page(), older, ALONE) == SEND


@pytest.mark.parametrize(
    "cluster",
    [
        state(Phase.ROLLBACK_COMPLETED),
        state(Phase.ESCALATED, NEWER, started_at=T0 + timedelta(minutes=15)),
    ],
    ids=["ended", "newer"],
)
def test_a_pending_resolve_of_the_same_key_lets_the_trigger_go_first(
    cluster: RollbackState,
) -> None:
    # Trigger then resolve from one outbox is harmless: the resolve closes it.
    rows = [pending(1), pending(2, resolves=True)]
    assert judge_trigger(page(), cluster, rows) == SEND


def test_a_pending_resolve_of_another_key_does_not_count() -> None:
    rows = [pending(1), pending(2, NEWER, resolves=True), pending(3, OLDER)]
    assert not judge_trigger(page(), state(Phase.ROLLBACK_COMPLETED), rows).send


def test_when_the_cluster_cannot_tell_the_page_is_sent() -> None:
    # Cache not synced, Deployment missing, no or unreadable annotation: all None.
    assert judge_trigger(page(), None, ALONE) == SEND


@pytest.mark.parametrize(
    "n",
    [
        page(NotificationKind.ESCALATION),
        page(NotificationKind.DRY_RUN),
        page(NotificationKind.ROLLBACK_COMPLETED, resolves=True),
        page(NotificationKind.SUPERSEDED, resolves=True),
        page(key="esc-shop-checkout-1", rollback_id=None),
        page(key="esc-shop-checkout-1"),  # rollback_id differs from the key
    ],
    ids=["escalation", "dry-run", "resolve", "superseded-resolve", "no-rollback", "other-key"],
)
def test_pages_that_are_not_a_rollbacks_start_page_are_never_judged(n: Notification) -> None:
    # An escalation may be the only record of an incident; a resolve closes one.
    ended = state(Phase.ESCALATED)
    assert judge_trigger(n, ended, [pending(1, n.dedup_key)]) == SEND
    assert tied_to_rollback(n) is False


# --- the Notifier applies it -----------------------------------------------------


class Recorder:
    """A channel that records what it was given; fails while ``failing`` is set."""

    name = "pager"

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.failing = False
        self.attempts = 0

    async def send(self, n: Notification) -> None:
        self.attempts += 1
        if self.failing:
            raise ChannelError("503 from the pager", retryable=True)
        self.sent.append((n.dedup_key, n.resolves))


class Cluster:
    """The watch cache as the Notifier sees it: one target's recorded state, or unknown."""

    def __init__(self) -> None:
        self.state: RollbackState | None = None
        self.asked: list[Target] = []

    def __call__(self, target: Target) -> RollbackState | None:
        self.asked.append(target)
        return self.state


@pytest.fixture
async def journal() -> AsyncIterator[Journal]:
    j = await Journal.open(":memory:")
    try:
        yield j
    finally:
        await j.close()


def notifier_for(
    journal: Journal, channel: Recorder, cluster: Callable[[Target], RollbackState | None]
) -> tuple[Notifier, Metrics]:
    metrics = Metrics()
    notifier = Notifier(
        [channel],
        journal=journal,
        metrics=metrics,
        failover_after=None,
        initial_backoff=0.05,
        max_backoff=0.1,
    )
    notifier.rollback_state = cluster
    return notifier, metrics


def withdrawn_count(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "rollbackd_notifications_total", {"channel": "pager", "result": "withdrawn"}
    )
    return value or 0.0


async def test_a_tried_start_page_is_withdrawn_once_the_rollback_ended_elsewhere(
    journal: Journal,
) -> None:
    channel, cluster = Recorder(), Cluster()
    channel.failing = True  # the pager is down while this replica leads
    cluster.state = state(Phase.ROLLING_BACK, holder="replica-a")
    notifier, metrics = notifier_for(journal, channel, cluster)
    async with notifier:
        await notifier.enqueue(page(at=datetime.now(UTC)))
        for _ in range(500):  # tried, retried: the rollback is live
            if channel.attempts >= 2:
                break
            await asyncio.sleep(0.01)
        assert channel.attempts >= 2
        [tried] = await OutboxStore(journal).rows()
        assert tried.state == "pending"
        # Another leader finished the rollback; the pager is back.
        cluster.state = state(Phase.ROLLBACK_COMPLETED)
        channel.failing = False
        assert await notifier.drain(5)

    assert channel.sent == []
    [row] = await OutboxStore(journal).rows()
    assert row.state == "withdrawn" and row.attempts >= 2
    assert row.last_error.startswith(f"superseded: rollback {R} ended under another leader")
    assert withdrawn_count(metrics) == 1
    assert cluster.asked and set(cluster.asked) == {SHOP}
    # The rollback's timeline says why no page went out, for the review.
    [entry] = [e for e in await journal.timeline(R) if e.kind == "page_withdrawn"]
    assert entry.message == row.last_error and entry.data["channel"] == "pager"


async def test_a_trigger_and_its_resolve_in_one_outbox_both_go_out_in_order(
    journal: Journal,
) -> None:
    channel, cluster = Recorder(), Cluster()
    cluster.state = state(Phase.ROLLBACK_COMPLETED)
    notifier, metrics = notifier_for(journal, channel, cluster)
    # Both queued before any worker runs: this replica finished the rollback itself.
    await notifier.enqueue(page(at=datetime.now(UTC)))
    await notifier.enqueue(page(NotificationKind.ROLLBACK_COMPLETED, resolves=True))
    async with notifier:
        assert await notifier.drain(5)
    assert channel.sent == [(R, False), (R, True)]
    assert withdrawn_count(metrics) == 0


@pytest.mark.parametrize("cluster_says", ["unknown", "broken"])
async def test_a_cluster_that_cannot_be_read_never_holds_a_page_back(
    journal: Journal, cluster_says: str
) -> None:
    channel = Recorder()

    def unknown(target: Target) -> RollbackState | None:
        return None

    def broken(target: Target) -> RollbackState | None:
        raise RuntimeError("watch cache exploded")

    notifier, metrics = notifier_for(
        journal, channel, unknown if cluster_says == "unknown" else broken
    )
    async with notifier:
        await notifier.enqueue(page(at=datetime.now(UTC)))
        assert await notifier.drain(5)
    assert channel.sent == [(R, False)]
    [row] = await OutboxStore(journal).rows()
    assert row.state == "delivered"
    assert withdrawn_count(metrics) == 0


async def test_an_escalation_of_an_ended_rollback_is_still_sent(journal: Journal) -> None:
    channel, cluster = Recorder(), Cluster()
    cluster.state = state(Phase.ESCALATED)
    notifier, _ = notifier_for(journal, channel, cluster)
    async with notifier:
        await notifier.enqueue(page(NotificationKind.ESCALATION, at=datetime.now(UTC)))
        assert await notifier.drain(5)
    assert channel.sent == [(R, False)]
    assert cluster.asked == []  # not even asked
