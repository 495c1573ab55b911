"""The decision: should this signal roll this Deployment back, and to what?

``decide`` is a pure function of plain values (no I/O, no clock, no logging:
``now`` is passed in), so every safety rule of DESIGN.md is testable by hand
and the same input always gives the same decision.

Check order, first match wins, and why:

1. ``signal_resolved``, ``no_data`` (SKIP): the signal itself is not a
   trigger, whatever the cluster looks like (safety rule 8). ``stale_signal``
   (SKIP): accepted more than ``policy.signal_max_age`` ago and replayed from
   the journal after an outage; it describes the past.
2. ``target_not_found``, ``namespace_not_allowed``, ``opted_out`` (SKIP):
   there is nothing rollbackd may act on, so nothing else matters (rule 5).
   The ``rollbackd.io/enabled: "false"`` annotation is read here too, in
   case the policy was built before it was set.
3. ``rollback_in_flight`` (JOIN): a repeated or duplicate alert during a
   rollback belongs to it, never to a second one (rule 3). History's
   in-flight rollback counts, and so does a non-terminal phase in the
   Deployment's ``rollbackd.io/rollback`` state annotation. It precedes every
   escalation because during verification the restored revision is current
   and a breach there is the verifier's business, not a new incident.
4. ``anomaly_before_restore`` (JOIN the finished rollback): the current
   revision is one rollbackd restored, and the anomaly began before it was
   ready (the ``ready_at`` of the Deployment's state annotation): the signal
   is about the replaced revision, never a page (rule 12). Then
   ``restored_revision_breaching`` (ESCALATE): the current revision is one
   rollbackd restored and it breaches too: no ping-pong (rule 4). This comes
   before the cooldown on purpose: a breach right after our own rollback is
   exactly when a human must be paged, not silenced.
5. ``cooldown`` (SKIP): rollbackd acted on this target recently (rule 5).
6. ``paused`` (ESCALATE): a human paused the rollout and is in control.
7. ``no_recent_rollout`` (ESCALATE): the newest rollout did not start within
   ``change_window`` before the anomaly (or started after it), so a rollback
   would not help (rule 1).
8. ``no_previous_revision``, ``no_stable_previous_revision`` (ESCALATE):
   nothing to roll back to (rule 2).
9. ``guard_disallowed_fields``, ``guard_mutable_image`` (ESCALATE): the
   rollback itself would be unsafe (rules 6 and 7); only known once the
   target revision is chosen.
10. ``dry_run_recorded`` (JOIN the dry-run record): the same would-be
    rollback was recorded within the cooldown, so another report of the
    anomaly joins it. Then ``dry_run`` (DRY_RUN), else ``rollback``
    (ROLLBACK). Dry-run is last so it reports exactly what would have been
    done; skips, joins and escalations above stay what they are.

Definitions: the current revision is the highest revision number (the
controller numbers them); a revision was stable when ``replaced_at -
created_at >= min_stable``, and an unknown ``replaced_at`` is not stable; the
change window includes both edges (a rollout exactly ``change_window`` before
the anomaly, or at the same instant, is recent). Dry-run comes from the
policy or the ``rollbackd.io/dry-run: "true"`` annotation.

Every decision carries a stable ``ReasonCode`` (a metric label) and a
sentence naming the target, the revisions and the numbers involved. The
sentences use durations relative to ``now`` and to the anomaly only, never
absolute times, so the decision is invariant when all input times shift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from rollbackd.guard import (
    disallowed_changes,
    images,
    is_mutable_image,
    mutable_images,
    template_diff_paths,
)
from rollbackd.model import (
    ANNOTATION_DRY_RUN,
    ANNOTATION_ENABLED,
    ANNOTATION_ROLLBACK,
    RETRYABLE_REASON_CODES,
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    RevisionInfo,
    Signal,
    SignalStatus,
    StrEnum,
)
from rollbackd.state import decode_state


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


# Escalation sentences end with what the human has to do.
MANUAL = "manual rollback needed"
# How many diff paths an escalation sentence lists before "and N more".
MAX_LISTED_PATHS = 5


@dataclass(frozen=True)
class _Inputs:
    """The decision's inputs plus the derived facts several rules share."""

    signal: Signal
    facts: ClusterFacts
    history: History
    policy: Policy
    now: datetime

    @property
    def target(self) -> str:
        return str(self.facts.target)

    @cached_property
    def current(self) -> RevisionInfo | None:
        """The current revision: the highest number, as the controller assigns them."""
        if not self.facts.revisions:
            return None
        return max(self.facts.revisions, key=lambda r: r.revision)

    @cached_property
    def current_template(self) -> dict[str, Any]:
        """The Deployment's pod template (what a rollback replaces)."""
        if self.facts.template:
            return dict(self.facts.template)
        return dict(self.current.template) if self.current else {}

    @property
    def current_revision(self) -> int | None:
        return self.current.revision if self.current else None

    def decision(
        self,
        action: Action,
        code: ReasonCode,
        reason: str,
        *,
        to_revision: int | None = None,
        rollback_id: str | None = None,
    ) -> Decision:
        return Decision(
            action=action,
            target=self.facts.target,
            reason_code=code.value,
            reason=reason,
            from_revision=self.current_revision,
            to_revision=to_revision,
            rollback_id=rollback_id,
        )


Check = Callable[[_Inputs], Decision | None]


def decide(
    signal: Signal, facts: ClusterFacts, history: History, policy: Policy, now: datetime
) -> Decision:
    """Decide what to do about ``signal`` for ``facts.target``; see the module docstring.

    Raises ValueError when the signal and the facts are about different
    targets: that is a wiring bug, and acting on it could roll back the
    wrong Deployment.
    """
    if signal.target != facts.target:
        raise ValueError(f"signal is for {signal.target} but cluster facts are for {facts.target}")
    inputs = _Inputs(signal, facts, history, policy, now)
    for check in _CHECKS_BEFORE_CHOICE:
        decision = check(inputs)
        if decision is not None:
            return decision
    chosen = _choose_revision(inputs)
    if isinstance(chosen, Decision):
        return chosen
    for guard in (_guard_disallowed_fields, _guard_mutable_image):
        decision = guard(inputs, chosen)
        if decision is not None:
            return decision
    return _rollback_or_dry_run(inputs, chosen)


# --- 1. the signal itself ----------------------------------------------------


def _signal_resolved(inp: _Inputs) -> Decision | None:
    if inp.signal.status is not SignalStatus.RESOLVED:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.SIGNAL_RESOLVED,
        f"signal {inp.signal.name} for {inp.target} is resolved; a resolved signal never "
        "triggers a rollback",
    )


def _no_data(inp: _Inputs) -> Decision | None:
    if inp.signal.status is not SignalStatus.NO_DATA:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.NO_DATA,
        f"signal {inp.signal.name} for {inp.target} has no data (empty, NaN or failed "
        "query); no data is never a trigger",
    )


def _stale_signal(inp: _Inputs) -> Decision | None:
    # A signal replayed from the journal long after it was accepted (rollbackd
    # was down) describes the past; a condition that still holds is reported
    # again by Alertmanager's repeats and the poller.
    age = inp.now - inp.signal.observed_at
    if age <= inp.policy.signal_max_age:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.STALE_SIGNAL,
        f"signal {inp.signal.name} for {inp.target} was accepted {_duration(age)} ago, "
        f"more than {_duration(inp.policy.signal_max_age)}; too old to act on",
    )


# --- 2. may rollbackd act on this target at all ------------------------------


def _target_not_found(inp: _Inputs) -> Decision | None:
    if inp.facts.exists:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.TARGET_NOT_FOUND,
        f"Deployment {inp.target} was not found in the cluster",
    )


def _namespace_not_allowed(inp: _Inputs) -> Decision | None:
    if inp.policy.namespace_allowed:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.NAMESPACE_NOT_ALLOWED,
        f"namespace {inp.facts.target.namespace} is not in the allow-list; rollbackd does "
        f"not act on {inp.target}",
    )


def _opted_out(inp: _Inputs) -> Decision | None:
    annotation = inp.facts.annotations.get(ANNOTATION_ENABLED, "")
    if annotation.strip().lower() == "false":
        why = f'annotation {ANNOTATION_ENABLED}: "{annotation}"'
    elif not inp.policy.enabled:
        why = "policy (enabled: false)"
    else:
        return None
    return inp.decision(
        Action.SKIP, ReasonCode.OPTED_OUT, f"{inp.target} is opted out of rollbackd by {why}"
    )


# --- 3. a rollback already running -------------------------------------------


def _rollback_in_flight(inp: _Inputs) -> Decision | None:
    in_flight = inp.history.in_flight
    if in_flight is not None:
        rollback_id, phase = in_flight.id, in_flight.phase.value
    else:
        # The Deployment's own state annotation also counts: another replica
        # may have started the rollback before a leader change.
        state = _state_in_flight(inp.facts)
        if state is None or state[0] == inp.history.ended_on_record:
            return None
        rollback_id, phase = state
    return inp.decision(
        Action.JOIN,
        ReasonCode.ROLLBACK_IN_FLIGHT,
        f"rollback {rollback_id} of {inp.target} is already in flight (phase {phase}); "
        f"signal {inp.signal.name} joins it",
        rollback_id=rollback_id,
    )


def _state_in_flight(facts: ClusterFacts) -> tuple[str, str] | None:
    """(rollback id, phase) from the state annotation when it records a running rollback."""
    text = facts.annotations.get(ANNOTATION_ROLLBACK)
    if not text:
        return None
    try:
        state = decode_state(text)
    except ValueError:
        # Unreadable state is not evidence of a rollback in flight; the
        # executor reports it when it next reads the annotation.
        return None
    if state.phase.terminal:
        return None
    return state.rollback_id, state.phase.value


# --- 4-6. rollbackd's own recent work, humans in control ---------------------


def _anomaly_before_restore(inp: _Inputs) -> Decision | None:
    # Rule 12: an anomaly that began before the restored revision was ready is
    # about the revision rollbackd replaced (late alerts, slow rules, replays).
    current = inp.current
    text = inp.facts.annotations.get(ANNOTATION_ROLLBACK)
    if current is None or not text:
        return None
    try:
        state = decode_state(text)
    except ValueError:
        return None
    restored_here = current.restored_by == state.rollback_id or (
        current.restored_by is None and current.revision in inp.history.restored_revisions
    )
    if (
        state.phase is not Phase.ROLLBACK_COMPLETED
        or state.ready_at is None
        or not restored_here
        or inp.signal.started_at >= state.ready_at
    ):
        return None
    return inp.decision(
        Action.JOIN,
        ReasonCode.ANOMALY_BEFORE_RESTORE,
        f"{_signal_phrase(inp.signal)} began {_duration(state.ready_at - inp.signal.started_at)} "
        f"before revision {current.revision} of {inp.target} was restored and ready "
        f"(rollback {state.rollback_id}); it is about the replaced revision",
        rollback_id=state.rollback_id,
    )


def _restored_revision_breaching(inp: _Inputs) -> Decision | None:
    current = inp.current
    if current is None:
        return None
    restored_by = current.restored_by
    if restored_by is None and current.revision not in inp.history.restored_revisions:
        return None
    by = f" by rollback {restored_by}" if restored_by else ""
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.RESTORED_REVISION_BREACHING,
        f"current revision {current.revision} of {inp.target} was restored by rollbackd{by} "
        f"and {_signal_phrase(inp.signal)} breaches too; no ping-pong: {MANUAL}",
    )


def _cooldown(inp: _Inputs) -> Decision | None:
    last = inp.history.last_finished
    # A rollback stopped by a failing API (budget spent) changed nothing to wait out: retry.
    if last is None or last.reason_code in RETRYABLE_REASON_CODES:
        return None
    finished_at = last.finished_at or last.updated_at
    elapsed = inp.now - finished_at
    if elapsed >= inp.policy.cooldown:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.COOLDOWN,
        f"rollbackd finished rollback {last.id} of {inp.target} ({last.phase.value}) "
        f"{_ago(elapsed)}; cooldown is {_duration(inp.policy.cooldown)}, "
        f"{_duration(inp.policy.cooldown - elapsed)} left",
    )


def _paused(inp: _Inputs) -> Decision | None:
    if not inp.facts.paused:
        return None
    at = f" at revision {inp.current_revision}" if inp.current_revision is not None else ""
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.PAUSED,
        f"{inp.target} is paused{at}: a human paused the rollout and is in control; {MANUAL}",
    )


# --- 7. was it the rollout ---------------------------------------------------


def _no_recent_rollout(inp: _Inputs) -> Decision | None:
    started = inp.facts.rollout_started_at
    anomaly = inp.signal.started_at
    window = inp.policy.change_window
    rollout = f"newest rollout of {inp.target}"
    if inp.current_revision is not None:
        rollout += f" (revision {inp.current_revision})"
    if started is None:
        why = f"the start of the {rollout} is unknown"
    elif started > anomaly:
        why = (
            f"the {rollout} started {_duration(started - anomaly)} after "
            f"{_signal_phrase(inp.signal)} began"
        )
    elif anomaly - started > window:
        why = (
            f"the {rollout} started {_ago(inp.now - started)}, {_duration(anomaly - started)} "
            f"before {_signal_phrase(inp.signal)} began, outside the {_duration(window)} "
            "change window"
        )
    else:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.NO_RECENT_ROLLOUT,
        f"{why}: not caused by a recent rollout, a rollback would not help",
    )


_CHECKS_BEFORE_CHOICE: tuple[Check, ...] = (
    _signal_resolved,
    _no_data,
    _stale_signal,
    _target_not_found,
    _namespace_not_allowed,
    _opted_out,
    _rollback_in_flight,
    _anomaly_before_restore,
    _restored_revision_breaching,
    _cooldown,
    _paused,
    _no_recent_rollout,
)


# --- 8. what to roll back to ---------------------------------------------------


def _choose_revision(inp: _Inputs) -> RevisionInfo | Decision:
    """The newest older revision with a different template that was stable."""
    current = inp.current
    if current is None:
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.NO_PREVIOUS_REVISION,
            f"no revisions of {inp.target} are known: {MANUAL}",
        )
    older = sorted(
        (r for r in inp.facts.revisions if r.revision < current.revision),
        key=lambda r: r.revision,
        reverse=True,
    )
    differing = [r for r in older if template_diff_paths(inp.current_template, r.template)]
    if not differing:
        identical = f" ({len(older)} older, all with the same template)" if older else ""
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.NO_PREVIOUS_REVISION,
            f"{inp.target} has no previous revision that differs from the current revision "
            f"{current.revision}{identical}: {MANUAL}",
        )
    for revision in differing:
        if _stable(revision, inp.policy.min_stable):
            return revision
    ran = ", ".join(_ran_for(r) for r in differing)
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.NO_STABLE_PREVIOUS_REVISION,
        f"no previous revision of {inp.target} ran for the {_duration(inp.policy.min_stable)} "
        f"needed to count as stable before it was replaced ({ran}): {MANUAL}",
    )


def _stable(revision: RevisionInfo, min_stable: timedelta) -> bool:
    """Stable: it was current for ``min_stable``; an unknown replacement time is not stable."""
    if revision.replaced_at is None:
        return False
    return revision.replaced_at - revision.created_at >= min_stable


def _ran_for(revision: RevisionInfo) -> str:
    if revision.replaced_at is None:
        return f"revision {revision.revision}: replacement time unknown"
    return f"revision {revision.revision}: {_duration(revision.replaced_at - revision.created_at)}"


# --- 9. is the rollback itself safe ----------------------------------------------


def _guard_disallowed_fields(inp: _Inputs, chosen: RevisionInfo) -> Decision | None:
    paths = template_diff_paths(inp.current_template, chosen.template)
    disallowed = disallowed_changes(paths, inp.policy.allowed_template_fields)
    if not disallowed:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.GUARD_DISALLOWED_FIELDS,
        f"rolling {inp.target} back from revision {inp.current_revision} to "
        f"{chosen.revision} would change fields outside the allowed "
        f"({', '.join(inp.policy.allowed_template_fields)}): {_listing(disallowed)}; {MANUAL}",
        to_revision=chosen.revision,
    )


def _guard_mutable_image(inp: _Inputs, chosen: RevisionInfo) -> Decision | None:
    if inp.policy.allow_mutable_images:
        return None
    refs = _mutable_refs(chosen)
    if not refs:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.GUARD_MUTABLE_IMAGE,
        f"revision {chosen.revision} of {inp.target} uses mutable image reference(s) "
        f"{', '.join(refs)} (tag latest or no tag, no digest); restoring it would not "
        f"restore what ran before: {MANUAL}",
        to_revision=chosen.revision,
    )


def _mutable_refs(revision: RevisionInfo) -> list[str]:
    """Mutable images of the template, plus any the recorded image list adds."""
    refs = mutable_images(revision.template)
    refs += [ref for ref in revision.images if is_mutable_image(ref) and ref not in refs]
    return refs


# --- 10. act, or say what acting would have been ---------------------------------


def _rollback_or_dry_run(inp: _Inputs, chosen: RevisionInfo) -> Decision:
    plan = _plan_sentence(inp, chosen)
    dry_run_by = _dry_run_source(inp)
    recorded = inp.history.last_dry_run
    if (
        dry_run_by is not None
        and recorded is not None
        and recorded.to_revision == chosen.revision
        and recorded.from_revision == inp.current_revision
        and inp.now - recorded.started_at <= inp.policy.cooldown
    ):
        # The same would-be rollback, reported again (the poller and
        # Alertmanager, or a repeat): one record per incident.
        return inp.decision(
            Action.JOIN,
            ReasonCode.DRY_RUN_RECORDED,
            f"dry run {recorded.id} already records this: would {plan}",
            to_revision=chosen.revision,
            rollback_id=recorded.id,
        )
    if dry_run_by is not None:
        return inp.decision(
            Action.DRY_RUN,
            ReasonCode.DRY_RUN,
            f"dry run ({dry_run_by}): would {plan}",
            to_revision=chosen.revision,
        )
    return inp.decision(Action.ROLLBACK, ReasonCode.ROLLBACK, plan, to_revision=chosen.revision)


def _dry_run_source(inp: _Inputs) -> str | None:
    if inp.policy.dry_run:
        return "policy"
    annotation = inp.facts.annotations.get(ANNOTATION_DRY_RUN, "")
    if annotation.strip().lower() == "true":
        return f'annotation {ANNOTATION_DRY_RUN}: "{annotation}"'
    return None


def _plan_sentence(inp: _Inputs, chosen: RevisionInfo) -> str:
    current = inp.current_revision
    sentence = f"roll back {inp.target} from revision {current} to revision {chosen.revision}"
    before, after = images(inp.current_template), images(chosen.template)
    if before != after:
        sentence += f" (images {', '.join(before)} -> {', '.join(after)})"
    started = inp.facts.rollout_started_at
    if started is not None:
        sentence += (
            f": {_signal_phrase(inp.signal)} began "
            f"{_duration(inp.signal.started_at - started)} after the rollout of revision "
            f"{current} started"
        )
    if chosen.replaced_at is not None:
        sentence += (
            f"; revision {chosen.revision} ran for "
            f"{_duration(chosen.replaced_at - chosen.created_at)} before it was replaced"
        )
    if inp.facts.gitops_owner:
        sentence += f"; managed by {inp.facts.gitops_owner}: Git must be reverted too"
    return sentence


# --- wording -----------------------------------------------------------------------


def _signal_phrase(signal: Signal) -> str:
    """``error_ratio at 0.12 (threshold 0.05)``, or just the name without numbers."""
    phrase = signal.name or "the signal"
    if signal.value is not None:
        phrase += f" at {signal.value:g}"
        if signal.threshold is not None:
            phrase += f" (threshold {signal.threshold:g})"
    return phrase


def _listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:MAX_LISTED_PATHS])
    hidden = len(paths) - MAX_LISTED_PATHS
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _ago(elapsed: timedelta) -> str:
    if elapsed < timedelta(0):
        return f"{_duration(elapsed)} in the future (clock skew)"
    return f"{_duration(elapsed)} ago"


def _duration(delta: timedelta) -> str:
    """Compact human duration: ``2h``, ``1h30m``, ``4m10s``, ``3d2h``, ``0s``.

    Seconds are left out from one hour on; they are noise at that scale.
    """
    seconds = int(abs(delta.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    if days or hours:
        seconds = 0
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
    return "".join(f"{n}{unit}" for n, unit in units if n) or "0s"
