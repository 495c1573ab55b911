"""Which of a batch's signals decides: the most actionable decision wins.

Pure, like ``decide``: a batch of signals for one target, the same facts,
history, policy and time; ``decide`` runs once per distinct anomaly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rollbackd.decide import decide
from rollbackd.model import Action, ClusterFacts, Decision, History, Policy, Signal

__all__ = ["strongest"]

# Most actionable first: a batch's decision is the first of these it can reach.
_ACTION_RANK = {
    Action.ROLLBACK: 0,
    Action.DRY_RUN: 1,
    Action.JOIN: 2,
    Action.ESCALATE: 3,
    Action.SKIP: 4,
}
# Distinct anomalies weighed per batch; an alert storm repeats a few of them.
_MAX_WEIGHED = 64


def strongest(
    signals: Sequence[Signal],
    facts: ClusterFacts,
    history: History,
    policy: Policy,
    now: datetime,
) -> tuple[Signal, Decision]:
    """The signal whose decision is the most actionable, and that decision.

    Signals that differ only in labels or values decide alike, so one of
    each (status, anomaly start, name, source) is weighed; ties go to the
    earliest in the batch.
    """
    weighed: dict[tuple[object, ...], Signal] = {}
    for signal in signals:
        key = (signal.status, signal.started_at, signal.name, signal.source)
        if key not in weighed and len(weighed) < _MAX_WEIGHED:
            weighed[key] = signal
    best: tuple[Signal, Decision] | None = None
    for signal in weighed.values():
        decision = decide(signal, facts, history, policy, now)
        if best is None or _ACTION_RANK[decision.action] < _ACTION_RANK[best[1].action]:
            best = (signal, decision)
    assert best is not None
    return best
