"""Action items for humans: what is left to do, from what happened.

Each item follows from a fact in the journal: a paused GitOps owner must be
resumed after Git is reverted; an escalation needs a manual rollback; a
superseded rollback means a human took over; a completed one still needs a
fix forward; a dry run changed nothing. Pure: facts in, sentences out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rollbackd.model import Phase
from rollbackd.report import Facts


def gitops_owner(f: Facts) -> str | None:
    """``Kind namespace/name`` of each GitOps owner rollbackd paused (comma-separated), if any.

    Usually one; a blue-green Service owned by another Application or
    Kustomization than its Deployment's has its owner paused too.
    """
    named: list[str] = []
    for entry in f.timeline:
        if entry.kind == "gitops_paused":
            d = entry.data
            if d.get("kind") and d.get("name"):
                name = f"{d['kind']} {d.get('namespace', '')}/{d['name']}".replace(" /", " ")
            else:
                name = str(d.get("owner") or "the GitOps owner")
            named += [name] if name not in named else []
    return ", ".join(named) or None


def bad_images(f: Facts) -> list[str]:
    images = f.first_value("images_from", "from_images")
    return [str(i) for i in images] if isinstance(images, list) else []


def _undo_command(f: Facts) -> str:
    rb = f.rollback
    changes = f.first_value("changes")
    if isinstance(changes, Mapping) and changes.get("selector_after"):
        # Blue-green: the undo is the selector switch back (after the colour is Ready).
        selector = json.dumps({"spec": {"selector": dict(changes["selector_after"])}})
        return f"kubectl -n {rb.target.namespace} patch service {changes.get('service')} -p '{selector}'"
    if isinstance(changes, Mapping) and changes.get("strategy") == "argo-rollouts":
        # A Rollout: abort its canary as rollbackd would have (the stable version serves).
        return f"kubectl argo rollouts abort {rb.target.name} -n {rb.target.namespace}"
    to = f" --to-revision={rb.to_revision}" if rb.to_revision else ""
    return f"kubectl -n {rb.target.namespace} rollout undo deployment/{rb.target.name}{to}"


def _superseded(f: Facts) -> str:
    change = f.first_value("superseded_by")
    now = ""
    if isinstance(change, Mapping):
        images = ", ".join(f"`{i}`" for i in change.get("images") or []) or "unknown images"
        now = f" (now revision {change.get('revision', '?')}, {images})"
    return (
        f"A human took over: the Deployment was changed during the rollback{now}; "
        "confirm the incident is resolved and record what they did."
    )


def _fix_forward(f: Facts) -> str:
    images = ", ".join(f"`{i}`" for i in bad_images(f)) or "the bad revision's images"
    rb = f.rollback
    # An Argo abort's revisions are its ReplicaSets', journaled with its plan.
    bad = rb.from_revision or f.first_value("from_revision") or "?"
    restored = rb.to_revision or f.first_value("to_revision") or "?"
    return (
        f"Fix forward: the bad revision {bad}'s image {images} failed; "
        f"revision {restored}'s template runs again, so the next deploy must carry the fix."
    )


def _by_phase(f: Facts) -> list[str]:
    rb = f.rollback
    reason = rb.reason or rb.reason_code or "no reason recorded"
    items: dict[Phase, list[str]] = {
        Phase.ROLLBACK_COMPLETED: [_fix_forward(f)],
        Phase.ESCALATED: [f"Manual rollback needed: {reason} (e.g. `{_undo_command(f)}`)."],
        Phase.ROLLBACK_FAILED: [f"Manual rollback needed: {reason} (e.g. `{_undo_command(f)}`)."],
        Phase.SUPERSEDED: [_superseded(f)],
        Phase.DRY_RUN: [
            f"Nothing was changed (dry run): decide whether to roll back by hand "
            f"(`{_undo_command(f)}`)."
        ],
        Phase.SKIPPED: [f"Nothing was changed: {reason}."],
    }
    if rb.phase in items:
        return items[rb.phase]
    if rb.phase.terminal:  # an ending this module does not know yet: say what was recorded
        return [f"Review the outcome `{rb.phase}`: {reason}."]
    return [f"The rollback has not ended (phase {rb.phase}): render this draft again when it has."]


def action_items(f: Facts) -> list[str]:
    """What humans must still do, most urgent first."""
    items = _by_phase(f)
    owner = gitops_owner(f)
    if owner is not None:
        items.insert(
            0 if f.rollback.phase is not Phase.ROLLBACK_COMPLETED else len(items),
            f"Revert the change in Git, then resume sync of {owner} "
            "(rollbackd paused it so the controller would not re-apply the bad version).",
        )
    return items


def steps_taken(f: Facts) -> list[dict[str, Any]]:
    """What rollbackd did, in order: its decisions and journaled events (not the signals or pages)."""
    return [
        {"at": e.at, "kind": e.kind, "message": e.message}
        for e in f.timeline
        if e.kind not in ("signal", "notification")
    ]
