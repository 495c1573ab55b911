"""Routing, as a specification: a Deployment's facts choose a route, a page's kind its levels.

Pure: plain values in, channel names out; no clock, no cluster, no journal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollbackd.config import Settings
from rollbackd.model import Phase, Target
from rollbackd.notify.model import Notification, NotificationKind
from rollbackd.notify.reescalate import Unresolved, is_due, lead_page
from rollbackd.notify.routing import (
    DETAIL_LEVEL,
    Level,
    Route,
    Router,
    TargetFacts,
    audience,
    choose_route,
    levels_for,
    routes_from_settings,
)

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
SHOP = Target("shop", "checkout")

PAYMENTS = Route("payments", oncall=("pay-oncall",), lead=("pay-lead",), teams=frozenset({"pay"}))
CRITICAL = Route(
    "critical", oncall=("crit-oncall",), lead=("crit-lead",), labels={"tier": "critical"}
)
SHOP_NS = Route(
    "shop-ns", oncall=("shop-oncall",), lead=("shop-lead",), namespaces=frozenset({"shop"})
)
DEFAULT = Route("default", oncall=("sre-oncall",), lead=("sre-lead",), default=True)
ROUTES = (PAYMENTS, CRITICAL, SHOP_NS, DEFAULT)


def page(
    kind: NotificationKind, reason_code: str = "", *, resolves: bool = False, **details: Any
) -> Notification:
    return Notification(
        kind=kind,
        severity="critical" if kind is NotificationKind.ESCALATION else "info",
        dedup_key="rb-1",
        target=SHOP,
        summary="s",
        details={"reason_code": reason_code, **details},
        created_at=NOW,
        resolves=resolves,
    )


# --- which route ------------------------------------------------------------------


def test_the_team_annotation_chooses_its_route() -> None:
    choice = choose_route(ROUTES, TargetFacts("shop", team="pay"))
    assert choice.route is PAYMENTS and not choice.defaulted


def test_labels_choose_a_route_when_every_listed_label_is_equal() -> None:
    assert choose_route(ROUTES, TargetFacts("other", labels={"tier": "critical"})).route is CRITICAL
    assert choose_route(ROUTES, TargetFacts("other", labels={"tier": "low"})).route is DEFAULT


def test_the_first_matching_route_wins_in_config_order() -> None:
    # Matches payments (team), critical (label) and shop-ns (namespace): payments is first.
    facts = TargetFacts("shop", labels={"tier": "critical"}, team="pay")
    assert choose_route(ROUTES, facts).route is PAYMENTS
    assert choose_route(ROUTES, TargetFacts("shop", team="web")).route is SHOP_NS


def test_a_team_no_route_knows_falls_to_the_default_route_never_to_silence() -> None:
    choice = choose_route(ROUTES, TargetFacts("elsewhere", team="nobody"))
    assert choice.route is DEFAULT and choice.defaulted


def test_an_unseen_deployment_is_routed_by_its_namespace_alone() -> None:
    assert choose_route(ROUTES, TargetFacts("shop", known=False)).route is SHOP_NS


def test_every_criterion_of_one_match_must_hold() -> None:
    both = Route("both", oncall=("x",), namespaces=frozenset({"shop"}), teams=frozenset({"pay"}))
    assert both.matches(TargetFacts("shop", team="pay"))
    assert not both.matches(TargetFacts("shop", team="web"))
    assert not both.matches(TargetFacts("other", team="pay"))


# --- which levels -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        NotificationKind.ROLLBACK_STARTED,
        NotificationKind.SUPERSEDED,
        NotificationKind.DRY_RUN,
    ],
)
def test_on_call_alone_hears_about_every_rollback(kind: NotificationKind) -> None:
    assert levels_for(page(kind)) == {Level.ONCALL}
    assert audience(page(kind), PAYMENTS) == {"pay-oncall"}


def test_a_completed_rollback_resolves_on_call() -> None:
    done = page(NotificationKind.ROLLBACK_COMPLETED, resolves=True)
    assert audience(done, PAYMENTS) == {"pay-oncall"}


@pytest.mark.parametrize(
    "reason_code",
    [
        "verify_breach",
        "verify_smoke_failed",
        "restored_revision_breaching",
        "no_previous_revision",
        "no_stable_previous_revision",
        "guard_disallowed_fields",
        "rollout_timeout",
        "something_added_later",
    ],
)
def test_an_escalation_needing_a_human_now_pages_the_lead_as_well(reason_code: str) -> None:
    assert audience(page(NotificationKind.ESCALATION, reason_code), PAYMENTS) == {
        "pay-oncall",
        "pay-lead",
    }


@pytest.mark.parametrize("reason_code", ["no_recent_rollout", "paused"])
def test_not_a_deploy_problem_pages_on_call_first(reason_code: str) -> None:
    assert audience(page(NotificationKind.ESCALATION, reason_code), PAYMENTS) == {"pay-oncall"}


def test_a_re_escalation_goes_to_the_lead_only_not_again_to_on_call() -> None:
    again = page(NotificationKind.ESCALATION, "no_recent_rollout", **{DETAIL_LEVEL: "lead"})
    assert audience(again, PAYMENTS) == {"pay-lead"}


def test_a_failover_copy_stays_in_its_levels_and_a_lead_only_page_falls_back_to_on_call() -> None:
    started = page(NotificationKind.ROLLBACK_STARTED, failover_from="pay-oncall")
    assert audience(started, PAYMENTS) == {"pay-oncall"}  # never climbs to the lead
    again = page(
        NotificationKind.ESCALATION,
        "no_recent_rollout",
        **{DETAIL_LEVEL: "lead", "failover_from": "pay-lead"},
    )
    assert audience(again, PAYMENTS) == {"pay-oncall", "pay-lead"}


# --- from the configuration ------------------------------------------------------------


def settings(notify: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "prometheus": {"url": "http://prometheus:9090"},
            "webhook": {"bearer_token": "t" * 24},
            "notify": notify,
        }
    )


AM = {"type": "alertmanager", "url": "http://am:9093"}


def test_without_routes_every_channel_is_on_call_and_there_is_no_lead() -> None:
    s = settings({"alertmanager": {"url": "http://am:9093"}, "channels": {"extra": AM}})
    (route,) = routes_from_settings(s.notify)
    assert route.default and route.oncall == ("alertmanager", "extra") and route.lead == ()
    escalation = page(NotificationKind.ESCALATION, "verify_breach")
    assert audience(escalation, route) == {"alertmanager", "extra"}


def test_routes_keep_their_order_and_inherit_or_override_escalate_after() -> None:
    s = settings(
        {
            "channels": {"a": AM, "b": AM},
            "escalate_after": "20m",
            "routes": [
                {"name": "pay", "match": {"teams": ["pay"]}, "oncall": ["a"], "lead": ["b"]},
                {
                    "match": {"namespaces": ["x"]},
                    "oncall": ["a"],
                    "lead": ["b"],
                    "escalate_after": None,
                },
                {"oncall": ["b"], "lead": ["a"], "escalate_after": "5m"},
            ],
        }
    )
    pay, unnamed, default = routes_from_settings(s.notify)
    assert (pay.name, pay.escalate_after) == ("pay", timedelta(minutes=20))
    assert (unnamed.name, unnamed.escalate_after) == ("routes[1]", None)
    assert (default.name, default.default, default.escalate_after) == (
        "default",
        True,
        timedelta(minutes=5),
    )
    router = Router((pay, unnamed, default), lambda t: TargetFacts(t.namespace, team="pay"))
    assert router.channels_for(page(NotificationKind.ROLLBACK_STARTED)) == {"a"}


# --- re-escalation by time (the pure half) -------------------------------------------------


def unresolved(since: datetime, phase: Phase = Phase.ESCALATED) -> Unresolved:
    return Unresolved("rb-1", SHOP, phase, since, "no_recent_rollout", "no recent rollout")


def test_the_lead_is_due_once_escalate_after_has_passed_since_the_page() -> None:
    route = Route("r", oncall=("o",), lead=("l",), escalate_after=timedelta(minutes=10))
    assert not is_due(unresolved(NOW - timedelta(minutes=9, seconds=59)), route, NOW)
    assert is_due(unresolved(NOW - timedelta(minutes=10)), route, NOW)


def test_no_lead_level_or_no_deadline_means_never_due() -> None:
    old = unresolved(NOW - timedelta(days=1))
    assert not is_due(old, Route("r", oncall=("o",), escalate_after=timedelta(minutes=1)), NOW)
    assert not is_due(old, Route("r", oncall=("o",), lead=("l",), escalate_after=None), NOW)


def test_the_lead_page_keeps_the_record_key_so_its_resolve_closes_it() -> None:
    route = Route("pay", oncall=("o",), lead=("l",), escalate_after=timedelta(minutes=10))
    stuck = lead_page(unresolved(NOW - timedelta(minutes=12), Phase.VERIFYING), route, NOW)
    assert stuck.dedup_key == "rb-1" and stuck.kind is NotificationKind.ESCALATION
    assert audience(stuck, route) == {"l"}
    assert "still in VERIFYING after 12m0s" in stuck.summary, stuck.summary
    escalated = lead_page(unresolved(NOW - timedelta(minutes=12)), route, NOW)
    assert "still unresolved 12m0s after it was escalated: no recent rollout" in escalated.summary


def test_a_page_only_the_default_route_takes_is_logged_with_the_team() -> None:
    from structlog.testing import capture_logs

    router = Router(ROUTES, lambda t: TargetFacts("elsewhere", team="paymnets"))  # a typo
    with capture_logs() as logs:
        assert router.channels_for(page(NotificationKind.ROLLBACK_STARTED)) == {"sre-oncall"}
        assert router.route_for(SHOP) is DEFAULT  # the periodic lookup stays quiet
    (defaulted,) = [e for e in logs if e["event"] == "notify_route_default"]
    assert (defaulted["team"], defaulted["route"]) == ("paymnets", "default")
