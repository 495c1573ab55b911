"""The report of a SUPERSEDED rollback says a human took over, and what now runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rollbackd.model import Phase, Rollback, Target
from rollbackd.report import render_report

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_a_superseded_rollback_reports_the_human_version_left_alone() -> None:
    rollback = Rollback(
        id="rb-1",
        target=Target("shop", "checkout"),
        phase=Phase.SUPERSEDED,
        started_at=T0,
        updated_at=T0 + timedelta(seconds=40),
        finished_at=T0 + timedelta(seconds=40),
        from_revision=2,
        to_revision=1,
        reason_code="superseded",
        reason="the pod template of shop/checkout was changed by someone else while ...",
    )
    details = {
        "during": "VERIFYING",
        "superseded_by": {"images": ["checkout:3.0"], "generation": 4, "revision": 4},
    }

    report = render_report(rollback, [], details)

    assert "Superseded: a human changed the Deployment; rollbackd stepped back" in report
    assert "(`SUPERSEDED`)" in report
    assert "generation 4, revision 4, images `checkout:3.0`; rollbackd left it alone" in report
    # Nothing suggests it verified, or that someone must still act on rollbackd's behalf.
    assert "Verified" not in report
    assert "Action needed" not in report
