"""The notification channels, the page outbox and escalation."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from rollbackd.config.routes import RouteSettings, route_problems
from rollbackd.config.types import (
    HttpUrl,
    PositiveDuration,
    SecretFromFile,
    _env_name,
    _one_secret,
    _required_secret,
    _secret_value,
    _Section,
)
from rollbackd.durations import format_duration


class PagerDutySettings(_Section):
    # Where the secret's environment variable lives; a named channel says its own.
    secret_at: ClassVar[tuple[str, ...]] = ("notify", "pagerduty")
    url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"
    routing_key_file: SecretFromFile | None = None
    routing_key: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> PagerDutySettings:
        _one_secret(
            self.routing_key, self.routing_key_file, *self.secret_at, "routing_key", required=True
        )
        return self

    def routing_key_value(self) -> str:
        return _required_secret(self.routing_key, self.routing_key_file)


class AlertmanagerPushSettings(_Section):
    url: HttpUrl


class SlackSettings(_Section):
    secret_at: ClassVar[tuple[str, ...]] = ("notify", "slack")
    webhook_url_file: SecretFromFile | None = None
    webhook_url: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> SlackSettings:
        _one_secret(
            self.webhook_url, self.webhook_url_file, *self.secret_at, "webhook_url", required=True
        )
        return self

    def webhook_url_value(self) -> str:
        return _required_secret(self.webhook_url, self.webhook_url_file)


class WebhookNotifySettings(_Section):
    secret_at: ClassVar[tuple[str, ...]] = ("notify", "webhook")
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_file: SecretFromFile | None = None
    bearer_token: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> WebhookNotifySettings:
        # An Authorization header would put a credential inline in the file.
        if any(name.lower() == "authorization" for name in self.headers):
            raise ValueError(
                "headers must not carry Authorization: use bearer_token_file "
                f"or env {_env_name(*self.secret_at, 'bearer_token')}"
            )
        _one_secret(
            self.bearer_token,
            self.bearer_token_file,
            *self.secret_at,
            "bearer_token",
            required=False,
        )
        return self

    def bearer_token_value(self) -> str | None:
        return _secret_value(self.bearer_token, self.bearer_token_file)


# A named channel's secret: env ROLLBACKD__NOTIFY__CHANNELS__<NAME>__ROUTING_KEY etc.
_NAMED = ("notify", "channels", "<name>")


class PagerDutyChannelSettings(PagerDutySettings):
    secret_at = _NAMED
    type: Literal["pagerduty"]


class SlackChannelSettings(SlackSettings):
    secret_at = _NAMED
    type: Literal["slack"]


class WebhookChannelSettings(WebhookNotifySettings):
    secret_at = _NAMED
    type: Literal["webhook"]


class AlertmanagerChannelSettings(AlertmanagerPushSettings):
    type: Literal["alertmanager"]


NamedChannelSettings = Annotated[
    PagerDutyChannelSettings
    | SlackChannelSettings
    | WebhookChannelSettings
    | AlertmanagerChannelSettings,
    Field(discriminator="type"),
]
# Lower case (environment names are folded to it), and no "+" or "=": the
# outbox marks failover copies with them.
_CHANNEL_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?")
LEGACY_CHANNELS = ("pagerduty", "alertmanager", "slack", "webhook")


def _channel_name(value: str) -> str:
    if not _CHANNEL_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a channel name: lower-case letters, digits, '-' and '_'"
        )
    return value


ChannelName = Annotated[str, AfterValidator(_channel_name)]


class EscalationSettings(_Section):
    # One page per (Deployment, reason) per incident window; repeats are noted, not paged.
    incident_window: PositiveDuration = timedelta(minutes=30)
    # "No recent rollout" pages wait this long; from group_min Deployments of one
    # namespace they become one grouped "not a deploy problem" page.
    group_wait: PositiveDuration = timedelta(seconds=10)
    group_min: int = Field(default=3, ge=2)


class NotifySettings(_Section):
    """Channels for pages and notices; a channel is on when its section is set."""

    pagerduty: PagerDutySettings | None = None
    alertmanager: AlertmanagerPushSettings | None = None
    slack: SlackSettings | None = None
    webhook: WebhookNotifySettings | None = None
    report_base_url: HttpUrl | None = None  # links to /api/v1/rollbacks/{id}/report
    # The page outbox: a page is retried until delivered or older than max_age.
    max_age: PositiveDuration = timedelta(hours=24)
    # A channel holding a page this long hands a copy to the other channels; null: never.
    failover_after: PositiveDuration | None = timedelta(minutes=5)
    # Retry backoff: exponential from backoff_initial, capped at backoff_max, jittered.
    backoff_initial: PositiveDuration = timedelta(seconds=1)
    backoff_max: PositiveDuration = timedelta(minutes=1)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    # More channels, by name (several PagerDuty routing keys, Slack webhooks...).
    channels: dict[ChannelName, NamedChannelSettings] = Field(default_factory=dict)
    # Which channels hear a Deployment's pages, per level; empty: every channel, one level.
    routes: list[RouteSettings] = Field(default_factory=list)
    # Still unresolved this long after its page: the lead level is paged once; null: never.
    escalate_after: PositiveDuration | None = timedelta(minutes=30)

    @model_validator(mode="after")
    def _check_outbox(self) -> NotifySettings:
        if self.backoff_initial > self.backoff_max:
            raise ValueError("expected backoff_initial <= backoff_max")
        if self.failover_after is not None and self.failover_after >= self.max_age:
            raise ValueError("expected failover_after < max_age (or failover_after: null)")
        return self

    @model_validator(mode="after")
    def _check_channels(self) -> NotifySettings:
        problems = [
            f"channels.{name}: duplicate channel name: notify.{name} already defines it"
            for name in self.channels
            if name in LEGACY_CHANNELS and getattr(self, name) is not None
        ]
        problems += route_problems(self.routes, self.channel_names())
        afters = [("escalate_after", self.escalate_after)] + [
            (f"routes[{i}].escalate_after", r.escalate_after) for i, r in enumerate(self.routes)
        ]
        problems += [
            f"{key}: expected less than max_age ({format_duration(self.max_age)}): a page"
            " older than that is given up, so the lead would never be paged"
            for key, after in afters
            if after is not None and after >= self.max_age
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def channel_names(self) -> tuple[str, ...]:
        """Every channel: the single-channel sections by their own name, then the named ones."""
        legacy = tuple(name for name in LEGACY_CHANNELS if getattr(self, name) is not None)
        return legacy + tuple(name for name in self.channels if name not in legacy)
