"""Values many specs build the same way; each spec names only what it cares about."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rollbackd.model import Signal, SignalSource, SignalStatus, Target

CHECKOUT = Target("shop", "checkout")


def firing_alert(
    key: str,
    at: datetime,
    *,
    target: Target = CHECKOUT,
    started_at: datetime | None = None,
    **fields: Any,
) -> Signal:
    """Alertmanager's HighErrorRatio firing on ``target``, observed ``at`` (started then too)."""
    return Signal(
        target=target,
        source=SignalSource.ALERTMANAGER,
        name="HighErrorRatio",
        status=SignalStatus.FIRING,
        started_at=at if started_at is None else started_at,
        observed_at=at,
        key=key,
        **fields,
    )
