"""The decision's last steps: what to roll back to, whether that is safe, and the act.

Pure, like ``decide``: the chosen revision must exist, differ and have been
stable; the template diff and the image references must pass the guards;
then a rollback, a dry run, or a join of the dry run already recorded.
"""

from __future__ import annotations

from datetime import timedelta

from rollbackd.decide_inputs import Inputs
from rollbackd.guard import (
    disallowed_changes,
    images,
    is_mutable_image,
    mutable_images,
)
from rollbackd.model import ANNOTATION_DRY_RUN, Action, Decision, RevisionInfo
from rollbackd.reasons import ReasonCode
from rollbackd.wording import MANUAL, duration, listing, signal_phrase

__all__ = [
    "choose_revision",
    "guard_disallowed_fields",
    "guard_mutable_image",
    "rollback_or_dry_run",
]


# --- 8. what to roll back to ---------------------------------------------------


def choose_revision(inp: Inputs) -> RevisionInfo | Decision:
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
    # The newest stable one that differs: the stability check is cheap, the
    # template diff is not, so the diff runs only for stable candidates.
    for revision in older:
        if stable(revision, inp.policy.min_stable) and inp.template_diff(revision):
            return revision
    differing = [r for r in older if inp.template_diff(r)]
    if not differing:
        identical = f" ({len(older)} older, all with the same template)" if older else ""
        return inp.decision(
            Action.ESCALATE,
            ReasonCode.NO_PREVIOUS_REVISION,
            f"{inp.target} has no previous revision that differs from the current revision "
            f"{current.revision}{identical}: {MANUAL}",
        )
    ran = ", ".join(ran_for(r) for r in differing)
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.NO_STABLE_PREVIOUS_REVISION,
        f"no previous revision of {inp.target} ran for the {duration(inp.policy.min_stable)} "
        f"needed to count as stable before it was replaced ({ran}): {MANUAL}",
    )


def stable(revision: RevisionInfo, min_stable: timedelta) -> bool:
    """Stable: it was current for ``min_stable``; an unknown replacement time is not stable."""
    if revision.replaced_at is None:
        return False
    return revision.replaced_at - revision.created_at >= min_stable


def ran_for(revision: RevisionInfo) -> str:
    if revision.replaced_at is None:
        return f"revision {revision.revision}: replacement time unknown"
    return f"revision {revision.revision}: {duration(revision.replaced_at - revision.created_at)}"


# --- 9. is the rollback itself safe ----------------------------------------------


def guard_disallowed_fields(inp: Inputs, chosen: RevisionInfo) -> Decision | None:
    paths = inp.template_diff(chosen)
    disallowed = disallowed_changes(paths, inp.policy.allowed_template_fields)
    if not disallowed:
        return None
    return inp.decision(
        Action.ESCALATE,
        ReasonCode.GUARD_DISALLOWED_FIELDS,
        f"rolling {inp.target} back from revision {inp.current_revision} to "
        f"{chosen.revision} would change fields outside the allowed "
        f"({', '.join(inp.policy.allowed_template_fields)}): {listing(disallowed)}; {MANUAL}",
        to_revision=chosen.revision,
    )


def guard_mutable_image(inp: Inputs, chosen: RevisionInfo) -> Decision | None:
    if inp.policy.allow_mutable_images:
        return None
    refs = mutable_refs(chosen)
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


def mutable_refs(revision: RevisionInfo) -> list[str]:
    """Mutable images of the template, plus any the recorded image list adds."""
    refs = mutable_images(revision.template)
    refs += [ref for ref in revision.images if is_mutable_image(ref) and ref not in refs]
    return refs


# --- 10. act, or say what acting would have been ---------------------------------


def rollback_or_dry_run(inp: Inputs, chosen: RevisionInfo, plan: str | None = None) -> Decision:
    """Roll back (or record the dry run) to ``chosen``; ``plan`` the sentence, else revisions'."""
    plan = plan or plan_sentence(inp, chosen)
    dry_run_by = dry_run_source(inp)
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


def dry_run_source(inp: Inputs) -> str | None:
    if inp.policy.dry_run:
        return "policy"
    annotation = inp.facts.annotations.get(ANNOTATION_DRY_RUN, "")
    if annotation.strip().lower() == "true":
        return f'annotation {ANNOTATION_DRY_RUN}: "{annotation}"'
    return None


def plan_sentence(inp: Inputs, chosen: RevisionInfo) -> str:
    current = inp.current_revision
    sentence = f"roll back {inp.target} from revision {current} to revision {chosen.revision}"
    before, after = images(inp.current_template), images(chosen.template)
    if before != after:
        sentence += f" (images {', '.join(before)} -> {', '.join(after)})"
    started = inp.facts.rollout_started_at
    if started is not None:
        sentence += (
            f": {signal_phrase(inp.signal)} began "
            f"{duration(inp.signal.started_at - started)} after the rollout of revision "
            f"{current} started"
        )
    if chosen.replaced_at is not None:
        sentence += (
            f"; revision {chosen.revision} ran for "
            f"{duration(chosen.replaced_at - chosen.created_at)} before it was replaced"
        )
    if inp.facts.gitops_owner:
        sentence += f"; managed by {inp.facts.gitops_owner}: Git must be reverted too"
    return sentence
