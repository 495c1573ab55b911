"""The one set of reason codes: every decision and every ending of a rollback.

Stable and snake_case, because they are metric labels, journal columns, API
values and part of the state annotation; closed, so a code is a member here
or it is a bug. Members are ``str`` values, so records written before this
enum read back unchanged.
"""

from __future__ import annotations

from rollbackd.kube.rollout import RolloutStatus
from rollbackd.model import REASON_KUBE_UNAVAILABLE, REASON_WRITE_CONFLICTS, StrEnum


class ReasonCode(StrEnum):
    """Every reason code rollbackd gives: decisions, and how a rollback ended.

    One closed set of stable snake_case values: metric labels, journal
    columns, API values and the state annotation all draw from it.
    """

    # decisions (decide.py): what to do about a signal
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
    # blue-green (bluegreen.py, decide_bluegreen.py, strategies/bluegreen.py)
    STRATEGY_UNKNOWN = "strategy_unknown"
    COLOR_LABEL_INVALID = "color_label_invalid"
    NOT_LIVE_COLOR = "not_live_color"
    NO_PREVIOUS_COLOR = "no_previous_color"
    PREVIOUS_COLOR_NOT_READY = "previous_color_not_ready"
    # canary (canary.py, decide_canary.py, strategies/canary.py)
    CANARY_OF_INVALID = "canary_of_invalid"
    CANARY_STABLE_NOT_FOUND = "canary_stable_not_found"
    CANARY_STABLE_NOT_READY = "canary_stable_not_ready"
    CANARY_ROUTE_INVALID = "canary_route_invalid"
    CANARY_OUT_OF_TRAFFIC = "canary_out_of_traffic"
    # Argo Rollouts (argo.py, decide_argo.py, strategies/argorollouts.py)
    ROLLOUT_ALREADY_ABORTED = "rollout_already_aborted"
    ROLLOUT_NOT_UPDATING = "rollout_not_updating"
    ROLLOUT_STATUS_MISSING = "rollout_status_missing"
    ROLLOUT_SPEC_INVALID = "rollout_spec_invalid"
    ROLLOUT_NO_STABLE = "rollout_no_stable"
    ROLLOUT_ABORT_NOT_DONE = "rollout_abort_not_done"
    # how a rollback ended (executor, verification, strategies)

    # verification
    VERIFIED = "verified"
    VERIFY_BREACH = "verify_breach"
    VERIFY_NO_DATA = "verify_no_data"
    VERIFY_NOT_READY = "verify_not_ready"
    VERIFY_TIMEOUT = "verify_timeout"
    VERIFY_SMOKE_FAILED = "verify_smoke_failed"
    VERIFY_ASSERTION_FAILED = "verify_assertion_failed"
    VERIFY_ASSERTION_INVALID = "verify_assertion_invalid"
    # the restored version's rollout
    ROLLOUT_FAILED = "rollout_failed"
    ROLLOUT_TIMEOUT = "rollout_timeout"
    ROLLOUT_GONE = "rollout_gone"
    ROLLOUT_PROGRESSING = "rollout_progressing"
    ROLLOUT_COMPLETE = "rollout_complete"
    # planning (strategy and re-checked rules)
    REVISION_NOT_FOUND = "revision_not_found"
    ALREADY_AT_REVISION = "already_at_revision"
    TARGET_CHANGED = "target_changed"
    GITOPS_PAUSE_FAILED = "gitops_pause_failed"
    # approval (approve mode)
    REJECTED = "rejected"
    APPROVAL_TIMEOUT = "approval_timeout"
    # endings
    SUPERSEDED = "superseded"
    ROLLBACK_FAILED = "rollback_failed"
    KUBE_UNAVAILABLE = REASON_KUBE_UNAVAILABLE
    WRITE_CONFLICTS = REASON_WRITE_CONFLICTS
    KUBE_FORBIDDEN = "kube_forbidden"
    EXECUTOR_ERROR = "executor_error"


# The executor's and verifier's name for the same enum.
RollbackReason = ReasonCode


def rollout_reason(status: RolloutStatus) -> RollbackReason:
    """The ending of a rollout that did not complete: ``rollout_<status>``."""
    return RollbackReason(f"rollout_{status}")
