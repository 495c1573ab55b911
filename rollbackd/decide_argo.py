"""The rules of an Argo Rollouts abort, pure: Rollout facts + signal + window + now -> Decision.

They come after the shared rules (resolved, no data, opted out, in flight,
cooldown...), which do not depend on the release shape. In order:

1. a Rollout rollbackd cannot read (no status, a refused spec): escalate with
   the reason, nothing is written;
2. already aborted: skip, the abort is done (no second write);
3. paused by a human (``spec.paused``, ``kubectl argo rollouts pause``; not
   the controller's step pauses in ``status.pauseConditions``): escalate
   ``paused`` as for a paused Deployment, the human is in control;
4. no update in progress (no canary): skip, there is nothing to abort;
5. no stable ReplicaSet to fall back to: escalate, manual rollback needed;
6. the canary started outside the change window before the anomaly (or
   after it): escalate, not caused by a recent rollout;
7. else: roll back, i.e. abort the canary; a dry run (policy or the
   Rollout's ``rollbackd.io/dry-run`` annotation) records what it would abort.

:func:`decide_argo` is the entry point over the shared :class:`Inputs`
(``facts.rollout`` set); :func:`decide_rollout` the rules on plain values.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rollbackd.argo import RolloutFacts
from rollbackd.decide_inputs import Inputs
from rollbackd.decide_target import dry_run_source
from rollbackd.model import Action, Decision, Signal
from rollbackd.reasons import ReasonCode
from rollbackd.wording import MANUAL, ago, duration, signal_phrase

__all__ = ["decide_argo", "decide_rollout"]


def _window(facts: RolloutFacts, signal: Signal, now: datetime, window: timedelta) -> str | None:
    """Why the canary is not the likely cause in time; None when it is."""
    started, anomaly = facts.canary_started_at, signal.started_at
    canary = f"the canary {facts.canary_rs or f'(hash {facts.canary_hash})'} of Rollout {facts.namespace}/{facts.name}"
    if started is None:
        return f"the start of {canary} is unknown"
    if started > anomaly:
        return f"{canary} started {duration(started - anomaly)} after {signal_phrase(signal)} began"
    if anomaly - started > window:
        return (
            f"{canary} started {ago(now - started)}, {duration(anomaly - started)} before "
            f"{signal_phrase(signal)} began, outside the {duration(window)} change window"
        )
    return None


def decide_rollout(
    signal: Signal, facts: RolloutFacts, *, now: datetime, change_window: timedelta
) -> Decision:
    """Abort the Rollout's canary, skip, or escalate (see the module docstring)."""
    target = signal.target
    rollout = f"Rollout {facts.namespace}/{facts.name}"

    def decision(action: Action, code: ReasonCode, reason: str) -> Decision:
        return Decision(action, target, code, reason)

    if facts.problem is not None:
        code, why = facts.problem
        return decision(
            Action.ESCALATE, code, f"{rollout} cannot be judged: {why}; nothing was aborted"
        )
    if facts.aborted:
        return decision(
            Action.SKIP,
            ReasonCode.ROLLOUT_ALREADY_ABORTED,
            f"{rollout} is already aborted (phase {facts.phase or 'unknown'}): nothing to do",
        )
    if facts.paused:
        canary = f"canary {facts.canary_rs or facts.canary_hash}" if facts.updating else "no canary"
        return decision(
            Action.ESCALATE,
            ReasonCode.PAUSED,
            f"{rollout} is paused ({canary}, spec.paused): a human paused the rollout and is "
            f"in control; nothing was aborted: {MANUAL}",
        )
    if not facts.updating:
        return decision(
            Action.SKIP,
            ReasonCode.ROLLOUT_NOT_UPDATING,
            f"{rollout} has no update in progress (stable {facts.stable_hash}): no canary to abort",
        )
    if facts.stable_rs is None:
        return decision(
            Action.ESCALATE,
            ReasonCode.ROLLOUT_NO_STABLE,
            f"{rollout} has no stable ReplicaSet (hash {facts.stable_hash}) to fall back to: "
            "manual rollback needed",
        )
    late = _window(facts, signal, now, change_window)
    if late is not None:
        return decision(
            Action.ESCALATE,
            ReasonCode.NO_RECENT_ROLLOUT,
            f"{late}: not caused by a recent rollout, an abort would not help",
        )
    started = facts.canary_started_at or signal.started_at  # known: _window passed
    return decision(
        Action.ROLLBACK,
        ReasonCode.ROLLBACK,
        f"{signal_phrase(signal)} began {duration(signal.started_at - started)} "
        f"after the canary {facts.canary_rs} of {rollout} started: aborting it "
        f"(back to stable {facts.stable_rs})",
    )


def decide_argo(inp: Inputs) -> Decision:
    """The abort's rules for ``inp.facts.rollout``, with the shared dry-run rule applied."""
    facts = inp.facts.rollout
    if facts is None:
        raise ValueError(f"decide_argo needs Rollout facts for {inp.target}")
    decision = decide_rollout(
        inp.signal, facts, now=inp.now, change_window=inp.policy.change_window
    )
    dry_run_by = dry_run_source(inp)
    if decision.action is not Action.ROLLBACK or dry_run_by is None:
        return decision
    return Decision(
        Action.DRY_RUN,
        decision.target,
        ReasonCode.DRY_RUN,
        f"dry run ({dry_run_by}): would abort: {decision.reason}",
    )
