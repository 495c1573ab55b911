"""The decision for one colour of a blue-green Service: pure, like ``decide``.

Reached after the shared checks (signal, target, opt-out, rollback in
flight, cooldown, paused). In order, first match wins:

1. bad input (``strategy_unknown``, ``color_label_invalid``): escalate with
   the Service and the annotation named; nothing is switched.
2. ``not_live_color`` (SKIP): the target is the idle colour; the Service
   sends it no traffic, so switching would not help.
3. ``restored_revision_breaching``: rollbackd made the last switch (its
   field manager owns the selector) and the colour it restored breaches too:
   no ping-pong.
4. ``no_recent_rollout``: the switch time is unknown, after the anomaly, or
   outside ``change_window`` before it.
5. ``no_previous_colour`` / ``no_stable_previous_revision``: no single other
   colour, or its running version was created less than ``min_stable`` before
   the switch (it never ran long enough to count as stable).
6. the guards on what the switch restores: the other colour's template
   against the live one (the colour label is a label: allowed like
   annotations), and its image references.
7. dry run, or the rollback.
"""

from __future__ import annotations

from rollbackd.bluegreen import BlueGreenFacts
from rollbackd.decide_inputs import Inputs
from rollbackd.decide_target import rollback_or_dry_run
from rollbackd.guard import disallowed_changes, images, mutable_images, template_diff_paths
from rollbackd.model import FIELD_MANAGER, Action, Decision, RevisionInfo
from rollbackd.reasons import ReasonCode
from rollbackd.wording import MANUAL, ago, duration, listing, signal_phrase

__all__ = ["decide_bluegreen"]


def decide_bluegreen(inp: Inputs) -> Decision:
    """Roll the Service back to the other colour, or say why not."""
    bg = inp.facts.bluegreen
    assert bg is not None, "decide_bluegreen needs blue-green facts"
    for check in (_bad_input, _not_live, _restored_breaching, _not_recent, _no_previous):
        decision = check(inp, bg)
        if decision is not None:
            return decision
    previous = RevisionInfo(
        revision=bg.previous_revision or 0,
        replicaset=str(bg.previous),
        uid="",
        created_at=bg.previous_since or inp.now,
        template=bg.previous_template,
        images=images(bg.previous_template),
    )
    guarded = _guards(inp, bg)
    if guarded is not None:
        return guarded
    return rollback_or_dry_run(inp, previous, _plan_sentence(inp, bg))


def _colour(bg: BlueGreenFacts, colour: str | None) -> str:
    return f"{bg.color_label}={colour}"


def _bad_input(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    if bg.problem is None:
        return None
    code, sentence = bg.problem
    return inp.decision(Action.ESCALATE, code, f"{sentence}; nothing was switched: {MANUAL}")


def _not_live(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    if bg.live:
        return None
    return inp.decision(
        Action.SKIP,
        ReasonCode.NOT_LIVE_COLOR,
        f"{inp.target} ({_colour(bg, bg.target_color)}) is not the colour Service {bg.service} "
        f"selects ({_colour(bg, bg.live_color)}): it serves no traffic there, switching "
        "would not help",
    )


def _restored_breaching(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    if bg.switched_by != FIELD_MANAGER:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.RESTORED_REVISION_BREACHING,
        f"Service {bg.service} was switched to {_colour(bg, bg.live_color)} by rollbackd and "
        f"{signal_phrase(inp.signal)} of {inp.target} breaches too; no ping-pong: {MANUAL}",
    )


def _not_recent(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    switched, anomaly, window = bg.switched_at, inp.signal.started_at, inp.policy.change_window
    switch = f"switch of Service {bg.service} to {_colour(bg, bg.live_color)}"
    if switched is None:
        why = f"the time of the {switch} is unknown (no managedFields entry owns its selector)"
    elif switched > anomaly:
        why = f"the {switch} came {duration(switched - anomaly)} after {signal_phrase(inp.signal)} began"
    elif anomaly - switched > window:
        why = (
            f"the {switch} happened {ago(inp.now - switched)}, {duration(anomaly - switched)} "
            f"before {signal_phrase(inp.signal)} began, outside the {duration(window)} change window"
        )
    else:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.NO_RECENT_ROLLOUT,
        f"{why}: not caused by a recent release, switching back would not help",
    )


def _no_previous(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    if bg.previous is None:
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.NO_PREVIOUS_COLOR,
            f"{bg.no_previous or 'no previous colour'}; nothing was switched: {MANUAL}",
        )
    since, switched = bg.previous_since, bg.switched_at
    assert switched is not None  # _not_recent ran first
    if since is not None and switched - since >= inp.policy.min_stable:
        return None
    if since is None:
        ran = "at an unknown time"
    elif since > switched:
        ran = f"{duration(since - switched)} after the switch"
    else:
        ran = f"{duration(switched - since)} before the switch"
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.NO_STABLE_PREVIOUS_REVISION,
        f"the running version of {bg.previous} ({_colour(bg, bg.previous_color)}) was created "
        f"{ran}; it needs {duration(inp.policy.min_stable)} before the switch to count as "
        f"stable; nothing was switched: {MANUAL}",
    )


def _guards(inp: Inputs, bg: BlueGreenFacts) -> Decision | None:
    """Rules 6 and 7 on what the switch restores: the other colour's template."""
    paths = template_diff_paths(inp.current_template, bg.previous_template)
    disallowed = disallowed_changes(paths, inp.policy.allowed_template_fields)
    if disallowed:
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.GUARD_DISALLOWED_FIELDS,
            f"switching Service {bg.service} back to {bg.previous} would change fields outside "
            f"the allowed ({', '.join(inp.policy.allowed_template_fields)}): "
            f"{listing(disallowed)}; {MANUAL}",
        )
    refs = mutable_images(bg.previous_template)
    if refs and not inp.policy.allow_mutable_images:
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.GUARD_MUTABLE_IMAGE,
            f"{bg.previous} uses mutable image reference(s) {', '.join(refs)} (tag latest or no "
            f"tag, no digest); switching back would not restore what ran before: {MANUAL}",
        )
    return None


def _plan_sentence(inp: Inputs, bg: BlueGreenFacts) -> str:
    switched = bg.switched_at
    assert switched is not None
    sentence = (
        f"switch Service {bg.service} back from {_colour(bg, bg.live_color)} ({inp.target}) to "
        f"{_colour(bg, bg.previous_color)} ({inp.facts.target.namespace}/{bg.previous})"
    )
    before, after = images(inp.current_template), images(bg.previous_template)
    if before != after:
        sentence += f" (images {', '.join(before)} -> {', '.join(after)})"
    if bg.previous_current_replicas < bg.previous_replicas:
        sentence += f", scaling {bg.previous} {bg.previous_current_replicas} -> {bg.previous_replicas} first"
    sentence += (
        f": {signal_phrase(inp.signal)} began {duration(inp.signal.started_at - switched)} "
        "after the switch"
    )
    if inp.facts.gitops_owner:
        sentence += f"; managed by {inp.facts.gitops_owner}: Git must be reverted too"
    return sentence
