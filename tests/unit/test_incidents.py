"""The ``rollbackd.io/escalated`` record: its codec, the merge of a delivery, the new leader's rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from rollbackd.incidents import (
    IncidentMark,
    PriorPage,
    decode_marks,
    encode_marks,
    marks_of,
    merge_mark,
    prior_page,
)
from rollbackd.model import ANNOTATION_ESCALATED

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=30)
REASON = "no_recent_rollout"
ROUTED = frozenset({"pagerduty", "slack"})


def mark(
    key: str = "esc-1", at: datetime = NOW, *, delivered: set[str] | None = None
) -> IncidentMark:
    return IncidentMark(key, at, ROUTED, frozenset(delivered or ()))


def test_the_record_reads_back_as_written() -> None:
    marks = {REASON: mark(delivered={"pagerduty"}), "paused": IncidentMark("esc-2", NOW)}
    assert decode_marks(encode_marks(marks)) == marks
    deployment = {"metadata": {"annotations": {ANNOTATION_ESCALATED: encode_marks(marks)}}}
    assert marks_of(deployment) == marks
    assert marks_of(None) == {} and marks_of({"metadata": {}}) == {}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        '{"no_recent_rollout": "esc-1"}',
        '{"no_recent_rollout": {"key": "", "at": "2026-06-01T12:00:00+00:00"}}',
        '{"no_recent_rollout": {"key": "esc-1", "at": "yesterday"}}',
        '{"no_recent_rollout": {"key": "esc-1", "at": "2026-06-01T12:00:00"}}',  # no zone
        '{"no_recent_rollout": {"key": "esc-1", "at": "2026-06-01T12:00:00+00:00",'
        ' "delivered": "pagerduty"}}',
    ],
)
def test_a_hostile_or_broken_record_counts_as_none_and_says_so(text: str) -> None:
    with capture_logs() as logs:
        marks = decode_marks(text)
    assert marks == {}
    assert any(e["event"].startswith("escalated_annotation") for e in logs), logs


def test_one_broken_entry_does_not_hide_the_others() -> None:
    good = encode_marks({"paused": mark()})
    text = good[:-1] + ',"no_recent_rollout":{"key":7}}'
    assert decode_marks(text) == {"paused": mark()}


def test_no_record_or_an_elapsed_window_is_a_new_incident() -> None:
    assert prior_page({}, REASON, NOW, WINDOW) is None
    old = {REASON: mark(at=NOW - WINDOW - timedelta(seconds=1), delivered=set(ROUTED))}
    assert prior_page(old, REASON, NOW, WINDOW) is None
    # Another reason's page is another incident.
    assert prior_page({"paused": mark(delivered=set(ROUTED))}, REASON, NOW, WINDOW) is None


def test_a_page_every_routed_channel_took_is_the_same_incident_not_paged_again() -> None:
    marks = {REASON: mark(at=NOW - timedelta(minutes=29), delivered=set(ROUTED))}
    assert prior_page(marks, REASON, NOW, WINDOW) == PriorPage(
        "esc-1", marks[REASON].at, delivered=True
    )


@pytest.mark.parametrize(
    "delivered",
    [set(), {"slack"}],
    ids=["queued-only", "pager-never-took-it"],
)
def test_a_page_not_delivered_everywhere_is_paged_again_under_its_key(delivered: set[str]) -> None:
    marks = {REASON: mark(delivered=delivered)}
    assert prior_page(marks, REASON, NOW + timedelta(minutes=1), WINDOW) == PriorPage(
        "esc-1", NOW, delivered=False
    )


def test_deliveries_add_channels_and_a_repeat_changes_nothing() -> None:
    queued = {REASON: IncidentMark("esc-1", NOW)}
    once = merge_mark(queued, REASON, mark(delivered={"pagerduty"}))
    assert once is not None and once[REASON].delivered == {"pagerduty"}
    twice = merge_mark(once, REASON, mark(delivered={"slack"}))
    assert twice is not None and twice[REASON].delivered == ROUTED and twice[REASON].covered
    assert merge_mark(twice, REASON, mark(delivered={"slack"})) is None
    # A queued claim of the same page never takes a delivery back.
    assert merge_mark(twice, REASON, IncidentMark("esc-1", NOW)) is None


def test_a_newer_incident_replaces_an_older_one_never_the_reverse() -> None:
    old = {REASON: mark("esc-old", NOW - timedelta(hours=1), delivered=set(ROUTED))}
    newer = merge_mark(old, REASON, IncidentMark("esc-new", NOW))
    assert newer is not None and newer[REASON].key == "esc-new"
    # The old page's late delivery (a slow channel) leaves the newer incident alone.
    assert (
        merge_mark(newer, REASON, mark("esc-old", NOW - timedelta(hours=1), delivered={"x"}))
        is None
    )
