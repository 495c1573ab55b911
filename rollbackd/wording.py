"""How decisions say things: durations, lists and signal phrases for the reason sentences.

Relative durations only (``4m after``, ``3d ago``), so a decision's sentence
is the same when all its input times shift.
"""

from __future__ import annotations

from datetime import timedelta

from rollbackd.durations import format_brief as duration
from rollbackd.model import Signal, SignalSource

__all__ = ["MANUAL", "MAX_LISTED_PATHS", "ago", "duration", "listing", "signal_phrase"]

# Escalation sentences end with what the human has to do.
MANUAL = "manual rollback needed"
# How many diff paths an escalation sentence lists before "and N more".
MAX_LISTED_PATHS = 5


def signal_phrase(signal: Signal) -> str:
    """``error_ratio at 0.12 (threshold 0.05)``, or just the name without numbers.

    A pod health signal is its own summary (``pod_health: 2 of 2 pods ...``).
    """
    phrase = signal.name or "the signal"
    if signal.source is SignalSource.KUBERNETES and signal.summary:
        # Pod health names the pods, containers and reasons: that is the page.
        return signal.summary
    if signal.value is not None:
        phrase += f" at {signal.value:g}"
        if signal.threshold is not None:
            phrase += f" (threshold {signal.threshold:g})"
    return phrase


def listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:MAX_LISTED_PATHS])
    hidden = len(paths) - MAX_LISTED_PATHS
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def ago(elapsed: timedelta) -> str:
    if elapsed < timedelta(0):
        return f"{duration(elapsed)} in the future (clock skew)"
    return f"{duration(elapsed)} ago"
