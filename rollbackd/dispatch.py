"""From an accepted signal to an action: decide, record, then start or join.

The dispatcher is the single place that turns Decisions into work. It keeps
one executor task per target (safety rule 3: single flight), so a duplicate
alert, a poller breach and a manual request for the same Deployment all end
up in the same rollback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from rollbackd.escalation import Escalations, RecordsWriter
from rollbackd.journal.records import DecisionNote
from rollbackd.keyedlocks import KeyedLocks
from rollbackd.model import (
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    Rollback,
    Signal,
    Target,
)
from rollbackd.pending import PendingSignals
from rollbackd.reasons import ReasonCode
from rollbackd.records import already_escalated, annotated_rollback, rollback_for
from rollbackd.redecide import Redecisions
from rollbackd.supervision import cancel_and_wait
from rollbackd.weigh import strongest

log = structlog.get_logger("rollbackd.dispatch")


class JournalLike(RecordsWriter, Protocol):
    async def history(self, target: Target) -> History: ...
    async def record_decision(
        self,
        decision: Decision,
        *,
        signal_key: str,
        at: datetime,
        rollback_id: str | None = None,
        covers: Sequence[int] = (),
        note: DecisionNote | None = None,
    ) -> int: ...
    async def link_decision(self, decision_id: int, record_id: str) -> None: ...
    async def get_rollback(self, rollback_id: str) -> Rollback | None: ...
    async def undecided_signals(
        self, *, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[int, Signal]]: ...


class MetricsLike(Protocol):
    @property
    def decisions_total(self) -> Any: ...
    @property
    def time_to_detect_seconds(self) -> Any: ...


class RunRollback(Protocol):
    def __call__(self, rollback: Rollback, decision: Decision) -> Awaitable[Rollback]: ...


@dataclass
class _Running:
    rollback: Rollback
    task: asyncio.Task[Rollback]


class Dispatcher:
    """Consumes signals, applies ``decide``, and owns the executor tasks."""

    def __init__(
        self,
        *,
        facts: Callable[[Target, datetime], ClusterFacts],
        policy_for: Callable[[Target, Mapping[str, str]], Policy],
        journal: JournalLike,
        metrics: MetricsLike,
        run_rollback: RunRollback,
        escalations: Escalations,
        clock: Callable[[], datetime],
        retry_delay: float = 1.0,
    ) -> None:
        self._retry_delay = retry_delay
        self._facts = facts
        self._policy_for = policy_for
        self._journal = journal
        self._metrics = metrics
        self._run_rollback = run_rollback
        self._escalations = escalations
        self._clock = clock
        self._running: dict[Target, _Running] = {}
        self._locks = KeyedLocks[Target]()
        # Decided again, a withdrawn proposal's signals do not page an escalation:
        # they began before the human's change, which its info page already reports.
        self._redecisions = Redecisions(
            lambda signals: self.handle_batch(signals, page_escalations=False)
        )

    @property
    def in_flight(self) -> dict[Target, Rollback]:
        return {target: running.rollback for target, running in self._running.items()}

    async def run(self, pending: PendingSignals) -> None:
        """Decide pending signals, one target at a time, until cancelled.

        All signals waiting for a target are settled by one decision, so
        decisions keep pace with any alert rate. A batch that fails stays
        undecided in the journal and is read back after a pause: one bad
        signal never stops the loop, and no accepted signal is dropped.
        """
        failures = 0
        while True:
            await pending.wait()
            if pending.reload_needed and not len(pending):
                await pending.reload(self._journal.undecided_signals)
                continue
            taken = pending.take()
            if taken is None:
                continue
            target, batch = taken
            try:
                await self.handle_batch([a.signal for a in batch], covers=[a.row_id for a in batch])
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("signal_handling_failed", target=str(target), signals=len(batch))
                # Backs off while it keeps failing (a journal that is full, say).
                await asyncio.sleep(min(self._retry_delay * 2 ** (failures - 1), 30.0))
                pending.request_reload()
            # Let the webhook run between decisions; and the reverse holds in intake.
            await asyncio.sleep(0)

    async def handle(
        self,
        signal: Signal,
        *,
        adjust_policy: Callable[[Policy], Policy] | None = None,
        page_escalations: bool = True,
    ) -> Decision:
        """Decide about one signal and act; see ``handle_batch``."""
        return await self.handle_batch(
            [signal], adjust_policy=adjust_policy, page_escalations=page_escalations
        )

    async def handle_batch(
        self,
        signals: Sequence[Signal],
        *,
        covers: Sequence[int] = (),
        adjust_policy: Callable[[Policy], Policy] | None = None,
        page_escalations: bool = True,
    ) -> Decision:
        """One decision for signals about one target; the Decision names the rollback.

        Every signal is weighed (``decide`` is pure and cheap) and the most
        actionable decision wins, so a breach that justifies a rollback is
        never outvoted by older or resolved alerts in the same batch. The
        decision is journaled, settling the signals ``covers`` names, before
        anything is done about it, so no page or patch precedes its record.

        ``adjust_policy`` and ``page_escalations`` serve a human's request: the
        human asked explicitly (no change window) and is told the refusal directly.
        """
        if not signals:
            raise ValueError("handle_batch needs at least one signal")
        target = signals[0].target
        if any(s.target != target for s in signals):
            raise ValueError("a batch holds signals of one target only")
        # Every path in (the queue, a manual request, a replay) takes the
        # target's lock, so two of them can never both decide "rollback".
        async with self._locks.hold(target):
            return await self._decide_and_act(
                signals, covers, adjust_policy=adjust_policy, page_escalations=page_escalations
            )

    async def _decide_and_act(
        self,
        signals: Sequence[Signal],
        covers: Sequence[int],
        *,
        adjust_policy: Callable[[Policy], Policy] | None,
        page_escalations: bool,
    ) -> Decision:
        target = signals[0].target
        now = self._clock()
        facts = self._facts(target, now)
        policy = self._policy_for(target, facts.annotations)
        if adjust_policy is not None:
            policy = adjust_policy(policy)
        history = await self._history(target, facts)
        signal, decision = strongest(signals, facts, history, policy, now)
        self._metrics.decisions_total.labels(
            action=str(decision.action), reason=decision.reason_code
        ).inc()
        log.info(
            "decision",
            target=str(target),
            signal=signal.name,
            source=str(signal.source),
            action=str(decision.action),
            reason_code=decision.reason_code,
            reason=decision.reason,
            signals=len(signals),
        )
        new_rollback = self._new_rollback(decision, now, approve=policy.approve)
        repeat_of = (
            already_escalated(history, signal) if decision.action is Action.ESCALATE else None
        )
        rollback_id = new_rollback.id if new_rollback else decision.rollback_id or repeat_of
        decision_id = await self._journal.record_decision(
            decision,
            signal_key=signal.key,
            at=now,
            rollback_id=rollback_id,
            covers=covers,
            note=_note(signal, decision, repeat_of),
        )
        self._redecisions.remember(decision, rollback_id, signals)
        record_id = await self._act(
            signal, decision, now, new_rollback, repeat_of, page_escalations
        )
        if record_id is not None and rollback_id is None:
            # The escalation's record exists only now: link the decision to it.
            await self._journal.link_decision(decision_id, record_id)
            rollback_id = record_id
        return replace(decision, rollback_id=rollback_id)

    @staticmethod
    def _new_rollback(decision: Decision, now: datetime, *, approve: bool) -> Rollback | None:
        if decision.action is Action.ROLLBACK:
            # Approve mode: the executor proposes and waits for a human first.
            return rollback_for(decision, now, Phase.PENDING_APPROVAL if approve else Phase.PENDING)
        if decision.action is Action.DRY_RUN:
            return rollback_for(decision, now, Phase.DRY_RUN)
        return None

    async def _history(self, target: Target, facts: ClusterFacts) -> History:
        history = await self._journal.history(target)
        running = self._running.get(target)
        if running is not None:
            return replace(history, in_flight=running.rollback)
        # The journal may still list a rollback that died with an earlier
        # process; the Deployment's phase annotation is what another rollbackd
        # (a one-shot CLI run, or a leader being replaced) is working on now.
        annotated = annotated_rollback(facts)
        if annotated is not None:
            recorded = await self._journal.get_rollback(annotated.id)
            if recorded is not None and recorded.phase.terminal:
                # Its final state write failed (the API was down): it has ended.
                return replace(history, in_flight=None, ended_on_record=annotated.id)
        return replace(history, in_flight=annotated)

    async def _act(
        self,
        signal: Signal,
        decision: Decision,
        now: datetime,
        new_rollback: Rollback | None,
        repeat_of: str | None,
        page_escalations: bool,
    ) -> str | None:
        """Do what ``decision`` says; the id of an escalation record it opened.

        A join, or an escalation that repeats ``repeat_of`` (already paged),
        did all it does with the decision's record: its ``_note``.
        """
        if decision.action is Action.ROLLBACK and new_rollback is not None:
            self._metrics.time_to_detect_seconds.observe(
                max(0.0, (now - signal.started_at).total_seconds())
            )
            await self._launch(new_rollback, decision)
        elif decision.action is Action.ESCALATE and repeat_of is None and page_escalations:
            return await self._escalations.escalate(signal, decision, now)
        elif decision.action is Action.DRY_RUN and new_rollback is not None:
            await self._record_dry_run(new_rollback, decision, now)
        return None

    async def _launch(self, rollback: Rollback, decision: Decision) -> None:
        """Record the rollback, then start its executor task."""
        await self._journal.save_rollback(rollback)
        self._spawn(rollback, decision)

    def observe(self, rollback: Rollback) -> None:
        """Keep the in-flight view current, so joining signals see the real phase."""
        running = self._running.get(rollback.target)
        if running is not None and running.rollback.id == rollback.id:
            running.rollback = rollback

    def redecide(self, withdrawn: Rollback) -> None:
        """A proposal withdrawn because the target changed: decide its signals again."""
        running = self._running.get(withdrawn.target)
        task = running.task if running and running.rollback.id == withdrawn.id else None
        self._redecisions.decide_again(withdrawn, task)

    def adopt(self, rollback: Rollback, task_factory: Callable[[], Awaitable[Rollback]]) -> None:
        """Track a resumed rollback so new signals join it instead of starting another."""
        task = asyncio.create_task(_as_coroutine(task_factory), name=f"resume:{rollback.id}")
        self._track(rollback, task)

    def _spawn(self, rollback: Rollback, decision: Decision) -> None:
        task = asyncio.create_task(
            _as_coroutine(lambda: self._run_rollback(rollback, decision)),
            name=f"rollback:{rollback.id}",
        )
        self._track(rollback, task)

    def _track(self, rollback: Rollback, task: asyncio.Task[Rollback]) -> None:
        self._running[rollback.target] = _Running(rollback, task)

        def done(finished: asyncio.Task[Rollback]) -> None:
            current = self._running.get(rollback.target)
            if current is not None and current.task is finished:
                del self._running[rollback.target]
            self._redecisions.forget(rollback.id)
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "rollback_task_crashed",
                    rollback_id=rollback.id,
                    target=str(rollback.target),
                    error=repr(finished.exception()),
                )

        task.add_done_callback(done)

    async def _record_dry_run(self, rollback: Rollback, decision: Decision, now: datetime) -> None:
        await self._journal.save_rollback(rollback)
        await self._journal.record_event(
            rollback.id,
            decision.target,
            "dry_run",
            f"dry run: would roll {decision.target} back from revision "
            f"{decision.from_revision} to {decision.to_revision}",
            at=now,
        )
        await self._escalations.announce_dry_run(rollback, decision, now)

    async def wait(self, target: Target) -> Rollback | None:
        """Wait for the rollback in flight for ``target`` (if any) to finish."""
        running = self._running.get(target)
        return await running.task if running is not None else None

    async def stop(self, grace: float) -> None:
        """Give running rollbacks ``grace`` seconds, then cancel them.

        A cancelled rollback keeps its phase annotation on the Deployment, so
        the next leader resumes it.
        """
        await self._redecisions.stop()
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        await cancel_and_wait(pending)


def _note(signal: Signal, decision: Decision, repeat_of: str | None) -> DecisionNote | None:
    """A later signal on an existing record's timeline, so the review sees it."""
    data = {"key": signal.key, "value": signal.value}
    if decision.action is Action.JOIN and decision.rollback_id:
        if decision.reason_code == ReasonCode.ANOMALY_BEFORE_RESTORE:
            return DecisionNote(decision.rollback_id, "signal_attributed", decision.reason, data)
        joined = (
            f"{signal.source} signal {signal.name} ({signal.status}) joined the rollback in flight"
        )
        return DecisionNote(decision.rollback_id, "signal_joined", joined, data)
    if decision.action is Action.ESCALATE and repeat_of is not None:
        # The same anomaly that the failed rollback already paged for.
        still = f"{signal.name} still {signal.status}; already escalated ({decision.reason_code})"
        return DecisionNote(repeat_of, "signal_after_escalation", still, data)
    return None


async def _as_coroutine(factory: Callable[[], Awaitable[Rollback]]) -> Rollback:
    return await factory()
