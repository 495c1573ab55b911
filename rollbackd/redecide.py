"""Deciding again: the signals behind a withdrawn approval proposal.

In approve mode a rollback may wait a long time for a human. When someone
changes the target meanwhile, the proposal no longer applies and is
withdrawn (SUPERSEDED); the signals behind it (its trigger and those that
joined it) are then decided afresh on the new revision, so a new anomaly is
never swallowed by a proposal that died. A rollback decision starts a new
proposal; an escalation is recorded but not paged (the anomaly began before
the human's change, which the withdrawal's info page reports). Kept in memory: after a restart a
withdrawn proposal's trigger is not known, the signals that joined it since are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from rollbackd.model import Action, Decision, Rollback, Signal
from rollbackd.reasons import ReasonCode
from rollbackd.supervision import cancel_and_wait

log = structlog.get_logger("rollbackd.dispatch")


class Redecisions:
    """The signals each running rollback was decided from, and the re-decisions under way."""

    def __init__(self, decide: Callable[[Sequence[Signal]], Awaitable[Decision]]) -> None:
        self._decide = decide
        self._signals: dict[str, list[Signal]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def remember(
        self, decision: Decision, rollback_id: str | None, signals: Sequence[Signal]
    ) -> None:
        """Keep the signals a ROLLBACK started with, and those that joined it in flight."""
        joined = (
            decision.action is Action.JOIN and decision.reason_code == ReasonCode.ROLLBACK_IN_FLIGHT
        )
        if rollback_id is not None and (decision.action is Action.ROLLBACK or joined):
            self._signals.setdefault(rollback_id, []).extend(signals)

    def forget(self, rollback_id: str) -> None:
        self._signals.pop(rollback_id, None)

    def decide_again(self, withdrawn: Rollback, running: asyncio.Task[Rollback] | None) -> None:
        """Once ``running`` (the withdrawn rollback's task) has ended, decide its signals again."""
        signals = self._signals.pop(withdrawn.id, [])
        if not signals:
            log.warning("redecision_without_signals", rollback_id=withdrawn.id)
            return

        async def again() -> None:
            if running is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(running)
            try:
                decision = await self._decide(signals)
            except Exception:
                log.exception("redecision_failed", withdrawn=withdrawn.id)
                return
            log.info(
                "decided_again",
                withdrawn=withdrawn.id,
                target=str(withdrawn.target),
                action=str(decision.action),
                reason_code=decision.reason_code,
                rollback_id=decision.rollback_id,
            )

        task = asyncio.create_task(again(), name=f"redecide:{withdrawn.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
