"""An Argo Rollouts abort journals the change it undoes: the canary's and the stable's templates.

Rollout shop/web: stable web-s1 (revision 1, image 1.0) and canary web-c2
(revision 2, image 2.0, a new env var holding a password and a changed
argument). The plan event built from them feeds the postmortem draft as a
Deployment's plan does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rollbackd.argochange import abort_plan_event
from rollbackd.journal import TimelineEntry
from rollbackd.model import Phase, Rollback, Target
from rollbackd.postmortem.actions import action_items
from rollbackd.postmortem.draft import build_draft
from rollbackd.postmortem.impact import Impact
from rollbackd.postmortem.markdown import render_markdown
from rollbackd.redact import MASK
from rollbackd.report import Facts
from rollbackd.strategies.argorollouts import AbortPlan

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLAN = AbortPlan(
    rollback_id="rb-1",
    rollout="shop/web",
    canary_hash="c2",
    stable_hash="s1",
    canary_rs="web-c2",
    stable_rs="web-s1",
    replicas=4,
)


def rs(hash_: str, revision: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{hash_}",
            "annotations": {"rollout.argoproj.io/revision": revision},
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": hash_}},
                "spec": {"containers": [{"name": "app", "image": image, **container}]},
            }
        },
    }


STABLE = rs("s1", "1", "example/app:1.0", args=["--workers=4"])
CANARY = rs(
    "c2",
    "2",
    "example/app:2.0",
    args=["--workers=8"],
    env=[{"name": "DB_PASSWORD", "value": "hunter2"}],
)


def test_the_plan_event_holds_both_templates_compact_and_masked() -> None:
    message, data = abort_plan_event(PLAN, [STABLE, CANARY, "junk", {"metadata": None}])

    assert message == PLAN.summary
    assert data["images_from"] == ["example/app:2.0"] and data["images_to"] == ["example/app:1.0"]
    assert (data["from_revision"], data["to_revision"]) == (2, 1)
    assert data["strategy"] == "argo-rollouts" and data["changes"] == PLAN.changes()
    # The hash label differs by construction: it is not part of the change.
    assert not [p for p in data["diff"] if "rollouts-pod-template-hash" in p]
    assert data["diff"] and all(p.startswith("spec.containers") for p in data["diff"])
    bad = data["templates"]["bad"]["containers"][0]
    assert bad["env"] == {"DB_PASSWORD": MASK} and "hunter2" not in repr(data)


def test_a_replicaset_not_found_journals_no_templates_and_no_crash() -> None:
    _, data = abort_plan_event(PLAN, [STABLE])

    assert "templates" not in data and data["diff"] == []
    assert data["images_from"] == [] and data["from_revision"] is None


def test_the_postmortem_shows_the_canarys_change_against_the_stable_version() -> None:
    message, data = abort_plan_event(PLAN, [STABLE, CANARY])
    rollback = Rollback(
        id="rb-1",
        target=Target("shop", "web"),
        phase=Phase.ROLLBACK_COMPLETED,
        started_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
    )
    timeline = [TimelineEntry(NOW, "plan", message, data)]
    impact = Impact("unavailable", "no Prometheus", None, None, "", "", None)

    draft = build_draft(rollback, timeline, None, impact, NOW)

    change = draft.change
    assert (change.source, change.bad_revision, change.restored_revision) == ("templates", 2, 1)
    rows = {(f.container, f.field): (f.bad, f.restored) for f in change.fields}
    assert rows[("app", "image")] == ("example/app:2.0", "example/app:1.0")
    assert rows[("app", "args")] == ("--workers=8", "--workers=4")
    assert rows[("app", "env DB_PASSWORD")] == (MASK, "(absent)")
    text = render_markdown(draft)
    assert "Bad revision **2**, restored revision **1**." in text
    assert "hunter2" not in text


def test_an_escalated_abort_gives_the_argo_abort_as_the_manual_rollback() -> None:
    message, data = abort_plan_event(PLAN, [STABLE, CANARY])
    rollback = Rollback(
        id="rb-1",
        target=Target("shop", "web"),
        phase=Phase.ESCALATED,
        started_at=NOW,
        updated_at=NOW,
        reason="rollout_abort_not_done",
    )

    items = action_items(Facts(rollback, [TimelineEntry(NOW, "plan", message, data)], {}))

    assert "`kubectl argo rollouts abort web -n shop`" in items[0], items


def test_a_completed_abort_asks_to_fix_forward_the_canarys_revision() -> None:
    message, data = abort_plan_event(PLAN, [STABLE, CANARY])
    rollback = Rollback(
        id="rb-1",
        target=Target("shop", "web"),
        phase=Phase.ROLLBACK_COMPLETED,
        started_at=NOW,
        updated_at=NOW,
    )

    items = action_items(Facts(rollback, [TimelineEntry(NOW, "plan", message, data)], {}))

    assert items[0].startswith(
        "Fix forward: the bad revision 2's image `example/app:2.0` failed; revision 1's template"
    ), items
