"""The dispatcher: one rollback per target, joins, one page per anomaly, dry runs recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.dispatch import Dispatcher
from rollbackd.escalation import Escalations
from rollbackd.journal.records import DecisionNote
from rollbackd.metrics import Metrics
from rollbackd.model import (
    ANNOTATION_ROLLBACK,
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    RevisionInfo,
    Rollback,
    Signal,
    SignalSource,
    SignalStatus,
    Target,
)
from rollbackd.notify.base import Notification, NotificationKind
from rollbackd.pending import Accepted, PendingSignals
from rollbackd.state import RollbackState, encode_state
from rollbackd.testing.stack import wait_for

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CART = Target("shop", "cart")


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "cart"}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def facts(*revisions: RevisionInfo) -> ClusterFacts:
    revisions = revisions or (
        RevisionInfo(
            2, "cart-b", "u2", NOW - timedelta(minutes=5), template("cart:2"), ("cart:2",)
        ),
        RevisionInfo(
            1,
            "cart-a",
            "u1",
            NOW - timedelta(days=2),
            template("cart:1"),
            ("cart:1",),
            replaced_at=NOW - timedelta(minutes=5),
        ),
    )
    return ClusterFacts(
        target=CART,
        exists=True,
        uid="dep-uid",
        template=revisions[0].template,
        revisions=revisions,
        rollout_started_at=revisions[0].created_at,
    )


def signal(key: str, *, source: SignalSource = SignalSource.ALERTMANAGER, **kw: Any) -> Signal:
    values: dict[str, Any] = {
        "target": CART,
        "source": source,
        "name": "DeploymentHighErrorRatio",
        "status": SignalStatus.FIRING,
        "started_at": NOW - timedelta(minutes=2),
        "observed_at": NOW,
        "key": key,
    }
    values.update(kw)
    return Signal(**values)


class FakeJournal:
    def __init__(self) -> None:
        self.history_value = History()
        self.decisions: list[tuple[Decision, str | None]] = []
        self.rollbacks: dict[str, Rollback] = {}
        self.events: list[tuple[str | None, str]] = []
        self.accepted: dict[int, Signal] = {}  # the durable queue: row id -> signal
        self.settled: set[int] = set()
        self.fail_decisions = 0
        self.history_delay = 0.0  # also delays record_decision
        self.writes = 0  # transactions: each one a trip to the journal's thread

    async def history(self, target: Target) -> History:
        await asyncio.sleep(self.history_delay)  # a journal read takes time: paths can overlap
        return self.history_value

    async def record_decision(
        self,
        decision: Decision,
        *,
        signal_key: str,
        at: datetime,
        rollback_id: str | None = None,
        covers: Sequence[int] = (),
        note: DecisionNote | None = None,
    ) -> int:
        await asyncio.sleep(self.history_delay)
        self.writes += 1
        if self.fail_decisions:
            self.fail_decisions -= 1
            raise OSError("journal unavailable")
        self.decisions.append((decision, rollback_id))
        if note is not None:
            self.events.append((note.rollback_id, note.kind))
        self.settled.update(covers)
        return len(self.decisions)

    async def get_rollback(self, rollback_id: str) -> Rollback | None:
        return self.rollbacks.get(rollback_id)

    async def link_decision(self, decision_id: int, record_id: str) -> None:
        decision, _ = self.decisions[decision_id - 1]
        self.decisions[decision_id - 1] = (decision, record_id)

    async def last_event(
        self, target: Target, kind: str, *, since: datetime, reason_code: str | None = None
    ) -> dict[str, Any] | None:
        return None

    async def undecided_signals(
        self, *, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, Signal]]:
        rows = [
            (row_id, s)
            for row_id, s in sorted(self.accepted.items())
            if row_id > after_id and row_id not in self.settled
        ]
        return rows[:limit]

    async def save_rollback(
        self, rollback: Rollback, *, details: Mapping[str, Any] | None = None
    ) -> None:
        self.rollbacks[rollback.id] = rollback

    async def record_event(
        self,
        rollback_id: str | None,
        target: Target,
        kind: str,
        message: str,
        *,
        at: datetime,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.writes += 1
        self.events.append((rollback_id, kind))


class Harness:
    def __init__(self, *, policy: Policy | None = None) -> None:
        self.journal = FakeJournal()
        self.metrics = Metrics()
        self.pages: list[Notification] = []
        self.facts = facts()
        self.started: list[Rollback] = []
        self.release = asyncio.Event()
        self.dispatcher = Dispatcher(
            facts=lambda target, now: self.facts,
            policy_for=lambda target, annotations: policy or Policy(min_stable=timedelta(0)),
            journal=self.journal,
            metrics=self.metrics,
            run_rollback=self.run_rollback,
            escalations=Escalations(self, self.journal),
            clock=lambda: NOW,
        )

    # The pager, as the escalation logic sees it.
    async def enqueue(self, n: Notification, *, not_before: datetime | None = None) -> None:
        self.pages.append(n)

    async def withdraw(self, dedup_keys: Sequence[str], *, reason: str) -> int:
        return 0

    async def revise(self, n: Notification) -> int:
        return 0

    async def run_rollback(self, rollback: Rollback, decision: Decision) -> Rollback:
        self.started.append(rollback)
        await self.release.wait()
        return replace(rollback, phase=Phase.ROLLBACK_COMPLETED, finished_at=NOW)


async def test_alerts_and_polls_for_one_regression_start_exactly_one_rollback() -> None:
    h = Harness()
    first = await h.dispatcher.handle(signal("am:1"))
    again = await h.dispatcher.handle(signal("prom:1", source=SignalSource.PROMETHEUS))
    third = await h.dispatcher.handle(signal("am:2"))
    await asyncio.sleep(0)

    assert first.action is Action.ROLLBACK
    assert again.action is Action.JOIN and third.action is Action.JOIN
    assert len(h.started) == 1
    rollback_id = h.started[0].id
    assert first.rollback_id == again.rollback_id == rollback_id == third.rollback_id
    assert [rid for _, rid in h.journal.decisions] == [rollback_id] * 3
    assert h.journal.events.count((rollback_id, "signal_joined")) == 2
    h.release.set()
    finished = await h.dispatcher.wait(CART)
    assert finished is not None and finished.phase is Phase.ROLLBACK_COMPLETED
    assert h.dispatcher.in_flight == {}


async def test_a_joining_signal_is_noted_on_the_timeline_with_its_decision_in_one_write() -> None:
    # Every decision in an alert storm is a join: its note and its record used
    # to be two transactions, each a trip through the journal's busy thread.
    h = Harness()
    await h.dispatcher.handle(signal("am:1"))
    writes = h.journal.writes
    joined = await h.dispatcher.handle(signal("am:2"))
    assert joined.action is Action.JOIN
    assert h.journal.events[-1] == (joined.rollback_id, "signal_joined")
    assert h.journal.writes - writes == 1
    h.release.set()
    await h.dispatcher.wait(CART)


async def test_escalation_pages_once_per_incident_not_once_per_alert() -> None:
    h = Harness()
    only_revision = facts(
        RevisionInfo(1, "cart-a", "u1", NOW - timedelta(minutes=5), template("cart:1"), ("cart:1",))
    )
    h.facts = only_revision
    for key in ("am:1", "prom:1", "am:1-resent"):
        decision = await h.dispatcher.handle(signal(key))
        assert decision.action is Action.ESCALATE
        assert decision.reason_code == "no_previous_revision"

    assert len(h.pages) == 1
    page = h.pages[0]
    assert page.kind is NotificationKind.ESCALATION and page.severity == "critical"
    assert page.summary.startswith("shop/cart: manual rollback needed")
    # Another anomaly start for the same Deployment and reason is the same incident.
    await h.dispatcher.handle(signal("am:9", started_at=NOW - timedelta(seconds=5)))
    assert len(h.pages) == 1


async def test_breach_after_an_escalated_rollback_does_not_page_again() -> None:
    h = Harness()
    failed = Rollback(
        id="rb-1",
        target=CART,
        phase=Phase.ESCALATED,
        started_at=NOW - timedelta(minutes=1),
        updated_at=NOW,
        finished_at=NOW - timedelta(seconds=10),
    )
    h.journal.history_value = History(last_finished=failed, restored_revisions=(2,))
    restored = facts(
        RevisionInfo(
            2,
            "cart-b",
            "u2",
            NOW - timedelta(minutes=5),
            template("cart:1"),
            ("cart:1",),
            restored_by="rb-1",
        ),
        RevisionInfo(
            1,
            "cart-a",
            "u1",
            NOW - timedelta(days=2),
            template("cart:0"),
            ("cart:0",),
            replaced_at=NOW - timedelta(minutes=5),
        ),
    )
    h.facts = restored
    decision = await h.dispatcher.handle(signal("am:1"))
    assert decision.action is Action.ESCALATE
    assert h.pages == []  # the failed rollback already paged for this anomaly
    assert ("rb-1", "signal_after_escalation") in h.journal.events
    assert h.started == []


async def test_dry_run_records_the_would_be_rollback_and_starts_nothing() -> None:
    h = Harness(policy=Policy(min_stable=timedelta(0), dry_run=True))
    decision = await h.dispatcher.handle(signal("am:1"))
    assert decision.action is Action.DRY_RUN
    assert h.started == []
    (recorded,) = h.journal.rollbacks.values()
    assert recorded.phase is Phase.DRY_RUN
    assert (recorded.from_revision, recorded.to_revision) == (2, 1)
    # Chat hears what would have been done; the notice is keyed by the record.
    [notice] = h.pages
    assert (notice.kind, notice.severity, notice.dedup_key) == (
        NotificationKind.DRY_RUN,
        "info",
        recorded.id,
    )


async def test_a_crashing_rollback_task_frees_the_target_for_the_next_signal() -> None:
    h = Harness()

    async def crash(rollback: Rollback, decision: Decision) -> Rollback:
        raise RuntimeError("boom")

    h.dispatcher._run_rollback = crash  # type: ignore[assignment]
    await h.dispatcher.handle(signal("am:1"))
    with pytest.raises(RuntimeError):
        await h.dispatcher.wait(CART)
    await asyncio.sleep(0)
    assert h.dispatcher.in_flight == {}


async def test_decisions_are_counted_by_action_and_reason() -> None:
    h = Harness()
    await h.dispatcher.handle(signal("am:1"))
    await h.dispatcher.handle(signal("am:2"))
    text = h.metrics.render().decode()
    assert 'rollbackd_decisions_total{action="rollback",reason="rollback"} 1.0' in text
    assert 'rollbackd_decisions_total{action="join",reason="rollback_in_flight"} 1.0' in text
    h.release.set()
    await h.dispatcher.wait(CART)


async def test_the_decision_is_journaled_before_the_page_goes_out() -> None:
    h = Harness()
    h.facts = facts(
        RevisionInfo(1, "cart-a", "u1", NOW - timedelta(minutes=5), template("cart:1"), ("cart:1",))
    )
    journaled_when_paged: list[int] = []

    async def enqueue(n: Notification, *, not_before: datetime | None = None) -> None:
        journaled_when_paged.append(len(h.journal.decisions))

    h.enqueue = enqueue  # type: ignore[method-assign]

    await h.dispatcher.handle(signal("am:1"))

    assert journaled_when_paged == [1]


# --- the durable queue: batches, replay, failure ----------------------------------


async def run_until(h: Harness, pending: PendingSignals, done: Callable[[], bool]) -> None:
    """Run the dispatcher loop until ``done()`` holds (or fail after 5 s)."""
    task = asyncio.create_task(h.dispatcher.run(pending))

    async def probe() -> bool:
        return done()

    try:
        await wait_for(
            probe, timeout=5, what="the dispatcher to settle the signals", interval=0.005
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_storm_for_one_target_is_one_decision_that_settles_every_signal() -> None:
    h = Harness()
    pending = PendingSignals()
    pending.reload_needed = False
    storm = {i: signal(f"am:{i}") for i in range(1, 501)}
    h.journal.accepted.update(storm)
    pending.add(Accepted(i, s) for i, s in storm.items())

    await run_until(h, pending, lambda: len(h.journal.settled) == 500)

    assert len(h.journal.decisions) == 1 and len(h.started) == 1
    h.release.set()


async def test_an_alert_every_few_milliseconds_costs_a_few_decisions_not_one_each() -> None:
    """The dispatcher kept pace with a storm by deciding after every webhook: most of the
    process's CPU, and work the webhooks' answers queued behind. A target now rests
    between decisions, and every signal is still settled."""
    h = Harness()
    pending = PendingSignals(rest=0.2)
    pending.reload_needed = False
    task = asyncio.create_task(h.dispatcher.run(pending))
    started = asyncio.get_running_loop().time()
    for i in range(1, 101):  # 0.5 s of webhooks, one every 5 ms
        s = signal(f"am:{i}")
        h.journal.accepted[i] = s
        pending.add([Accepted(i, s)])
        await asyncio.sleep(0.005)
    seconds = asyncio.get_running_loop().time() - started
    try:

        async def settled() -> bool:
            return len(h.journal.settled) == 100

        await wait_for(settled, timeout=5, what="every signal settled", interval=0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # One decision at once, then one per rest at most (a slow machine stretches the feed).
    assert len(h.journal.decisions) <= 2 + seconds / 0.2, len(h.journal.decisions)
    h.release.set()


async def test_a_rollback_worthy_breach_is_not_outvoted_by_resolved_alerts_beside_it() -> None:
    h = Harness()
    resolved = [replace(signal(f"am:r{i}"), status=SignalStatus.RESOLVED) for i in range(5)]
    decision = await h.dispatcher.handle_batch([*resolved, signal("am:fire")])
    assert decision.action is Action.ROLLBACK
    h.release.set()


async def test_undecided_signals_in_the_journal_are_replayed_at_start() -> None:
    h = Harness()
    h.journal.accepted.update({7: signal("am:7"), 8: signal("am:8")})
    h.journal.settled.add(7)  # decided by an earlier process: not replayed

    await run_until(h, PendingSignals(), lambda: 8 in h.journal.settled)

    assert len(h.journal.decisions) == 1
    h.release.set()


async def test_a_batch_whose_decision_fails_is_decided_later_from_the_journal() -> None:
    h = Harness()
    h.dispatcher._retry_delay = 0.01
    h.journal.fail_decisions = 1
    h.journal.accepted[1] = signal("am:1")
    pending = PendingSignals()
    pending.reload_needed = False
    pending.add([Accepted(1, h.journal.accepted[1])])

    await run_until(h, pending, lambda: 1 in h.journal.settled)

    assert len(h.journal.decisions) == 1
    h.release.set()


async def test_overflowed_signals_are_paged_back_in_from_the_journal() -> None:
    h = Harness()
    targets = [Target("shop", f"svc-{i}") for i in range(30)]
    h.facts = facts()
    h.dispatcher._facts = lambda target, now: replace(h.facts, target=target)
    pending = PendingSignals(max_in_memory=10)
    pending.reload_needed = False
    for row_id, target in enumerate(targets, start=1):
        s = replace(signal(f"am:{row_id}"), target=target)
        h.journal.accepted[row_id] = s
        pending.add([Accepted(row_id, s)])
    assert len(pending) == 10 and pending.reload_needed

    await run_until(h, pending, lambda: len(h.journal.settled) == 30)

    assert {d.target for d, _ in h.journal.decisions} == set(targets)
    h.release.set()


async def test_a_manual_request_and_an_alert_at_once_start_one_rollback() -> None:
    h = Harness()
    h.journal.history_delay = 0.05
    manual = replace(signal("manual:1"), source=SignalSource.MANUAL, name="manual")

    decisions = await asyncio.gather(
        h.dispatcher.handle(manual), h.dispatcher.handle_batch([signal("am:1")], covers=[1])
    )

    assert sorted(d.action for d in decisions) == [Action.JOIN, Action.ROLLBACK]
    assert len(h.started) == 1
    assert decisions[0].rollback_id == decisions[1].rollback_id == h.started[0].id
    h.release.set()
    await h.dispatcher.wait(CART)


async def test_per_target_locks_are_dropped_once_nobody_needs_them() -> None:
    h = Harness()
    await asyncio.gather(*(h.dispatcher.handle(signal(f"am:{i}")) for i in range(5)))
    assert len(h.dispatcher._locks) == 0
    h.release.set()


async def test_a_rollback_whose_final_state_write_failed_does_not_hold_the_target() -> None:
    # The journal says rb-old ended; the Deployment still says VERIFYING
    # because the API was down when the terminal state was written.
    h = Harness()
    state = encode_state(RollbackState("rb-old", Phase.VERIFYING, 2, 1, NOW, NOW, "rollback"))
    h.facts = replace(h.facts, annotations={ANNOTATION_ROLLBACK: state})
    h.journal.rollbacks["rb-old"] = Rollback(
        id="rb-old",
        target=CART,
        phase=Phase.ESCALATED,
        started_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
    )
    decision = await h.dispatcher.handle(signal("am:1"))
    assert decision.action is not Action.JOIN
    assert decision.rollback_id != "rb-old"


async def test_an_annotated_rollback_the_journal_does_not_know_is_joined() -> None:
    h = Harness()
    state = encode_state(RollbackState("rb-other", Phase.VERIFYING, 2, 1, NOW, NOW, "rollback"))
    h.facts = replace(h.facts, annotations={ANNOTATION_ROLLBACK: state})
    decision = await h.dispatcher.handle(signal("am:1"))
    assert (decision.action, decision.rollback_id) == (Action.JOIN, "rb-other")
