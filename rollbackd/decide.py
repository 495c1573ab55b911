"""The decision: should this signal roll this Deployment back, and to what?

``decide`` is a pure function of plain values (no I/O, no clock, no logging:
``now`` is passed in), so every safety rule (docs/architecture.md) is testable by hand
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
   ready (the ``ready_at`` of the Deployment's state annotation), or was
   first seen after it on evidence reaching back before it (a new leader's
   first look): the signal is about the replaced revision, never a page
   (rule 12). Then
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

Blue-green targets (``facts.bluegreen``: one colour of a Service annotated
``rollbackd.io/strategy: blue-green``) share steps 1-3, 5 and 6; steps 4 and
7-10 are their own (:mod:`rollbackd.decide_bluegreen`): the release is the
selector switch, the previous state is the other colour. Canary targets
(``facts.canary``) share steps 1-7; the rest is :mod:`rollbackd.decide_canary`.
Argo Rollouts (``facts.rollout``: no Deployment of that name, a Rollout)
share steps 1-5 and then follow :mod:`rollbackd.decide_argo` (abort the canary),
whose own ``paused`` rule reads the Rollout's ``spec.paused``.

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

from datetime import datetime

from rollbackd.decide_argo import decide_argo
from rollbackd.decide_bluegreen import decide_bluegreen
from rollbackd.decide_canary import decide_canary
from rollbackd.decide_inputs import Check, Inputs
from rollbackd.decide_target import (
    choose_revision,
    guard_disallowed_fields,
    guard_mutable_image,
    rollback_or_dry_run,
)
from rollbackd.model import (
    ANNOTATION_ENABLED,
    RETRYABLE_REASON_CODES,
    Action,
    ClusterFacts,
    Decision,
    History,
    Phase,
    Policy,
    Signal,
    SignalStatus,
)
from rollbackd.reasons import ReasonCode
from rollbackd.state import state_from_annotations
from rollbackd.wording import MANUAL, ago, duration, signal_phrase

__all__ = ["ReasonCode", "decide"]


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
    inputs = Inputs(signal, facts, history, policy, now)
    for check in _CHECKS_BEFORE_CHOICE:
        decision = check(inputs)
        if decision is not None:
            return decision
    if facts.bluegreen is not None:
        return decide_bluegreen(inputs)
    if facts.canary is not None:
        return decide_canary(inputs)
    if facts.rollout is not None:
        return decide_argo(inputs)
    chosen = choose_revision(inputs)
    if isinstance(chosen, Decision):
        return chosen
    for guard in (guard_disallowed_fields, guard_mutable_image):
        decision = guard(inputs, chosen)
        if decision is not None:
            return decision
    return rollback_or_dry_run(inputs, chosen)


# --- 1. the signal itself ----------------------------------------------------


def _signal_resolved(inp: Inputs) -> Decision | None:
    if inp.signal.status is not SignalStatus.RESOLVED:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.SIGNAL_RESOLVED,
        f"signal {inp.signal.name} for {inp.target} is resolved; a resolved signal never "
        "triggers a rollback",
    )


def _no_data(inp: Inputs) -> Decision | None:
    if inp.signal.status is not SignalStatus.NO_DATA:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.NO_DATA,
        f"signal {inp.signal.name} for {inp.target} has no data (empty, NaN or failed "
        "query); no data is never a trigger",
    )


def _stale_signal(inp: Inputs) -> Decision | None:
    # A signal replayed from the journal long after it was accepted (rollbackd
    # was down) describes the past; a condition that still holds is reported
    # again by Alertmanager's repeats and the poller.
    age = inp.now - inp.signal.observed_at
    if age <= inp.policy.signal_max_age:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.STALE_SIGNAL,
        f"signal {inp.signal.name} for {inp.target} was accepted {duration(age)} ago, "
        f"more than {duration(inp.policy.signal_max_age)}; too old to act on",
    )


# --- 2. may rollbackd act on this target at all ------------------------------


def _target_not_found(inp: Inputs) -> Decision | None:
    if inp.facts.exists or inp.facts.rollout is not None:  # a Rollout: decide_argo
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.TARGET_NOT_FOUND,
        f"Deployment {inp.target} was not found in the cluster",
    )


def _namespace_not_allowed(inp: Inputs) -> Decision | None:
    if inp.policy.namespace_allowed:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.NAMESPACE_NOT_ALLOWED,
        f"namespace {inp.facts.target.namespace} is not in the allow-list; rollbackd does "
        f"not act on {inp.target}",
    )


def _opted_out(inp: Inputs) -> Decision | None:
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


def _rollback_in_flight(inp: Inputs) -> Decision | None:
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
    state = state_from_annotations(facts.annotations)
    if state is None or state.phase.terminal:
        return None
    return state.rollback_id, state.phase.value


# --- 4-6. rollbackd's own recent work, humans in control ---------------------


def _anomaly_before_restore(inp: Inputs) -> Decision | None:
    # Rule 12: an anomaly that began before the restored revision was ready is
    # about the revision rollbackd replaced (late alerts, slow rules, replays).
    current = inp.current
    state = state_from_annotations(inp.facts.annotations)
    if current is None or state is None or inp.facts.bluegreen is not None:
        return None
    restored_here = current.restored_by == state.rollback_id or (
        current.restored_by is None and current.revision in inp.history.restored_revisions
    )
    if (
        state.phase is not Phase.ROLLBACK_COMPLETED
        or state.ready_at is None
        or not restored_here
        or inp.signal.earliest_start >= state.ready_at
    ):
        return None
    return inp.decision(
        Action.JOIN,
        ReasonCode.ANOMALY_BEFORE_RESTORE,
        f"{signal_phrase(inp.signal)} {_began_before(inp.signal, state.ready_at)} "
        f"revision {current.revision} of {inp.target} was restored and ready "
        f"(rollback {state.rollback_id}); it is about the replaced revision",
        rollback_id=state.rollback_id,
    )


def _began_before(signal: Signal, ready_at: datetime) -> str:
    if signal.started_at < ready_at:
        return f"began {duration(ready_at - signal.started_at)} before"
    # First seen after the restore, on a window reaching back before it.
    return (
        f"was first seen {duration(signal.started_at - ready_at)} after, on evidence "
        f"reaching back {duration(ready_at - signal.earliest_start)} before,"
    )


def _restored_revision_breaching(inp: Inputs) -> Decision | None:
    current = inp.current
    if current is None or inp.facts.bluegreen is not None:  # a switch's own rules apply
        return None
    if inp.facts.canary is not None:  # its rollback restores nothing on it: no ping-pong
        return None
    restored_by = current.restored_by
    if restored_by is None and current.revision not in inp.history.restored_revisions:
        return None
    by = f" by rollback {restored_by}" if restored_by else ""
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.RESTORED_REVISION_BREACHING,
        f"current revision {current.revision} of {inp.target} was restored by rollbackd{by} "
        f"and {signal_phrase(inp.signal)} breaches too; no ping-pong: {MANUAL}",
    )


def _cooldown(inp: Inputs) -> Decision | None:
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
        f"{ago(elapsed)}; cooldown is {duration(inp.policy.cooldown)}, "
        f"{duration(inp.policy.cooldown - elapsed)} left",
    )


def _paused(inp: Inputs) -> Decision | None:
    if not inp.facts.paused:
        return None
    at = f" at revision {inp.current_revision}" if inp.current_revision is not None else ""
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.PAUSED,
        f"{inp.target} is paused{at}: a human paused the rollout and is in control; {MANUAL}",
    )


# --- 7. was it the rollout ---------------------------------------------------


def _no_recent_rollout(inp: Inputs) -> Decision | None:
    if inp.facts.bluegreen is not None or inp.facts.rollout is not None:  # their own rules
        return None
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
            f"the {rollout} started {duration(started - anomaly)} after "
            f"{signal_phrase(inp.signal)} began"
        )
    elif anomaly - started > window:
        why = (
            f"the {rollout} started {ago(inp.now - started)}, {duration(anomaly - started)} "
            f"before {signal_phrase(inp.signal)} began, outside the {duration(window)} "
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
