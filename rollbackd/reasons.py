"""The one set of reason codes: every decision and every ending carries one.

Stable and snake_case, because they are metric labels, journal columns and
API values; a closed set, so label cardinality stays bounded.
"""

from __future__ import annotations

from rollbackd.model import StrEnum

__all__ = ["ReasonCode"]


class ReasonCode(StrEnum):
    """Stable, snake_case reason codes (metric labels, journal, API)."""

    SIGNAL_RESOLVED = "signal_resolved"
    NO_DATA = "no_data"
    STALE_SIGNAL = "stale_signal"
    TARGET_NOT_FOUND = "target_not_found"
    NAMESPACE_NOT_ALLOWED = "namespace_not_allowed"
    OPTED_OUT = "opted_out"
    ROLLBACK_IN_FLIGHT = "rollback_in_flight"
    ANOMALY_BEFORE_RESTORE = "anomaly_before_restore"
    RESTORED_REVISION_BREACHING = "restored_revision_breaching"
    COOLDOWN = "cooldown"
    PAUSED = "paused"
    NO_RECENT_ROLLOUT = "no_recent_rollout"
    NO_PREVIOUS_REVISION = "no_previous_revision"
    NO_STABLE_PREVIOUS_REVISION = "no_stable_previous_revision"
    GUARD_DISALLOWED_FIELDS = "guard_disallowed_fields"
    GUARD_MUTABLE_IMAGE = "guard_mutable_image"
    DRY_RUN = "dry_run"
    DRY_RUN_RECORDED = "dry_run_recorded"
    ROLLBACK = "rollback"
