"""The Signal a poller emits: one key per anomaly while it fires, a fresh key for anything else."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rollbackd.model import Signal, SignalSource, SignalStatus, Target

__all__ = ["polled_signal"]


def polled_signal(
    *,
    source: SignalSource,
    target: Target,
    name: str,
    status: SignalStatus,
    started_at: datetime,
    now: datetime,
    key_base: str,
    value: float | None,
    threshold: float | None,
    labels: Mapping[str, str],
    summary: str,
    evidence_since: datetime | None = None,
) -> Signal:
    """FIRING repeats share ``key_base:started_at`` (the intake dedupes them);
    RESOLVED and NO_DATA get their own keys, so neither is taken for a repeat."""
    key = f"{key_base}:{started_at.isoformat()}"
    if status is not SignalStatus.FIRING:
        key = f"{key}:{status.value}:{now.isoformat()}"
    return Signal(
        target=target,
        source=source,
        name=name,
        status=status,
        started_at=started_at,
        observed_at=now,
        value=value,
        threshold=threshold,
        key=key,
        labels=labels,
        summary=summary,
        evidence_since=evidence_since,
    )
