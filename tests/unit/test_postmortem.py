"""The postmortem draft, from a journal timeline: durations, the change, action items, output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.config.report import ReportSettings
from rollbackd.journal import TimelineEntry
from rollbackd.model import Phase, Rollback, Target
from rollbackd.postmortem.change import compact_template, image_changes, template_changes
from rollbackd.postmortem.draft import SCHEMA, build_draft, draft_json
from rollbackd.postmortem.impact import Impact, measure_impact
from rollbackd.postmortem.markdown import render_markdown
from rollbackd.postmortem.times import Window
from rollbackd.promql import PromQLError, Sample
from rollbackd.redact import MASK

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
APP = Target("shop", "checkout")
BAD_IMAGE = "registry.example/checkout:2.0.0"
GOOD_IMAGE = "registry.example/checkout:1.9.3"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def template(image: str, env: list[dict[str, Any]], args: list[str], cpu: str) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": image,
        "env": env,
        "args": args,
        "resources": {"limits": {"cpu": cpu}},
    }
    return {"metadata": {"labels": {"app": "checkout"}}, "spec": {"containers": [container]}}


BAD_TEMPLATE = template(
    BAD_IMAGE,
    [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "DB_PASSWORD", "value": "hunter2-bad"},
        {"name": "UPSTREAM", "value": "https://svc:pa55word@orders.internal/v2"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "checkout", "key": "api"}}},
    ],
    ["--workers=8"],
    "500m",
)
GOOD_TEMPLATE = template(
    GOOD_IMAGE,
    [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "DB_PASSWORD", "value": "hunter2-good"},
        {"name": "UPSTREAM", "value": "https://orders.internal/v1"},
    ],
    ["--workers=4"],
    "500m",
)


def rollback(phase: Phase = Phase.ROLLBACK_COMPLETED, **changes: Any) -> Rollback:
    rb = Rollback(
        id="rb-20260301-120040-abc123",
        target=APP,
        phase=phase,
        started_at=at(40),
        updated_at=at(95),
        from_revision=7,
        to_revision=6,
        reason_code="verified",
        reason="3 of 3 intervals healthy",
        finished_at=at(95),
    )
    return replace(rb, **changes)


def signal() -> TimelineEntry:
    data = {"name": "error_ratio", "source": "prometheus", "started_at": at(10).isoformat()}
    return TimelineEntry(at(38), "signal", "prometheus signal error_ratio firing", data)


def decision() -> TimelineEntry:
    data = {"action": "rollback", "reason_code": "rollback", "reason": "error_ratio breached"}
    return TimelineEntry(at(40), "decision", "decision rollback", data)


def plan(**extra: Any) -> TimelineEntry:
    data = {
        "diff": ["spec.containers[app].args", "spec.containers[app].image"],
        "images_from": [BAD_IMAGE],
        "images_to": [GOOD_IMAGE],
        "templates": {
            "bad": compact_template(BAD_TEMPLATE),
            "restored": compact_template(GOOD_TEMPLATE),
        },
        "rollout_started_at": at(0).isoformat().replace("+00:00", "Z"),
        **extra,
    }
    return TimelineEntry(at(41), "plan", "rolling back from revision 7 to revision 6", data)


def story(*extra: TimelineEntry) -> list[TimelineEntry]:
    """A completed rollback: bad rollout at 0, bad samples from 10, decided 40, ready 60, done 95."""
    return [
        signal(),
        decision(),
        plan(),
        TimelineEntry(at(42), "phase:ROLLING_BACK", "patched the template"),
        TimelineEntry(at(60), "phase:VERIFYING", "rollout ready"),
        TimelineEntry(at(95), "phase:ROLLBACK_COMPLETED", "3 of 3 intervals healthy"),
        *extra,
    ]


MEASURED = Impact("measured", None, 120.0, 4000.0, "sum(failed)", "sum(total)", at(95))
NOW = at(600)


def durations(draft: Any) -> dict[str, Any]:
    return {s.name: (s.duration, s.why_missing) for s in draft.spans}


# --- times ---------------------------------------------------------------------------


def test_detect_mitigate_verify_come_from_the_timeline() -> None:
    draft = build_draft(rollback(), story(), None, MEASURED, NOW)
    assert durations(draft) == {
        "detect": (timedelta(seconds=30), None),  # first bad sample (10) -> decision (40)
        "mitigate": (timedelta(seconds=20), None),  # decision -> Ready (60)
        "verify": (timedelta(seconds=35), None),  # Ready -> ROLLBACK_COMPLETED (95)
    }


def test_the_window_runs_from_the_bad_rollout_to_the_end_of_the_rollback() -> None:
    w = build_draft(rollback(), story(), None, MEASURED, NOW).window
    assert (w.start, w.end, w.finished) == (at(0), at(95), True)
    assert w.start_source == "bad rollout began (new ReplicaSet created)"
    # A plan journaled before the rollout start was recorded: the first bad sample.
    older = [e if e.kind != "plan" else plan(rollout_started_at=None) for e in story()]
    w = build_draft(rollback(), older, None, MEASURED, NOW).window
    assert (w.start, w.start_source) == (at(10), "first bad sample")


def test_a_rollback_still_running_is_measured_until_now_and_verify_is_na() -> None:
    running = rollback(Phase.VERIFYING, finished_at=None)
    draft = build_draft(running, story()[:-1], None, MEASURED, NOW)
    assert (draft.window.end, draft.window.finished) == (NOW, False)
    assert durations(draft)["verify"] == (None, "verification has not ended (phase VERIFYING)")


def test_missing_steps_are_na_with_the_reason() -> None:
    # Escalated before the restored revision was Ready: no mitigation, no verification.
    escalated = rollback(Phase.ESCALATED, reason_code="rollout_timeout", reason="not ready")
    draft = build_draft(escalated, story()[:4], None, MEASURED, NOW)
    d = durations(draft)
    assert d["detect"] == (timedelta(seconds=30), None)
    assert d["mitigate"] == (None, "the restored revision never became Ready")
    assert d["verify"][1] == "verification never started: the restored revision was not Ready"
    # A manual rollback has no signal and no recorded rollout start.
    manual = [decision(), plan(rollout_started_at=None)]
    d = durations(build_draft(rollback(), manual, None, MEASURED, NOW))
    assert d["detect"][0] is None and "no bad sample or rollout start" in d["detect"][1]
    # A dry run did nothing to mitigate.
    d = durations(build_draft(rollback(Phase.DRY_RUN), [signal(), decision()], None, MEASURED, NOW))
    assert d["mitigate"] == (None, "nothing was rolled back (DRY_RUN)")


# --- the change ----------------------------------------------------------------------


def test_the_journaled_templates_never_hold_a_secret() -> None:
    compact = json.dumps(compact_template(BAD_TEMPLATE))
    assert "hunter2" not in compact and "pa55word" not in compact
    env = compact_template(BAD_TEMPLATE)["containers"][0]["env"]
    assert env["DB_PASSWORD"] == MASK
    assert env["UPSTREAM"] == f"https://svc:{MASK}@orders.internal/v2"
    assert env["API_KEY"] == "from secretKeyRef checkout/api"
    assert env["LOG_LEVEL"] == "debug"


def test_the_change_lists_each_field_the_bad_revision_changed() -> None:
    changes = {
        (c.container, c.field): (c.bad, c.restored)
        for c in template_changes(compact_template(BAD_TEMPLATE), compact_template(GOOD_TEMPLATE))
    }
    assert changes == {
        ("app", "image"): (BAD_IMAGE, GOOD_IMAGE),
        ("app", "args"): ("--workers=8", "--workers=4"),
        ("app", "env LOG_LEVEL"): ("debug", "info"),
        ("app", "env UPSTREAM"): (
            f"https://svc:{MASK}@orders.internal/v2",
            "https://orders.internal/v1",
        ),
        ("app", "env API_KEY"): ("from secretKeyRef checkout/api", "(absent)"),
        # DB_PASSWORD changed too, but both sides are masked: no line, no leak.
    }


def test_an_added_sidecar_and_an_old_plan_without_templates() -> None:
    with_sidecar = {
        "spec": {"containers": [*BAD_TEMPLATE["spec"]["containers"], {"name": "proxy"}]}
    }
    changes = template_changes(compact_template(with_sidecar), compact_template(BAD_TEMPLATE))
    assert [(c.container, c.field, c.bad) for c in changes] == [("proxy", "container", "added")]
    assert [(c.bad, c.restored) for c in image_changes([BAD_IMAGE], [GOOD_IMAGE])] == [
        (BAD_IMAGE, GOOD_IMAGE)
    ]
    old_plan = TimelineEntry(at(41), "plan", "plan", {"images_from": [BAD_IMAGE]})
    draft = build_draft(rollback(), [signal(), decision(), old_plan], None, MEASURED, NOW)
    assert draft.change.source == "images"


# --- action items ----------------------------------------------------------------------


def items(rb: Rollback, timeline: list[TimelineEntry], details: Any = None) -> list[str]:
    return list(build_draft(rb, timeline, details, MEASURED, NOW).action_items)


def test_a_blue_green_escalation_gives_the_selector_switch_as_the_manual_undo() -> None:
    changes = {"service": "checkout", "selector_after": {"app": "checkout", "version": "blue"}}
    plan = TimelineEntry(at(41), "plan", "blue-green: switching", {"changes": changes})
    escalated = rollback(Phase.ESCALATED, reason="previous colour not Ready")
    (manual,) = items(escalated, [signal(), decision(), plan])
    assert (
        "kubectl -n shop patch service checkout -p "
        '\'{"spec": {"selector": {"app": "checkout", "version": "blue"}}}\''
    ) in manual


def test_action_items_follow_from_what_happened() -> None:
    (fix,) = items(rollback(), story())
    assert fix.startswith(f"Fix forward: the bad revision 7's image `{BAD_IMAGE}`")
    escalated = rollback(Phase.ESCALATED, reason="verification failed: error ratio 0.2")
    (manual,) = items(escalated, story()[:5])
    assert manual.startswith("Manual rollback needed: verification failed: error ratio 0.2")
    assert "kubectl -n shop rollout undo deployment/checkout --to-revision=6" in manual
    superseded = rollback(Phase.SUPERSEDED)
    details = {"superseded_by": {"revision": 8, "images": ["checkout:2.0.1"]}}
    (human,) = items(superseded, story()[:5], details)
    assert human.startswith("A human took over") and "`checkout:2.0.1`" in human
    (dry,) = items(rollback(Phase.DRY_RUN), [signal(), decision()])
    assert dry.startswith("Nothing was changed (dry run)")


def test_a_paused_gitops_owner_must_be_resumed_after_git_is_reverted() -> None:
    paused = TimelineEntry(
        at(41.5),
        "gitops_paused",
        "Application argocd/shop paused",
        {"owner": "argocd:shop", "kind": "Application", "namespace": "argocd", "name": "shop"},
    )
    escalated = rollback(Phase.ESCALATED, reason="verification failed")
    first, second = items(escalated, [*story()[:5], paused])
    assert first.startswith("Revert the change in Git, then resume sync of Application argocd/shop")
    assert second.startswith("Manual rollback needed")
    # Completed: fixing forward comes first, then Git and the sync.
    fix, git = items(rollback(), story(paused))
    assert fix.startswith("Fix forward") and git.startswith("Revert the change in Git")


def test_a_blue_green_services_own_paused_owner_is_named_beside_the_deployments() -> None:
    def paused(name: str, **extra: str) -> TimelineEntry:
        data = {"owner": f"argocd:{name}", "kind": "Application", "namespace": "argocd"}
        return TimelineEntry(
            at(41.5), "gitops_paused", f"{name} paused", {**data, "name": name, **extra}
        )

    timeline = [*story()[:5], paused("shop"), paused("shop-routing", of="Service shop/checkout")]
    (git, _manual) = items(rollback(Phase.ESCALATED, reason="verification failed"), timeline)
    assert git.startswith(
        "Revert the change in Git, then resume sync of "
        "Application argocd/shop, Application argocd/shop-routing"
    ), git


# --- rendering ---------------------------------------------------------------------------


def test_markdown_has_every_section_and_the_facts() -> None:
    approval = TimelineEntry(at(39), "approved", "approved by alice", {"by": "alice"})
    text = render_markdown(build_draft(rollback(), story(approval), None, MEASURED, NOW))
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Summary",
        "## Impact",
        "## The change that caused it",
        "## Action items",
        "## What rollbackd did",
        "## Timeline",
    ]
    assert "Impact: 120 of 4,000 requests failed during the incident window." in text
    assert "rollbackd decided `rollback` (error_ratio breached)" in text
    assert "**Requests failed:** 120 (3.00% of 4,000)" in text
    assert "| Time to detect | 30.0 s |" in text
    assert "```promql\nsum(failed)\nsum(total)\n```" in text
    assert f"| app | image | `{BAD_IMAGE}` | `{GOOD_IMAGE}` |" in text
    assert "- [ ] Fix forward" in text
    assert "### Verification" in text and "### Trigger" in text
    # An event kind the renderer does not know is still in the timeline, as journaled.
    assert "| approved | approved by alice |" in text


@pytest.mark.parametrize(
    ("impact", "expected"),
    [
        (Impact("unavailable", "Prometheus answered HTTP 503"), "unavailable (Prometheus"),
        (Impact("no_data", "no samples"), "**Requests failed:** no data (no samples)"),
        (Impact("measured", "one query has no data", None, 50.0), "**Requests failed:** no data"),
    ],
)
def test_markdown_never_turns_missing_impact_into_zero(impact: Impact, expected: str) -> None:
    text = render_markdown(build_draft(rollback(), story(), None, impact, NOW))
    assert expected in text
    assert "**Requests failed:** 0" not in text


def test_json_schema_is_stable() -> None:
    body = draft_json(build_draft(rollback(), story(), None, MEASURED, NOW))
    json.dumps(body)  # plain JSON values only
    assert body["schema"] == SCHEMA == "rollbackd.postmortem/v1"
    assert list(body) == [
        "schema",
        "generated_at",
        "rollback",
        "summary",
        "window",
        "impact",
        "durations",
        "change",
        "gitops_owner_paused",
        "what_rollbackd_did",
        "action_items",
        "timeline",
    ]
    assert set(body["impact"]) == {
        "status",
        "reason",
        "failed_requests",
        "total_requests",
        "failed_ratio",
        "failed_query",
        "total_query",
        "evaluated_at",
    }
    assert body["impact"]["failed_ratio"] == pytest.approx(0.03)
    assert body["durations"]["detect"] == {
        "seconds": 30.0,
        "from": "first bad sample",
        "to": "decision",
        "start": at(10).isoformat(),
        "end": at(40).isoformat(),
        "why_missing": None,
    }
    assert body["change"]["fields"][0] == {
        "container": "app",
        "field": "image",
        "bad": BAD_IMAGE,
        "restored": GOOD_IMAGE,
    }
    assert [s["kind"] for s in body["what_rollbackd_did"]][:2] == ["decision", "plan"]


# --- impact without a real Prometheus (the real one: tests/integration) ------------------


class SlowPromQL:
    async def query(self, expr: str, at: datetime | None = None) -> list[Sample]:
        await asyncio.sleep(30)
        return []


class FailingPromQL:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def query(self, expr: str, at: datetime | None = None) -> list[Sample]:
        self.asked.append(expr)
        raise PromQLError("Prometheus answered HTTP 429")


WINDOW = Window(at(0), "bad rollout began", at(95), "ROLLBACK_COMPLETED", True)


async def test_impact_is_unavailable_when_prometheus_is_slow_failing_or_absent() -> None:
    fast = ReportSettings(impact_timeout=timedelta(milliseconds=200))
    slow = await measure_impact(SlowPromQL(), fast, APP, WINDOW)  # type: ignore[arg-type]
    assert (slow.status, slow.reason) == ("unavailable", "Prometheus did not answer within 200ms")
    failing = FailingPromQL()
    answer = await measure_impact(failing, fast, APP, WINDOW)  # type: ignore[arg-type]
    assert (answer.status, answer.reason) == ("unavailable", "Prometheus answered HTTP 429")
    assert answer.failed_query in failing.asked  # the query is still printed for a human
    assert 'namespace="shop",deployment="checkout"' in (answer.failed_query or "")
    assert "[95s]" in (answer.failed_query or "")
    absent = await measure_impact(None, fast, APP, WINDOW)
    assert absent.status == "unavailable" and "no Prometheus configured" in (absent.reason or "")
    unknown = Window(None, "not recorded", at(95), "ESCALATED", True)
    assert (await measure_impact(None, fast, APP, unknown)).reason == (
        "the incident window is unknown: no rollout start or bad sample recorded"
    )


# --- hostile or odd journal data ---------------------------------------------------------


def test_a_hostile_plan_renders_without_breaking_the_markdown() -> None:
    hostile_env = [{"name": "BANNER", "value": "a | b\n## injected\n`x`"}]
    bad = compact_template(template(BAD_IMAGE, hostile_env, [], "1"))
    odd_plans = [
        plan(templates={"bad": bad, "restored": compact_template(GOOD_TEMPLATE)}),
        plan(templates={"bad": bad, "restored": "not a template"}),
        plan(templates={"bad": {"containers": "not a list"}, "restored": None}),
        plan(templates={"bad": {"containers": [{"name": "app", "env": ["A", "B"]}]}}),
        plan(templates="junk", images_from="not-a-list", rollout_started_at="yesterday"),
    ]
    for odd in odd_plans:
        timeline = [signal(), decision(), odd]
        draft = build_draft(rollback(), timeline, None, MEASURED, NOW)
        text = render_markdown(draft)
        json.dumps(draft_json(draft))
        assert "\n## injected" not in text  # a value never becomes a heading
        assert draft.window.start is not None  # a bad rollout time falls back to the sample
    first = build_draft(rollback(), [signal(), decision(), odd_plans[0]], None, MEASURED, NOW)
    banner = next(c for c in first.change.fields if c.field == "env BANNER")
    assert banner.restored == "(absent)"
    assert "| a \\| b ## injected `x` |" in render_markdown(first)
