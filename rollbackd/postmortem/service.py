"""Reading the journal, asking Prometheus, rendering: the draft's one I/O entry point."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from rollbackd.model import Rollback
from rollbackd.postmortem.draft import SCHEMA, Draft, build_draft, draft_json
from rollbackd.postmortem.impact import Impact, measure_impact
from rollbackd.postmortem.markdown import render_markdown
from rollbackd.postmortem.source import ImpactSource
from rollbackd.postmortem.times import incident_window
from rollbackd.redact import redact_text, redact_value
from rollbackd.report import Facts, TimelineEntryLike

__all__ = [
    "FORMATS",
    "SCHEMA",
    "Draft",
    "Impact",
    "ImpactSource",
    "JournalForDraft",
    "draft_for",
    "render_draft",
]

Format = Literal["markdown", "json"]
FORMATS: tuple[Format, ...] = ("markdown", "json")


class JournalForDraft(Protocol):
    """What the draft reads from the journal."""

    async def get_rollback(self, rollback_id: str) -> Rollback | None: ...
    async def timeline(self, rollback_id: str) -> Sequence[TimelineEntryLike]: ...
    async def rollback_details(self, rollback_id: str) -> dict[str, Any] | None: ...


async def draft_for(
    journal: JournalForDraft, rollback_id: str, source: ImpactSource, *, now: datetime
) -> Draft | None:
    """The draft for ``rollback_id``, its impact asked of Prometheus; None for an unknown id."""
    rollback = await journal.get_rollback(rollback_id)
    if rollback is None:
        return None
    timeline = list(await journal.timeline(rollback_id))
    details = await journal.rollback_details(rollback_id)
    window = incident_window(Facts(rollback, timeline, details or {}), now)
    impact = await measure_impact(
        source.promql, source.settings, rollback.target, window, source.deployment_label
    )
    return build_draft(rollback, timeline, details, impact, now)


def render_draft(draft: Draft, fmt: Format) -> str:
    """The draft as Markdown or JSON text, credentials in URLs and headers masked."""
    if fmt == "json":
        return json.dumps(redact_value(draft_json(draft)), indent=2, ensure_ascii=False) + "\n"
    return redact_text(render_markdown(draft))
