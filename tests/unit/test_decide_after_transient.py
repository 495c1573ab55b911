"""A rollback the cluster's API stopped (retry budget spent) does not silence the next signal.

Measured before: one 503 on the executor's first GET ended the rollback
ESCALATED, and the cooldown then skipped every later breach signal while the
bad version stayed live. A rollback ended by a failing API changed nothing
worth waiting out, so the next signal decides afresh.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from rollbackd.decide import ReasonCode, decide
from rollbackd.model import (
    REASON_KUBE_UNAVAILABLE,
    REASON_WRITE_CONFLICTS,
    RETRYABLE_REASON_CODES,
    Action,
    History,
    Phase,
    Policy,
    Rollback,
)
from tests.unit.test_decide import CART, NOW, facts, signal


def escalated(reason_code: str, *, ago: timedelta = timedelta(minutes=1)) -> Rollback:
    return Rollback(
        id="rb-1",
        target=CART,
        phase=Phase.ESCALATED,
        started_at=NOW - ago - timedelta(seconds=30),
        updated_at=NOW - ago,
        finished_at=NOW - ago,
        from_revision=7,
        to_revision=6,
        reason_code=reason_code,
        reason="...",
    )


@pytest.mark.parametrize("reason_code", sorted(RETRYABLE_REASON_CODES))
def test_the_next_signal_retries_a_rollback_the_api_stopped(reason_code: str) -> None:
    history = History(last_finished=escalated(reason_code))

    decision = decide(signal(), facts(), history, Policy(), NOW)

    assert decision.action is Action.ROLLBACK, decision.reason
    assert (decision.from_revision, decision.to_revision) == (7, 6)


def test_both_budget_endings_are_retryable() -> None:
    assert {REASON_KUBE_UNAVAILABLE, REASON_WRITE_CONFLICTS} <= RETRYABLE_REASON_CODES


def test_any_other_escalated_rollback_still_starts_the_cooldown() -> None:
    history = History(last_finished=escalated("verify_breach"))

    decision = decide(signal(), facts(), history, Policy(), NOW)

    assert decision.action is Action.SKIP
    assert decision.reason_code == ReasonCode.COOLDOWN
