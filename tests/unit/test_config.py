"""Configuration: defaults, every error with its key path, env overrides, secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rollbackd.config import (
    ConfigError,
    Settings,
    format_duration,
    load_settings,
    parse_duration,
)
from rollbackd.model import Policy, Target
from rollbackd.signals import DEFAULT_SIGNALS

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "rollbackd.example.yaml"
URL_ONLY = {"ROLLBACKD__PROMETHEUS__URL": "http://prom:9090"}
ENV_ONLY_SECRETS = {"bearer_token", "routing_key", "webhook_url", "password", "operator_token"}
API_TOKEN = {"ROLLBACKD__WEBHOOK__BEARER_TOKEN": "alertmanager-token"}


def write(tmp_path: Path, text: str, name: str = "rollbackd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path | None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env or {})
    # The exception's text is the same list, one problem per line.
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def minimal(tmp_path: Path, extra: str = "") -> Path:
    """The Prometheus URL, Alertmanager's token (unless ``extra`` has a webhook section), ``extra``.

    ``extra`` may continue the prometheus section (lines indented by two spaces).
    """
    webhook = ""
    if not re.search(r"^webhook:", extra, re.MULTILINE):
        token = tmp_path / "api.token"
        token.write_text("alertmanager-token\n")
        webhook = f"webhook:\n  bearer_token_file: {token}\n"
    return write(tmp_path, webhook + "prometheus:\n  url: http://prom:9090\n" + extra)


# --- defaults and the example file ---------------------------------------------


def test_only_the_prometheus_url_and_an_api_credential_are_required(tmp_path: Path) -> None:
    settings = load_settings(minimal(tmp_path), env={})
    assert settings.prometheus.url == "http://prom:9090"
    assert settings.prometheus.timeout == timedelta(seconds=10)
    assert settings.prometheus.poll_interval is None
    assert settings.cluster.exclude_namespaces == ("kube-system",)
    assert settings.webhook.host == "0.0.0.0"
    assert settings.webhook.port == 8080
    assert settings.webhook.max_body_bytes == 1 << 20
    assert settings.verify.intervals == 3
    assert settings.rollout.timeout == timedelta(minutes=10)
    assert settings.journal.path == "/var/lib/rollbackd/journal.sqlite"
    assert settings.leader_election.lease_duration == timedelta(seconds=15)
    assert settings.notify.channel_names() == ()
    assert (settings.logging.level, settings.logging.format) == ("info", "auto")


def test_missing_url_is_reported_with_its_path(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, "policy: {dry_run: true}\n"), API_TOKEN) == (
        "prometheus: Field required",
    )
    assert errors_of(write(tmp_path, "prometheus: {}\n"), API_TOKEN) == (
        "prometheus.url: Field required",
    )


def test_default_policy_is_the_model_default(tmp_path: Path) -> None:
    settings = load_settings(minimal(tmp_path), env={})
    policy, problems = settings.policy_for(Target("shop", "checkout"), {})
    assert policy == Policy()
    assert problems == ()


def test_default_signals_mirror_the_signal_module(tmp_path: Path) -> None:
    settings = load_settings(minimal(tmp_path), env={})
    assert settings.prometheus.signal_specs() == DEFAULT_SIGNALS


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    settings = load_settings(minimal(tmp_path, "policy:\nnotify:\n"), env={})
    assert settings.policy == load_settings(minimal(tmp_path), env={}).policy


def test_example_file_validates_and_equals_the_defaults() -> None:
    # The example, like the defaults, needs Alertmanager's credential to be given.
    example = load_settings(EXAMPLE, env=API_TOKEN)
    defaults = load_settings(
        None, env={"ROLLBACKD__PROMETHEUS__URL": example.prometheus.url, **API_TOKEN}
    )
    assert example == defaults


def _keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields) - ENV_ONLY_SECRETS


def test_example_file_sets_every_key_of_every_section() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert set(raw) == set(Settings.model_fields)
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        # `signals` is documented as a comment: absent means the built-in signals.
        expected = _keys(model) - {"signals"}
        assert set(raw[section]) == expected, section
    assert "signals:" in EXAMPLE.read_text()


# --- errors with key paths ---------------------------------------------------------


def test_unknown_keys_are_errors_naming_their_full_path(tmp_path: Path) -> None:
    path = minimal(
        tmp_path,
        "policy:\n  cooldwn: 5m\n"
        "verify:\n  interval: 3\n"
        "notify:\n  pagerduty:\n    routing_key_file: x\n    sevrity: high\n"
        "colour: blue\n",
    )
    errors = errors_of(path)
    assert "policy.cooldwn: Extra inputs are not permitted" in errors
    assert "verify.interval: Extra inputs are not permitted" in errors
    assert "notify.pagerduty.sevrity: Extra inputs are not permitted" in errors
    assert "colour: Extra inputs are not permitted" in errors


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
prometheus:
  url: ftp://prom
  attempts: 0
  signals:
    - {name: errors, query: "rate(x[5m])", threshold: 1}
    - {name: Bad-Name, query: "x[{window}]", threshold: .nan}
webhook:
  listen: localhost
verify:
  intervals: 0
  timeout: 0s
logging:
  level: loud
leader_election:
  renew_deadline: 1m
cluster:
  namespaces: [Shop]
""",
    )
    errors = errors_of(path)
    assert set(errors) == {
        "prometheus.url: expected an http:// or https:// URL, got 'ftp://prom'",
        "prometheus.attempts: Input should be greater than or equal to 1",
        "prometheus.signals[0]: query must contain the {window} placeholder",
        "prometheus.signals[1].threshold: Input should be a finite number",
        "webhook.listen: expected \"HOST:PORT\" with a port 0-65535, got 'localhost'",
        "verify.intervals: Input should be greater than or equal to 1",
        "verify.timeout: must be greater than zero",
        "logging.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical'",
        "leader_election: expected retry_period < renew_deadline < lease_duration",
        "cluster.namespaces[0]: 'Shop' is not a valid namespace name (RFC 1123 label)",
    }
    assert len(errors) == 10


def test_signal_names_must_be_unique_and_snake_case(tmp_path: Path) -> None:
    signal = '{name: %s, query: "x[{window}]", threshold: 1}'
    path = minimal(tmp_path, f"  signals: [{signal % 'a'}, {signal % 'a'}]\n")
    assert errors_of(path) == ("prometheus: signal names must be unique: a",)
    path = minimal(tmp_path, f"  signals: [{signal % 'Err-Rate'}]\n")
    assert errors_of(path) == (
        "prometheus.signals[0]: name 'Err-Rate' must be snake_case (it is a metric label)",
    )
    assert errors_of(minimal(tmp_path, "  signals: []\n")) == (
        "prometheus: signals must list at least one signal",
    )


def test_custom_signals_get_the_documented_defaults(tmp_path: Path) -> None:
    path = minimal(
        tmp_path, '  signals: [{name: saturation, query: "x[{window}]", threshold: 0.9}]\n'
    )
    (spec,) = load_settings(path, env={}).prometheus.signal_specs()
    assert (spec.comparison, spec.min_traffic, spec.window, spec.for_count) == (">", 0.1, "1m", 2)


def test_unreadable_or_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert errors_of(missing) == (f"{missing}: config file does not exist",)
    broken = write(tmp_path, "prometheus:\n  url: [unclosed\n")
    (error,) = errors_of(broken)
    assert error.startswith(f"{broken}: invalid YAML (line 3, column 1)")
    listing = write(tmp_path, "- a\n- b\n")
    assert errors_of(listing) == (f"{listing}: expected a mapping of sections at the top level",)


# --- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1.5s", timedelta(seconds=1.5)),
        ("90", timedelta(seconds=90)),
        (90, timedelta(seconds=90)),
        (0.25, timedelta(seconds=0.25)),
        ("-5m", timedelta(minutes=-5)),
    ],
)
def test_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["500ms", "30s", "5m", "1h30m", "1d2h", "0s", "-5m", "1m0s500ms"])
def test_durations_format_back_to_what_they_parse_from(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value
    assert format_duration(timedelta(minutes=90)) == "1h30m"


@pytest.mark.parametrize(
    "bad", ["", "5 minutes", "m5", "1h 30m", "5M", True, None, [1], float("inf")]
)
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_duration_fields_parse_and_check_their_sign(tmp_path: Path) -> None:
    path = minimal(tmp_path, "policy:\n  change_window: 1h30m\n  cooldown: 0\n  min_stable: 90\n")
    policy = load_settings(path, env={}).policy
    assert policy.change_window == timedelta(minutes=90)
    assert policy.cooldown == timedelta(0)  # no cooldown is a meaningful choice
    assert policy.min_stable == timedelta(seconds=90)
    path = minimal(tmp_path, "policy:\n  change_window: 0s\n  cooldown: -1m\n  min_stable: soon\n")
    assert errors_of(path) == (
        "policy.change_window: must be greater than zero",
        'policy.min_stable: invalid duration \'soon\': expected e.g. "500ms", "30s", '
        '"5m", "1h30m" or a number of seconds',
        "policy.cooldown: must not be negative",
    )


# --- environment overrides ---------------------------------------------------------------


def test_env_overrides_file_values_with_yaml_scalars(tmp_path: Path) -> None:
    env = {
        "ROLLBACKD__POLICY__DRY_RUN": "true",
        "ROLLBACKD__POLICY__COOLDOWN": "2h",
        "ROLLBACKD__VERIFY__INTERVALS": "5",
        "ROLLBACKD__CLUSTER__NAMESPACES": "[shop, payments]",
        "ROLLBACKD__WEBHOOK__LISTEN": "127.0.0.1:9000",
        "ROLLBACKD_CONFIG": "ignored: single underscore is not an override",
        "OTHER": "x",
    }
    settings = load_settings(minimal(tmp_path, "policy:\n  dry_run: false\n"), env=env)
    assert settings.policy.dry_run is True
    assert settings.policy.cooldown == timedelta(hours=2)
    assert settings.verify.intervals == 5
    assert settings.cluster.namespaces == ("shop", "payments")
    assert (settings.webhook.host, settings.webhook.port) == ("127.0.0.1", 9000)


def test_env_alone_can_configure_everything_needed() -> None:
    settings = load_settings(
        None,
        env={
            "ROLLBACKD__PROMETHEUS__URL": "http://prom:9090",
            "ROLLBACKD__WEBHOOK__BEARER_TOKEN": "0123abc",
            "ROLLBACKD__NOTIFY__PAGERDUTY__ROUTING_KEY": "0123",
        },
    )
    assert settings.notify.pagerduty is not None
    # Secrets are taken verbatim: "0123" is not YAML-parsed into the number 123.
    assert settings.notify.pagerduty.routing_key_value() == "0123"
    assert settings.notify.channel_names() == ("pagerduty",)


def test_bad_env_values_are_errors_with_the_key_path(tmp_path: Path) -> None:
    env = {
        "ROLLBACKD__VERIFY__INTERVALS": "many",
        "ROLLBACKD__JOURNAL__PATH__DEEPER": "x",
        "ROLLBACKD__POLICY____X": "1",
    }
    errors = errors_of(minimal(tmp_path, "journal:\n  path: j.sqlite\n"), env)
    assert errors == (
        "env ROLLBACKD__JOURNAL__PATH__DEEPER: journal.path is not a section",
        "env ROLLBACKD__POLICY____X: expected ROLLBACKD__SECTION__KEY",
        "verify.intervals: Input should be a valid integer, unable to parse string as an integer"
        " (from env ROLLBACKD__VERIFY__INTERVALS)",
    )


# --- secrets ------------------------------------------------------------------------------


def test_secret_files_are_read_at_load_time(tmp_path: Path) -> None:
    (tmp_path / "rk").write_text("routing-key-123\n")
    (tmp_path / "tok").write_text("hook-token")
    (tmp_path / "pw").write_text("pa55")
    path = minimal(
        tmp_path,
        f"""
webhook:
  bearer_token_file: {tmp_path / "tok"}
  basic_auth: {{username: am, password_file: {tmp_path / "pw"}}}
notify:
  pagerduty: {{routing_key_file: {tmp_path / "rk"}}}
""",
    )
    settings = load_settings(path, env={})
    assert settings.notify.pagerduty is not None
    assert settings.notify.pagerduty.routing_key_value() == "routing-key-123"
    assert settings.webhook.bearer_token_value() == "hook-token"
    assert settings.webhook.basic_auth is not None
    assert settings.webhook.basic_auth.password_value() == "pa55"
    # Secrets do not show in reprs or dumps.
    assert "routing-key-123" not in repr(settings)
    assert "routing-key-123" not in str(settings.model_dump(mode="json"))


def test_missing_or_empty_secret_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    path = minimal(
        tmp_path,
        f"""
notify:
  pagerduty: {{routing_key_file: {tmp_path / "absent"}}}
  slack: {{webhook_url_file: {tmp_path / "empty"}}}
""",
    )
    assert errors_of(path) == (
        f"notify.pagerduty.routing_key_file: file '{tmp_path / 'absent'}' does not exist",
        f"notify.slack.webhook_url_file: file '{tmp_path / 'empty'}' is empty",
    )


def test_inline_secrets_are_refused_with_the_alternatives(tmp_path: Path) -> None:
    path = minimal(
        tmp_path,
        "  bearer_token: abc\n"
        "notify:\n  pagerduty:\n    routing_key: R0UT1NG\n"
        "webhook:\n  basic_auth: {username: am, password: pw}\n",
    )
    errors = errors_of(path)
    assert (
        "notify.pagerduty.routing_key: secrets are not accepted in the config file; "
        "use routing_key_file or env ROLLBACKD__NOTIFY__PAGERDUTY__ROUTING_KEY"
    ) in errors
    assert (
        "prometheus.bearer_token: secrets are not accepted in the config file; "
        "use bearer_token_file or env ROLLBACKD__PROMETHEUS__BEARER_TOKEN"
    ) in errors
    assert (
        "webhook.basic_auth.password: secrets are not accepted in the config file; "
        "use password_file or env ROLLBACKD__WEBHOOK__BASIC_AUTH__PASSWORD"
    ) in errors
    assert not any("R0UT1NG" in e for e in errors)


def test_a_channel_without_its_secret_is_an_error(tmp_path: Path) -> None:
    assert errors_of(minimal(tmp_path, "notify:\n  pagerduty: {}\n")) == (
        "notify.pagerduty: routing_key is required: set routing_key_file "
        "or env ROLLBACKD__NOTIFY__PAGERDUTY__ROUTING_KEY",
    )


def test_a_secret_from_two_places_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file")
    path = minimal(tmp_path, f"webhook:\n  bearer_token_file: {tmp_path / 'tok'}\n")
    assert errors_of(path, {"ROLLBACKD__WEBHOOK__BEARER_TOKEN": "from-env"}) == (
        "webhook: set either bearer_token_file or env ROLLBACKD__WEBHOOK__BEARER_TOKEN, not both",
    )


# --- secure by default: the API's credentials ------------------------------------


NO_CREDENTIALS = (
    "webhook: the API has no credentials: set bearer_token_file (or env "
    "ROLLBACKD__WEBHOOK__BEARER_TOKEN) or basic_auth, and give Alertmanager the same "
    "credential; or set allow_unauthenticated: true to accept unauthenticated alerts "
    "and reads on purpose"
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "webhook:\n",
        "webhook: {listen: '127.0.0.1:8080'}\n",
        "webhook: {allow_unauthenticated: false}\n",
    ],
    ids=["absent", "empty", "listen-only", "explicitly-closed"],
)
def test_an_api_without_credentials_is_an_error_naming_the_keys_to_set(
    tmp_path: Path, text: str
) -> None:
    path = write(tmp_path, "prometheus:\n  url: http://prom:9090\n" + text)
    assert errors_of(path) == (NO_CREDENTIALS,)


def test_an_open_api_must_be_asked_for(tmp_path: Path) -> None:
    path = write(
        tmp_path, "prometheus:\n  url: http://prom:9090\nwebhook:\n  allow_unauthenticated: true\n"
    )
    webhook = load_settings(path, env={}).webhook
    assert (webhook.allow_unauthenticated, webhook.has_credentials) == (True, False)
    assert webhook.operator_token_value() is None


def test_basic_auth_alone_is_a_credential(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pa55\n")
    extra = f"webhook:\n  basic_auth: {{username: am, password_file: {tmp_path / 'pw'}}}\n"
    webhook = load_settings(minimal(tmp_path, extra), env={}).webhook
    assert webhook.has_credentials and webhook.bearer_token_value() is None


def test_the_operator_token_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "op").write_text("operator-secret\n")
    (tmp_path / "am").write_text("alertmanager-secret\n")
    from_file = minimal(
        tmp_path,
        f"webhook:\n  bearer_token_file: {tmp_path / 'am'}\n"
        f"  operator_token_file: {tmp_path / 'op'}\n",
    )
    assert load_settings(from_file, env={}).webhook.operator_token_value() == "operator-secret"
    from_env = load_settings(minimal(tmp_path), env={"ROLLBACKD__WEBHOOK__OPERATOR_TOKEN": "0p"})
    assert from_env.webhook.operator_token_value() == "0p"
    inline = minimal(tmp_path, "webhook:\n  bearer_token_file: x\n  operator_token: 0p\n")
    assert (
        "webhook.operator_token: secrets are not accepted in the config file; "
        "use operator_token_file or env ROLLBACKD__WEBHOOK__OPERATOR_TOKEN"
    ) in errors_of(inline)


def test_the_operator_token_must_differ_from_alertmanagers(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("same\n")
    as_bearer = {
        **API_TOKEN,
        "ROLLBACKD__WEBHOOK__OPERATOR_TOKEN": API_TOKEN["ROLLBACKD__WEBHOOK__BEARER_TOKEN"],
    }
    path = write(tmp_path, "prometheus:\n  url: http://prom:9090\n")
    expected = (
        "webhook: operator_token must differ from Alertmanager's credential: "
        "the alert token must not be able to start rollbacks"
    )
    assert errors_of(path, as_bearer) == (expected,)
    as_password = minimal(
        tmp_path, f"webhook:\n  basic_auth: {{username: am, password_file: {tmp_path / 'pw'}}}\n"
    )
    assert errors_of(as_password, {"ROLLBACKD__WEBHOOK__OPERATOR_TOKEN": "same"}) == (expected,)


# --- redaction in errors ----------------------------------------------------------------


def test_config_errors_never_quote_url_credentials(tmp_path: Path) -> None:
    path = minimal(
        tmp_path, "notify:\n  report_base_url: ftp://ops:hunter2@reports/?token=s3cr3t\n"
    )
    errors = errors_of(path, {"ROLLBACKD__PROMETHEUS__URL": "ftp://admin:pa55@prom:9090"})
    assert set(errors) == {
        "prometheus.url: expected an http:// or https:// URL, got 'ftp://admin:***@prom:9090' "
        "(from env ROLLBACKD__PROMETHEUS__URL)",
        "notify.report_base_url: expected an http:// or https:// URL, "
        "got 'ftp://ops:***@reports/?token=***'",
    }


def test_notify_webhook_headers_must_not_carry_credentials(tmp_path: Path) -> None:
    path = minimal(
        tmp_path,
        "notify:\n  webhook:\n    url: https://hooks.example\n"
        "    headers: {authorization: Bearer x}\n",
    )
    (error,) = errors_of(path)
    assert error.startswith("notify.webhook: headers must not carry Authorization")


# --- per-target policy ---------------------------------------------------------------------


def settings_with(tmp_path: Path, extra: str) -> Settings:
    return load_settings(minimal(tmp_path, extra), env={})


def test_namespace_allow_list_and_exclusions(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, "cluster:\n  namespaces: [shop, kube-system]\n  dry_run_namespaces: [shop]\n"
    )
    shop, _ = settings.policy_for(Target("shop", "a"), {})
    other, _ = settings.policy_for(Target("other", "a"), {})
    system, _ = settings.policy_for(Target("kube-system", "a"), {})
    assert (shop.namespace_allowed, shop.dry_run) == (True, True)
    assert (other.namespace_allowed, other.dry_run) == (False, False)
    assert system.namespace_allowed is False  # excluded wins over allowed


def test_annotations_refine_the_policy(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "")
    policy, problems = settings.policy_for(
        Target("shop", "a"),
        {
            "rollbackd.io/enabled": "False",
            "rollbackd.io/dry-run": "true",
            "rollbackd.io/change-window": "1h",
            "rollbackd.io/cooldown": "0s",
        },
    )
    assert policy.enabled is False
    assert policy.dry_run is True
    assert policy.change_window == timedelta(hours=1)
    assert policy.cooldown == timedelta(0)
    assert problems == ()


def test_bad_annotation_values_are_ignored_with_a_reason(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "")
    annotations: dict[str, Any] = {
        "rollbackd.io/enabled": "nope",
        "rollbackd.io/dry-run": "yes please",
        "rollbackd.io/change-window": "0s",
        "rollbackd.io/cooldown": "forever",
    }
    policy, problems = settings.policy_for(Target("shop", "a"), annotations)
    assert policy == Policy()
    assert len(problems) == 4
    assert (
        problems[0]
        == 'rollbackd.io/enabled: ignored bad value \'nope\', expected "true" or "false"'
    )
    assert (
        problems[2]
        == "rollbackd.io/change-window: ignored bad value '0s': must be greater than zero"
    )
    assert problems[3].startswith("rollbackd.io/cooldown: ignored bad value 'forever'")


def test_an_annotation_cannot_lift_an_operator_dry_run(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "policy:\n  dry_run: true\n")
    policy, problems = settings.policy_for(Target("shop", "a"), {"rollbackd.io/dry-run": "false"})
    assert policy.dry_run is True
    assert problems == (
        'rollbackd.io/dry-run: "false" ignored: dry-run is set globally or for the namespace',
    )
