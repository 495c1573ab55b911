"""The postmortem draft as plain data, and its stable JSON form.

``build_draft`` is pure: the rollback, its journal timeline, its details, the
impact (already measured) and ``now`` in, a ``Draft`` out. ``draft_json``
is the schema documented in docs/operations.md (``schema:
rollbackd.postmortem/v1``); fields are only ever added to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollbackd.jsonable import to_jsonable
from rollbackd.model import Rollback
from rollbackd.postmortem.actions import action_items, bad_images, gitops_owner, steps_taken
from rollbackd.postmortem.change import FieldChange, image_changes, template_changes
from rollbackd.postmortem.impact import Impact
from rollbackd.postmortem.times import Span, Window, incident_window, spans
from rollbackd.report import Facts, TimelineEntryLike

SCHEMA = "rollbackd.postmortem/v1"


@dataclass(frozen=True)
class Change:
    """The change that caused the incident: bad revision against the restored one."""

    bad_revision: int | None
    restored_revision: int | None
    source: str  # "templates" (journaled at plan time), "images" (older plan), "not recorded"
    fields: tuple[FieldChange, ...]
    diff_paths: tuple[str, ...]
    bad_images: tuple[str, ...]


@dataclass(frozen=True)
class Draft:
    """Everything the draft says; the renderers only format it."""

    facts: Facts
    window: Window
    spans: tuple[Span, ...]
    impact: Impact
    change: Change
    action_items: tuple[str, ...]
    generated_at: datetime

    @property
    def rollback(self) -> Rollback:
        return self.facts.rollback


def _plan_data(f: Facts) -> Mapping[str, Any]:
    return next((e.data for e in f.timeline if e.kind == "plan"), {})


def _change(f: Facts) -> Change:
    plan = _plan_data(f)
    templates = plan.get("templates")
    rb = f.rollback
    images_from = tuple(bad_images(f))
    images_to = f.first_value("images_to", "to_images")
    images_to = images_to if isinstance(images_to, list) else []
    restored = templates.get("restored") if isinstance(templates, Mapping) else None
    if isinstance(templates, Mapping) and isinstance(templates.get("bad"), Mapping):
        fields = template_changes(
            templates["bad"], restored if isinstance(restored, Mapping) else {}
        )
        source = "templates"
    elif images_from or images_to:
        fields, source = image_changes(images_from, [str(i) for i in images_to]), "images"
    else:
        fields, source = [], "not recorded"
    diff = plan.get("diff")
    paths: list[Any] = diff if isinstance(diff, list) else []
    # An Argo Rollout's abort journals its ReplicaSets' revisions in the plan.
    bad_rev = rb.from_revision or _revision(plan.get("from_revision"))
    restored_rev = rb.to_revision or _revision(plan.get("to_revision"))
    return Change(bad_rev, restored_rev, source, tuple(fields), tuple(map(str, paths)), images_from)


def _revision(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_draft(
    rollback: Rollback,
    timeline: Sequence[TimelineEntryLike],
    details: Mapping[str, Any] | None,
    impact: Impact,
    now: datetime,
) -> Draft:
    """The draft for one rollback (pure; measure the impact first with ``incident_window``)."""
    facts = Facts(rollback, timeline, details or {})
    return Draft(
        facts=facts,
        window=incident_window(facts, now),
        spans=tuple(spans(facts)),
        impact=impact,
        change=_change(facts),
        action_items=tuple(action_items(facts)),
        generated_at=now,
    )


def _impact_phrase(impact: Impact) -> str:
    if impact.status != "measured":
        return f"Impact: {impact.status.replace('_', ' ')} ({impact.reason})."
    failed = "no data" if impact.failed_requests is None else f"{impact.failed_requests:,.0f}"
    total = "no data" if impact.total_requests is None else f"{impact.total_requests:,.0f}"
    return f"Impact: {failed} of {total} requests failed during the incident window."


def summary_sentence(d: Draft) -> str:
    """One paragraph: what broke, what rollbackd decided and did, how it ended, the impact."""
    rb, f = d.rollback, d.facts
    images = ", ".join(f"`{i}`" for i in d.change.bad_images) or "images not recorded"
    began = d.window.start.isoformat(timespec="seconds") if d.window.start else "an unknown time"
    decided = f.decisions[0].data if f.decisions else {}
    why = decided.get("reason") or "no decision recorded"
    code = decided.get("reason_code") or rb.reason_code or "unknown"
    return (
        f"Revision {rb.from_revision or '?'} of `{rb.target}` ({images}) went bad "
        f"(incident began {began}: {d.window.start_source}). rollbackd decided `{code}` "
        f"({why}) with revision {rb.to_revision or '?'} as the target; it ended `{rb.phase}`: "
        f"{rb.reason or 'no reason recorded'}. {_impact_phrase(d.impact)}"
    )


def _span_json(s: Span) -> dict[str, Any]:
    duration = s.duration
    return {
        "seconds": None if duration is None else duration.total_seconds(),
        "from": s.start_label,
        "to": s.end_label,
        "start": s.start,
        "end": s.end,
        "why_missing": s.why_missing,
    }


def draft_json(d: Draft) -> dict[str, Any]:
    """The stable JSON schema (``rollbackd.postmortem/v1``)."""
    rb, impact = d.rollback, d.impact
    body = {
        "schema": SCHEMA,
        "generated_at": d.generated_at,
        "rollback": {
            "id": rb.id,
            "target": rb.target,
            "phase": rb.phase,
            "reason_code": rb.reason_code,
            "reason": rb.reason,
            "from_revision": rb.from_revision,
            "to_revision": rb.to_revision,
            "started_at": rb.started_at,
            "finished_at": rb.finished_at,
        },
        "summary": summary_sentence(d),
        "window": {
            "start": d.window.start,
            "start_source": d.window.start_source,
            "end": d.window.end,
            "end_source": d.window.end_source,
            "finished": d.window.finished,
        },
        "impact": {
            "status": impact.status,
            "reason": impact.reason,
            "failed_requests": impact.failed_requests,
            "total_requests": impact.total_requests,
            "failed_ratio": impact.failed_ratio,
            "failed_query": impact.failed_query,
            "total_query": impact.total_query,
            "evaluated_at": impact.evaluated_at,
        },
        "durations": {s.name: _span_json(s) for s in d.spans},
        "change": {
            "bad_revision": d.change.bad_revision,
            "restored_revision": d.change.restored_revision,
            "source": d.change.source,
            "bad_images": list(d.change.bad_images),
            "fields": [vars(c) for c in d.change.fields],
            "diff_paths": list(d.change.diff_paths),
        },
        "gitops_owner_paused": gitops_owner(d.facts),
        "what_rollbackd_did": steps_taken(d.facts),
        "action_items": list(d.action_items),
        "timeline": [{"at": e.at, "kind": e.kind, "message": e.message} for e in d.facts.timeline],
    }
    jsonable: dict[str, Any] = to_jsonable(body)
    return jsonable
