"""The decision for a canary Deployment: pure, like ``decide``.

Reached after the shared checks, including the change window: a canary's
release is its own rollout, so ``no_recent_rollout`` reads its newest
ReplicaSet like any Deployment's. In order, first match wins:

1. bad input (``canary_of_invalid``, ``canary_stable_not_found``,
   ``canary_route_invalid``): escalate with the annotation named; nothing is
   scaled or re-weighted.
2. ``canary_stable_not_ready``: the stable Deployment could not take the
   canary's traffic; escalate, nothing scaled.
3. ``canary_out_of_traffic`` (SKIP): by replicas, the canary is at 0 already
   (a late alert); scaling again would overwrite its recorded replicas.
4. dry run, or the rollback: scale the canary to 0 (or its route weight to 0).
"""

from __future__ import annotations

from rollbackd.canary import CanaryFacts
from rollbackd.decide_inputs import Inputs
from rollbackd.decide_target import rollback_or_dry_run
from rollbackd.guard import images
from rollbackd.model import Action, Decision, RevisionInfo
from rollbackd.reasons import ReasonCode
from rollbackd.wording import MANUAL, duration, signal_phrase

__all__ = ["decide_canary"]


def decide_canary(inp: Inputs) -> Decision:
    """Take the canary out of traffic, or say why not."""
    canary = inp.facts.canary
    assert canary is not None, "decide_canary needs canary facts"
    if canary.problem is not None:
        code, sentence = canary.problem
        return inp.decision(
            Action.ESCALATE, code, f"{sentence}; nothing was scaled or re-weighted: {MANUAL}"
        )
    if not canary.route and canary.replicas == 0:
        # Already out of traffic (by rollbackd or a human): scaling again would
        # overwrite the replicas recorded for the human who restores them.
        return inp.decision(
            Action.SKIP,
            ReasonCode.CANARY_OUT_OF_TRAFFIC,
            f"canary {inp.target} is scaled to 0 already: it serves no traffic",
        )
    # Nothing is restored: the stable version keeps running; its revision names it.
    stable = RevisionInfo(
        revision=canary.stable_revision or 1,
        replicaset=canary.stable,
        uid="",
        created_at=inp.now,
        template=canary.stable_template,
        images=images(canary.stable_template),
    )
    return rollback_or_dry_run(inp, stable, _plan_sentence(inp, canary))


def _plan_sentence(inp: Inputs, canary: CanaryFacts) -> str:
    if canary.route:
        action = (
            f"set the weight of canary {inp.target} to 0 in HTTPRoute {canary.route}, "
            f"its share to stable {canary.stable}"
        )
    else:
        action = f"scale canary {inp.target} {canary.replicas} -> 0, stable {canary.stable} serving"
    started = inp.facts.rollout_started_at
    if started is not None:
        action += (
            f": {signal_phrase(inp.signal)} began {duration(inp.signal.started_at - started)} "
            "after the canary's rollout"
        )
    if inp.facts.gitops_owner:
        action += f"; managed by {inp.facts.gitops_owner}: Git must be reverted too"
    return action
