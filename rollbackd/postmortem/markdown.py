"""The postmortem draft in Markdown, ready to paste into the team's review document.

Sections, in the order a review is written: summary, impact (with the exact
PromQL), the change that caused it, action items, then what rollbackd did
(trigger, decision, what it changed, verification, pages: the report's own
sections) and the complete timeline, where event kinds this renderer does
not know (e.g. an approval) are listed as they were journaled.
"""

from __future__ import annotations

from rollbackd.durations import format_elapsed
from rollbackd.postmortem.draft import Draft, summary_sentence
from rollbackd.postmortem.impact import Impact
from rollbackd.report import FOOTER, story_sections, table, time_text

NOT_AVAILABLE = "n/a"


def _code(text: str) -> str:
    """Inline code, unless the text would close it early (a value is data, not Markdown)."""
    return text if "`" in text else f"`{text}`"


def _count(value: float | None) -> str:
    return "no data" if value is None else f"{value:,.0f}"


def _impact_figures(impact: Impact) -> list[str]:
    if impact.status == "unavailable":
        return [f"**Requests failed:** unavailable ({impact.reason})"]
    if impact.status == "no_data":
        return [f"**Requests failed:** no data ({impact.reason})"]
    ratio = impact.failed_ratio
    share = f" ({ratio:.2%} of {_count(impact.total_requests)})" if ratio is not None else ""
    lines = [
        f"**Requests failed:** {_count(impact.failed_requests)}{share}",
        f"**Requests served:** {_count(impact.total_requests)}",
    ]
    if impact.reason:
        lines.append(f"_Note: {impact.reason}._")
    return lines


def _impact(d: Draft) -> list[str]:
    w, impact = d.window, d.impact
    window = f"{time_text(w.start)} ({w.start_source}) → {time_text(w.end)} ({w.end_source})"
    lines = ["## Impact", "", f"**Incident window:** {window}", ""]
    lines += [f"{line}  " for line in _impact_figures(impact)]
    rows = [
        (
            f"Time to {s.name}",
            format_elapsed(s.duration) if s.why_missing is None else NOT_AVAILABLE,
            f"{s.start_label} → {s.end_label}",
            time_text(s.start),
            time_text(s.end),
            s.why_missing,
        )
        for s in d.spans
    ]
    lines += ["", *table(["Measure", "Duration", "From → to", "Start", "End", "Why n/a"], rows)]
    if impact.failed_query:
        lines += [
            "",
            f"Re-run in Prometheus (instant queries at {time_text(impact.evaluated_at)}):",
            "",
            "```promql",
            impact.failed_query,
            impact.total_query or "",
            "```",
            "",
            "_increase() extrapolates to the window's edges: the counts are close, not exact._",
        ]
    return lines


def _change(d: Draft) -> list[str]:
    c = d.change
    lines = [
        "## The change that caused it",
        "",
        f"Bad revision **{c.bad_revision or '?'}**, restored revision "
        f"**{c.restored_revision or '?'}**.",
    ]
    if c.source == "not recorded":
        return [*lines, "", "The change was not recorded (no plan in the journal)."]
    if c.source == "images":
        lines += ["", "_Only the images were journaled for this rollback._"]
    if c.fields:
        rows = [(f.container, f.field, _code(f.bad), _code(f.restored)) for f in c.fields]
        lines += ["", *table(["Container", "Field", "Bad revision", "Restored revision"], rows)]
    else:
        lines += ["", "No difference in images, env, args, command or resources."]
    if c.diff_paths:
        lines += ["", "Template paths that differ: " + ", ".join(f"`{p}`" for p in c.diff_paths)]
    return lines


def _actions(d: Draft) -> list[str]:
    return ["## Action items", "", *(f"- [ ] {item}" for item in d.action_items)]


def render_markdown(d: Draft) -> str:
    """The whole draft as Markdown (see the module docstring)."""
    story = story_sections(d.facts)
    did = ["## What rollbackd did"]
    for name in ("trigger", "decision", "change", "verification", "notifications"):
        # One level down: these are parts of "what rollbackd did".
        section = story[name]
        did += ["", "#" + section[0], *section[1:]]
    sections = [
        story["header"],
        ["## Summary", "", summary_sentence(d)],
        _impact(d),
        _change(d),
        _actions(d),
        did,
        story["timeline"],
    ]
    return "\n\n".join("\n".join(s) for s in sections) + FOOTER
