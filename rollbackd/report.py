"""The post-incident report: one rollback's story in Markdown, for the review.

An SRE writing the post-incident review needs, in this order: what happened
to which Deployment and how it ended; the key times (anomaly began, detected,
rollback started, ready, verified or failed) and the durations between them;
what triggered rollbackd and why it decided to act; what it changed (revision
and images, with the digests that actually ran); the evidence that the
rollback worked or did not (each verification interval); who was told; and
the complete timeline to copy from. The renderer reads the journal's
timeline and the rollback's details and never fails on missing pieces: a
section with nothing recorded says so.

Timeline data the renderer understands (other entries are listed as-is):
- ``signal`` / ``decision`` / ``notification`` entries (merged in by the journal);
- ``phase:<PHASE>`` events; the first ``phase:VERIFYING`` marks "ready"
  unless some entry or the details carry ``ready_at``;
- ``plan`` events with ``images_from`` / ``images_to`` (lists of images);
- ``images`` events with ``images`` = {container: [image IDs with digests]};
- ``verify_interval`` events with ``index``, ``at``, ``healthy``,
  ``readiness_ok``, ``detail`` and optionally ``evaluations`` = [{signal,
  verdict, value, threshold, detail}].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from rollbackd.durations import format_elapsed
from rollbackd.model import Phase, Rollback


class TimelineEntryLike(Protocol):
    """What the renderer needs from a journal TimelineEntry."""

    @property
    def at(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


_OUTCOMES: Mapping[Phase, str] = {
    Phase.ROLLBACK_COMPLETED: "Rolled back and verified healthy",
    Phase.ESCALATED: "Escalated: a human must act",
    Phase.ROLLBACK_FAILED: "Rollback failed; escalation in progress",
    Phase.DRY_RUN: "Dry run: nothing was changed",
    Phase.SKIPPED: "Skipped: nothing was changed",
    Phase.SUPERSEDED: "Superseded: a human changed the Deployment; rollbackd stepped back",
    Phase.REJECTED: "Rejected by a human: nothing was changed",
    Phase.PENDING: "In progress (pending)",
    Phase.PENDING_APPROVAL: "Waiting for a human to approve or reject",
    Phase.PLANNING: "In progress (planning)",
    Phase.ROLLING_BACK: "In progress (rolling back)",
    Phase.VERIFYING: "In progress (verifying)",
}
_ICONS: Mapping[Phase, str] = {
    Phase.ROLLBACK_COMPLETED: "✅",
    Phase.ESCALATED: "🚨",
    Phase.ROLLBACK_FAILED: "❌",
    Phase.DRY_RUN: "📝",
    Phase.SKIPPED: "⏭️",
    Phase.SUPERSEDED: "🙋",
}


# --- small formatting helpers -------------------------------------------------


def time_text(at: datetime | None) -> str:
    if at is None:
        return "—"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _between(start: datetime | None, end: datetime | None) -> timedelta | None:
    return end - start if start is not None and end is not None else None


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    text = "—" if value is None or value == "" else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


# --- what the timeline says ----------------------------------------------------


class Facts:
    """The key facts extracted from the timeline and the details, once (the draft reads them too)."""

    def __init__(
        self,
        rollback: Rollback,
        timeline: Sequence[TimelineEntryLike],
        details: Mapping[str, Any],
    ) -> None:
        self.rollback = rollback
        self.timeline = sorted(timeline, key=lambda e: e.at)
        self.details = details
        self.signals = [e for e in self.timeline if e.kind == "signal"]
        self.decisions = [e for e in self.timeline if e.kind == "decision"]
        self.notifications = [e for e in self.timeline if e.kind == "notification"]
        self.intervals = [e for e in self.timeline if e.kind == "verify_interval"]
        self.anomaly_began = min(
            (t for t in (_parse_time(s.data.get("started_at")) for s in self.signals) if t),
            default=None,
        )
        self.detected_at = self.signals[0].at if self.signals else None
        self.rollback_started = self._first_phase(Phase.ROLLING_BACK) or (
            rollback.started_at if rollback.phase not in (Phase.DRY_RUN, Phase.SKIPPED) else None
        )
        self.ready_at = self._ready_at()
        self.finished_at = rollback.finished_at

    def _first_phase(self, phase: Phase) -> datetime | None:
        kind = f"phase:{phase}"
        return next((e.at for e in self.timeline if e.kind == kind), None)

    def _ready_at(self) -> datetime | None:
        for data in [self.details, *(e.data for e in self.timeline)]:
            found = _parse_time(data.get("ready_at"))
            if found is not None:
                return found
        return self._first_phase(Phase.VERIFYING)

    def first_value(self, *keys: str) -> Any:
        """The first recorded value under any of ``keys``: details first, then the timeline."""
        for data in [self.details, *(e.data for e in self.timeline)]:
            for key in keys:
                value = data.get(key)
                if value:
                    return value
        return None


# --- sections ------------------------------------------------------------------


def _header(f: Facts) -> list[str]:
    rb = f.rollback
    icon = _ICONS.get(rb.phase, "⏳")
    outcome = _OUTCOMES.get(rb.phase, str(rb.phase))
    lines = [
        f"# Rollback `{rb.id}`: {rb.target}",
        "",
        f"**Outcome:** {icon} {outcome} (`{rb.phase}`)",
    ]
    if rb.reason:
        lines += ["", f"> {rb.reason}"]
    if rb.phase is Phase.ESCALATED:
        lines += ["", f"**Action needed:** a human must resolve `{rb.target}` ({rb.reason_code})."]
    change = f.first_value("superseded_by")
    if rb.phase is Phase.SUPERSEDED and isinstance(change, Mapping):
        images = ", ".join(f"`{i}`" for i in change.get("images") or []) or "none"
        lines += [
            "",
            f"**Now running:** generation {_number(change.get('generation'))}, "
            f"revision {_number(change.get('revision'))}, images {images}; "
            "rollbackd left it alone.",
        ]
    return lines


def _summary(f: Facts) -> list[str]:
    rb = f.rollback
    ended = "Verified" if rb.phase is Phase.ROLLBACK_COMPLETED else "Finished"
    if rb.phase in (Phase.ESCALATED, Phase.ROLLBACK_FAILED):
        ended = "Failed / escalated"
    rows: list[tuple[str, Any]] = [
        ("Target", f"`{rb.target}`"),
        ("Rollback id", f"`{rb.id}`"),
        ("Revisions", f"{_number(rb.from_revision)} → {_number(rb.to_revision)}"),
        ("Anomaly began", time_text(f.anomaly_began)),
        ("Detected at", time_text(f.detected_at)),
        ("Rollback started", time_text(f.rollback_started)),
        ("Rollout ready", time_text(f.ready_at)),
        (ended, time_text(f.finished_at)),
        ("Time to detect", format_elapsed(_between(f.anomaly_began, f.detected_at))),
        (
            "Time to rollback (detected → ready)",
            format_elapsed(_between(f.detected_at or rb.started_at, f.ready_at)),
        ),
        (
            "Impact window (anomaly → verified)",
            format_elapsed(_between(f.anomaly_began, f.finished_at))
            if rb.phase is Phase.ROLLBACK_COMPLETED
            else "—",
        ),
    ]
    return ["## Summary", "", *table(["Item", "Value"], rows)]


def _trigger(f: Facts) -> list[str]:
    lines = ["## Trigger", ""]
    if not f.signals:
        return [*lines, "No triggering signal was recorded for this rollback."]
    rows = []
    for s in f.signals:
        d = s.data
        rows.append(
            (
                d.get("name"),
                d.get("source"),
                d.get("status"),
                _number(d.get("value")),
                _number(d.get("threshold")),
                time_text(_parse_time(d.get("started_at"))),
                time_text(s.at),
            )
        )
    lines += table(
        ["Signal", "Source", "Status", "Value", "Threshold", "Anomaly began", "Seen"], rows
    )
    summaries = [str(s.data["summary"]) for s in f.signals if s.data.get("summary")]
    if summaries:
        lines += ["", *(f"- {text}" for text in dict.fromkeys(summaries))]
    return lines


def _decision(f: Facts) -> list[str]:
    rb = f.rollback
    lines = ["## Decision", ""]
    if f.decisions:
        first = f.decisions[0].data
        lines.append(
            f"- **{first.get('action', '?')}** (`{first.get('reason_code', rb.reason_code)}`): "
            f"{first.get('reason', rb.reason)}"
        )
        joined = len(f.decisions) - 1
        if joined > 0:
            lines.append(f"- {joined} later signal decision(s) joined this rollback.")
    else:
        lines.append(f"- `{rb.reason_code or 'unknown'}`: {rb.reason or 'no reason recorded'}")
    return lines


def _change(f: Facts) -> list[str]:
    rb = f.rollback
    lines = [
        "## What rollbackd changed",
        "",
        f"- Revision **{_number(rb.from_revision)}** → **{_number(rb.to_revision)}**",
    ]
    images_from = f.first_value("images_from", "from_images")
    images_to = f.first_value("images_to", "to_images")
    if images_from:
        lines.append(f"- Images before: {', '.join(f'`{i}`' for i in images_from)}")
    if images_to:
        lines.append(f"- Images restored: {', '.join(f'`{i}`' for i in images_to)}")
    running = f.first_value("images")
    if isinstance(running, Mapping) and running:
        lines += ["", "Image digests running after the rollback:", ""]
        rows = [
            (container, ", ".join(f"`{i}`" for i in ids) if isinstance(ids, list) else ids)
            for container, ids in running.items()
        ]
        lines += table(["Container", "Image ID"], rows)
    elif rb.phase not in (Phase.DRY_RUN, Phase.SKIPPED):
        lines.append("- Image digests: not recorded")
    if rb.phase is Phase.DRY_RUN:
        lines.append("- Dry run: the Deployment was not modified.")
    return lines


def _verification(f: Facts) -> list[str]:
    lines = ["## Verification", ""]
    if not f.intervals:
        return [*lines, "No verification interval was recorded."]
    for e in f.intervals:
        d = e.data
        healthy = d.get("healthy")
        verdict = "healthy" if healthy else "unhealthy" if healthy is not None else "unknown"
        at = _parse_time(d.get("at")) or e.at
        readiness = "ready" if d.get("readiness_ok") else "not ready"
        lines.append(
            f"- **Interval {d.get('index', '?')}** at {time_text(at)}: **{verdict}** "
            f"(pods {readiness}){': ' + str(d['detail']) if d.get('detail') else ''}"
        )
        evaluations = d.get("evaluations")
        if isinstance(evaluations, list) and evaluations:
            rows = [
                (
                    ev.get("signal"),
                    ev.get("verdict"),
                    _number(ev.get("value")),
                    _number(ev.get("threshold")),
                    ev.get("detail"),
                )
                for ev in evaluations
                if isinstance(ev, Mapping)
            ]
            lines += ["", *table(["Signal", "Verdict", "Value", "Threshold", "Detail"], rows), ""]
    return lines


def _notifications(f: Facts) -> list[str]:
    lines = ["## Notifications", ""]
    if not f.notifications:
        return [*lines, "No notification was recorded."]
    rows = []
    for e in f.notifications:
        d = e.data
        kind = f"{d.get('kind')} (resolve)" if d.get("resolves") else d.get("kind")
        rows.append(
            (
                time_text(e.at),
                d.get("channel"),
                kind,
                d.get("severity"),
                "ok" if d.get("ok") else "FAILED",
                d.get("detail"),
            )
        )
    lines += table(["Time", "Channel", "Kind", "Severity", "Result", "Detail"], rows)
    failed = sum(1 for e in f.notifications if not e.data.get("ok"))
    if failed:
        lines += ["", f"**{failed} notification(s) failed**: check that the on-call was reached."]
    return lines


def _timeline(f: Facts) -> list[str]:
    lines = ["## Timeline", ""]
    if not f.timeline:
        return [*lines, "Nothing was recorded."]
    origin = f.timeline[0].at
    rows = [
        (time_text(e.at), "+" + format_elapsed(e.at - origin), e.kind, e.message)
        for e in f.timeline
    ]
    return [*lines, *table(["Time", "Offset", "Kind", "What happened"], rows)]


def story_sections(f: Facts) -> dict[str, list[str]]:
    """Each section's Markdown lines by name, for the report and the postmortem draft."""
    return {
        "header": _header(f),
        "summary": _summary(f),
        "trigger": _trigger(f),
        "decision": _decision(f),
        "change": _change(f),
        "verification": _verification(f),
        "notifications": _notifications(f),
        "timeline": _timeline(f),
    }


FOOTER = "\n\n---\n_Generated by rollbackd from its journal._\n"


def render_report(
    rollback: Rollback,
    timeline: Sequence[TimelineEntryLike],
    details: Mapping[str, Any] | None = None,
) -> str:
    """Markdown post-incident report for ``rollback`` (see the module docstring)."""
    sections = story_sections(Facts(rollback, timeline, details or {})).values()
    return "\n\n".join("\n".join(section) for section in sections) + FOOTER
