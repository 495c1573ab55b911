"""The incident's window and its three durations, from the journal timeline.

- detect: the first bad sample (or, without one, the bad rollout's start)
  to rollbackd's decision;
- mitigate: the decision to the restored revision being Ready;
- verify: Ready to the end (ROLLBACK_COMPLETED, or the escalation).

The window the impact is measured over runs from the bad rollout's start
(the new ReplicaSet's creation, journaled at plan time) or else the first
bad sample, to the end of the rollback. A step that was not reached or not
recorded leaves its duration "n/a" with the reason; nothing is guessed.
Pure: the timeline's facts and ``now`` in, plain values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rollbackd.model import Phase
from rollbackd.report import Facts

# Phases that end the incident for rollbackd (the rollback's own finish time).
ENDING_PHASES = frozenset(
    {Phase.ROLLBACK_COMPLETED, Phase.ESCALATED, Phase.ROLLBACK_FAILED, Phase.SUPERSEDED}
)
NOTHING_DONE_PHASES = frozenset({Phase.DRY_RUN, Phase.SKIPPED})


@dataclass(frozen=True)
class Span:
    """One measured duration, or why it cannot be given."""

    name: str  # "detect", "mitigate", "verify"
    start: datetime | None
    end: datetime | None
    start_label: str
    end_label: str
    why_missing: str | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.why_missing is not None or self.start is None or self.end is None:
            return None
        return self.end - self.start


@dataclass(frozen=True)
class Window:
    """The incident window: what its ends are and where they come from."""

    start: datetime | None
    start_source: str
    end: datetime | None
    end_source: str
    finished: bool  # False: the rollback is still running, the end is "now"


def _rollout_started(f: Facts) -> datetime | None:
    for entry in f.timeline:
        if entry.kind == "plan":
            found = _parse(entry.data.get("rollout_started_at"))
            if found is not None:
                return found
    return None


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def incident_window(f: Facts, now: datetime) -> Window:
    """From the bad rollout's start (or the first bad sample) to the rollback's end."""
    rollout = _rollout_started(f)
    if rollout is not None:
        start, start_source = rollout, "bad rollout began (new ReplicaSet created)"
    elif f.anomaly_began is not None:
        start, start_source = f.anomaly_began, "first bad sample"
    elif f.detected_at is not None:
        start, start_source = f.detected_at, "first signal seen"
    else:
        start, start_source = None, "not recorded"
    phase = f.rollback.phase
    if f.finished_at is not None and (phase.terminal or phase in ENDING_PHASES):
        return Window(start, start_source, f.finished_at, str(phase), True)
    return Window(start, start_source, now, "now (the rollback is still running)", False)


def _decided_at(f: Facts) -> datetime | None:
    return f.decisions[0].at if f.decisions else None


def _detect(f: Facts) -> Span:
    decided = _decided_at(f)
    start, label = f.anomaly_began, "first bad sample"
    if start is None:
        start, label = _rollout_started(f), "bad rollout began"
    why = None
    if start is None:
        why = "no bad sample or rollout start was recorded (e.g. a manual rollback)"
    elif decided is None:
        why = "no decision was recorded"
    return Span("detect", start, decided, label, "decision", why)


def _mitigate(f: Facts) -> Span:
    decided = _decided_at(f)
    why = None
    if f.rollback.phase in NOTHING_DONE_PHASES:
        why = f"nothing was rolled back ({f.rollback.phase})"
    elif decided is None:
        why = "no decision was recorded"
    elif f.ready_at is None:
        why = "the restored revision never became Ready"
    return Span("mitigate", decided, f.ready_at, "decision", "restored revision Ready", why)


def _verify(f: Facts) -> Span:
    phase = f.rollback.phase
    label = "ROLLBACK_COMPLETED" if phase is Phase.ROLLBACK_COMPLETED else "escalation"
    why = None
    if phase in NOTHING_DONE_PHASES:
        why = f"nothing was rolled back ({phase})"
    elif f.ready_at is None:
        why = "verification never started: the restored revision was not Ready"
    elif phase is Phase.SUPERSEDED:
        why = "a human changed the Deployment before verification ended"
    elif phase not in (Phase.ROLLBACK_COMPLETED, Phase.ESCALATED, Phase.ROLLBACK_FAILED):
        why = f"verification has not ended (phase {phase})"
    elif f.finished_at is None:
        why = "the end was not recorded"
    return Span("verify", f.ready_at, f.finished_at, "restored revision Ready", label, why)


def spans(f: Facts) -> list[Span]:
    """Time to detect, to mitigate and to verify, in that order."""
    return [_detect(f), _mitigate(f), _verify(f)]
