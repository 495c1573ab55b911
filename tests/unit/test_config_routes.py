"""Named channels and escalation routes in the config: what loads, and what is refused, where.

Every refusal names its key path, so ``rollbackd check-config`` tells an
operator which line to fix before a page is ever meant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbackd.config import ConfigError, Settings, SlackSettings, load_settings
from rollbackd.notify.configured import build_channels

API_TOKEN = {"ROLLBACKD__WEBHOOK__BEARER_TOKEN": "alertmanager-token"}
HEAD = "prometheus:\n  url: http://prom:9090\nnotify:\n"


def load(tmp_path: Path, notify: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "rollbackd.yaml"
    path.write_text(HEAD + notify)
    return load_settings(path, env={**API_TOKEN, **(env or {})})


def errors(tmp_path: Path, notify: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, notify, env)
    return "\n".join(caught.value.errors)


def key_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


TWO_CHANNELS = """\
  channels:
    oncall: {type: alertmanager, url: "http://am:9093"}
    lead: {type: alertmanager, url: "http://am2:9093"}
"""


def test_two_pagerduty_routing_keys_become_two_channels_with_their_names(tmp_path: Path) -> None:
    a = key_file(tmp_path, "a.key", "routing-key-a")
    b = key_file(tmp_path, "b.key", "routing-key-b")
    settings = load(
        tmp_path,
        f"""\
  pagerduty: {{routing_key_file: {a}}}
  channels:
    payments_lead: {{type: pagerduty, routing_key_file: {b}}}
    chat: {{type: slack}}
  routes:
    - {{match: {{teams: [payments]}}, oncall: [pagerduty, chat], lead: [payments_lead]}}
    - {{oncall: [pagerduty], lead: [payments_lead]}}
""",
        # A named channel's secret from the environment, taken verbatim.
        env={"ROLLBACKD__NOTIFY__CHANNELS__CHAT__WEBHOOK_URL": "https://hooks.slack.test/x: y"},
    )
    channels = build_channels(settings)
    assert [c.name for c in channels] == ["pagerduty", "payments_lead", "chat"]
    chat = settings.notify.channels["chat"]
    assert isinstance(chat, SlackSettings)
    assert chat.webhook_url_value() == "https://hooks.slack.test/x: y"


def test_a_route_naming_a_missing_channel_is_refused_with_its_key_path(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        TWO_CHANNELS
        + """\
  routes:
    - {match: {teams: [pay]}, oncall: [oncall], lead: [team_lead]}
    - {oncall: [oncall], lead: [lead]}
""",
    )
    assert (
        "notify: routes[0].lead[0]: no channel named 'team_lead' (defined: lead, oncall)" in found
    )


def test_a_level_without_channels_is_refused(tmp_path: Path) -> None:
    found = errors(tmp_path, TWO_CHANNELS + "  routes:\n    - {oncall: [oncall], lead: []}\n")
    assert "notify.routes[0].lead: List should have at least 1 item" in found
    found = errors(tmp_path, TWO_CHANNELS + "  routes:\n    - {oncall: [oncall]}\n")
    assert "notify.routes[0].lead: Field required" in found


def test_routes_without_a_default_route_are_refused(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        TWO_CHANNELS + "  routes:\n    - {match: {teams: [a]}, oncall: [oncall], lead: [lead]}\n",
    )
    assert "routes[0]: no default route: end the list with a route without match" in found


def test_a_route_after_the_default_one_is_refused_as_never_used(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        TWO_CHANNELS
        + """\
  routes:
    - {oncall: [oncall], lead: [lead]}
    - {match: {namespaces: [shop]}, oncall: [oncall], lead: [lead]}
""",
    )
    assert "routes[1]: never used: routes[0] has no match" in found


def test_an_empty_match_is_refused(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        TWO_CHANNELS + "  routes:\n    - {match: {}, oncall: [oncall], lead: [lead]}\n",
    )
    assert "notify.routes[0].match: expected namespaces, labels or teams" in found


def test_a_duplicate_channel_name_is_refused(tmp_path: Path) -> None:
    # Named like a single-channel section that is configured.
    found = errors(
        tmp_path,
        """\
  alertmanager: {url: "http://am:9093"}
  channels:
    alertmanager: {type: alertmanager, url: "http://other:9093"}
""",
    )
    assert (
        "channels.alertmanager: duplicate channel name: notify.alertmanager already defines it"
        in found
    )
    # Twice under channels: YAML would keep the last silently; the loader refuses.
    found = errors(
        tmp_path,
        """\
  channels:
    lead: {type: alertmanager, url: "http://am:9093"}
    lead: {type: alertmanager, url: "http://other:9093"}
""",
    )
    assert "invalid YAML (line 6, column 5): duplicate key 'lead'" in found


def test_a_named_channel_secret_inline_is_refused_naming_its_variable(tmp_path: Path) -> None:
    found = errors(
        tmp_path, "  channels:\n    lead: {type: pagerduty, routing_key: plain-text-key}\n"
    )
    assert (
        "notify.channels.lead.routing_key: secrets are not accepted in the config file; "
        "use routing_key_file or env ROLLBACKD__NOTIFY__CHANNELS__LEAD__ROUTING_KEY"
    ) in found
    assert "plain-text-key" not in found


def test_a_bad_channel_name_or_type_is_refused(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """\
  channels:
    Lead+x: {type: alertmanager, url: "http://am:9093"}
    sms: {type: carrier-pigeon}
""",
    )
    assert "'Lead+x' is not a channel name" in found
    assert "notify.channels.sms: Input tag 'carrier-pigeon'" in found


def test_escalate_after_must_be_a_positive_duration_or_null(tmp_path: Path) -> None:
    assert "notify.escalate_after: must be greater than zero" in errors(
        tmp_path, "  escalate_after: 0s\n"
    )
    settings = load(tmp_path, "  escalate_after: null\n")
    assert settings.notify.escalate_after is None


def test_check_config_lists_each_route_with_its_levels(tmp_path: Path) -> None:
    from rollbackd.cli.commands import summarize

    settings = load(
        tmp_path,
        TWO_CHANNELS
        + """\
  routes:
    - {name: payments, match: {teams: [pay]}, oncall: [oncall], lead: [lead], escalate_after: 15m}
    - {oncall: [oncall], lead: [lead], escalate_after: null}
""",
    )
    lines = summarize(settings)
    assert "notify: oncall, lead" in lines
    assert "route payments: on-call oncall; lead lead (also after 15m unresolved)" in lines
    assert "route default: on-call oncall; lead lead (not by time)" in lines


def test_escalate_after_beyond_max_age_is_refused_as_never_reached(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        TWO_CHANNELS
        + """\
  max_age: 2h
  routes:
    - {oncall: [oncall], lead: [lead], escalate_after: 3h}
""",
    )
    assert "routes[0].escalate_after: expected less than max_age (2h)" in found
