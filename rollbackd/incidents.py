"""Codec and rules for the ``rollbackd.io/escalated`` annotation: a Deployment's open pages.

Each replica has its own journal, so an escalation page without a rollback
(``no_recent_rollout``, a guard refusing...) was known only to the leader
that wrote it: a new leader seeing the same breach paged a second incident.
The Deployment carries the record instead, as it carries a rollback's state:
one entry per reason code, written by the leader (fenced, resourceVersion
guarded) when it queues the page and again as each channel delivers it.

    {"no_recent_rollout": {"key": "esc-...", "at": "...", "to": ["pagerduty"],
                           "delivered": ["pagerduty"]}}

``key`` is the page's dedup key, ``at`` when it was written (the incident
window runs from there), ``to`` the channels it was routed to and
``delivered`` those that took it. The rule a new leader applies (pure):

- no entry for the reason inside the incident window: a new incident, paged;
- an entry every routed channel delivered: the same incident, noted as a
  repeat, not paged;
- an entry not delivered everywhere (the old leader died with the page
  queued, or a channel still refusing it): paged again under the same key,
  so PagerDuty folds it into the one incident, and no channel stays silent.

An unreadable annotation (a human's edit) counts as none: a page too many
beats a page lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from rollbackd.model import ANNOTATION_ESCALATED, Target

__all__ = [
    "IncidentLedger",
    "IncidentMark",
    "PriorPage",
    "decode_marks",
    "encode_marks",
    "marks_of",
    "merge_mark",
    "prior_page",
]

log = structlog.get_logger("rollbackd.incidents")


@dataclass(frozen=True)
class IncidentMark:
    """One reason's page on a Deployment: its key, when, where it was meant to go and went."""

    key: str
    at: datetime
    to: frozenset[str] = frozenset()
    delivered: frozenset[str] = frozenset()

    @property
    def covered(self) -> bool:
        """Delivered somewhere, and on every channel it was routed to."""
        return bool(self.delivered) and self.to <= self.delivered


@dataclass(frozen=True)
class PriorPage:
    """An incident already opened on the Deployment: page again (same key) or only note it."""

    key: str
    at: datetime
    delivered: bool


def prior_page(
    marks: Mapping[str, IncidentMark], reason: str, now: datetime, window: timedelta
) -> PriorPage | None:
    """The open incident for ``reason`` at ``now``, if a page inside ``window`` opened one."""
    mark = marks.get(reason)
    if mark is None or mark.at < now - window or mark.at > now + window:
        return None
    return PriorPage(mark.key, mark.at, mark.covered)


def merge_mark(
    marks: Mapping[str, IncidentMark], reason: str, mark: IncidentMark
) -> dict[str, IncidentMark] | None:
    """``marks`` with ``mark`` recorded for ``reason``; None when that changes nothing.

    The same key gains channels (never loses any). A newer incident replaces
    an older one (at the same time too: a grouped page replaces the member
    page that completed the group); an older one (a late delivery) never
    replaces a newer.
    """
    current = marks.get(reason)
    if current is not None and current.key == mark.key:
        merged = replace(
            current, to=current.to | mark.to, delivered=current.delivered | mark.delivered
        )
        if merged == current:
            return None
        mark = merged
    elif current is not None and current.at > mark.at:
        return None
    return {**marks, reason: mark}


def encode_marks(marks: Mapping[str, IncidentMark]) -> str:
    return json.dumps(
        {
            reason: {
                "key": m.key,
                "at": m.at.isoformat(),
                "to": sorted(m.to),
                "delivered": sorted(m.delivered),
            }
            for reason, m in sorted(marks.items())
        },
        separators=(",", ":"),
    )


def decode_marks(text: str | None) -> dict[str, IncidentMark]:
    """The marks in ``text``; entries that do not read are left out (and logged)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        log.warning("escalated_annotation_unreadable", annotation=ANNOTATION_ESCALATED)
        return {}
    marks: dict[str, IncidentMark] = {}
    for reason, entry in raw.items():
        mark = _decode_mark(entry)
        if mark is None:
            log.warning("escalated_annotation_entry_unreadable", reason_code=str(reason)[:64])
            continue
        marks[str(reason)] = mark
    return marks


def marks_of(obj: Mapping[str, Any] | None) -> dict[str, IncidentMark]:
    """The marks on a Deployment as read (from the API or the watch cache)."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return decode_marks(annotations.get(ANNOTATION_ESCALATED))


def _decode_mark(entry: object) -> IncidentMark | None:
    if not isinstance(entry, dict):
        return None
    key, at = entry.get("key"), entry.get("at")
    if not isinstance(key, str) or not key or not isinstance(at, str):
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return None
    to, delivered = _names(entry.get("to", [])), _names(entry.get("delivered", []))
    if when.tzinfo is None or to is None or delivered is None:
        return None
    return IncidentMark(key, when, to, delivered)


def _names(value: object) -> frozenset[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return frozenset(value)


class IncidentLedger(Protocol):
    """Where the escalations read and claim the marks (the watch cache and guarded writes)."""

    def marks(self, target: Target) -> Mapping[str, IncidentMark] | None:
        """The Deployment's marks; None when the cluster cannot tell (cache not synced)."""
        ...

    async def claim(self, target: Target, reason: str, key: str, at: datetime) -> None:
        """Record a page as queued (no channel yet); never raises: the page goes out anyway."""
        ...
