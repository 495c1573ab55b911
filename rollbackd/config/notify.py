"""The notification channels, the page outbox and escalation."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator

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


class PagerDutySettings(_Section):
    url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"
    routing_key_file: SecretFromFile | None = None
    routing_key: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> PagerDutySettings:
        _one_secret(
            self.routing_key,
            self.routing_key_file,
            "notify",
            "pagerduty",
            "routing_key",
            required=True,
        )
        return self

    def routing_key_value(self) -> str:
        return _required_secret(self.routing_key, self.routing_key_file)


class AlertmanagerPushSettings(_Section):
    url: HttpUrl


class SlackSettings(_Section):
    webhook_url_file: SecretFromFile | None = None
    webhook_url: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> SlackSettings:
        _one_secret(
            self.webhook_url, self.webhook_url_file, "notify", "slack", "webhook_url", required=True
        )
        return self

    def webhook_url_value(self) -> str:
        return _required_secret(self.webhook_url, self.webhook_url_file)


class WebhookNotifySettings(_Section):
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
                f"or env {_env_name('notify', 'webhook', 'bearer_token')}"
            )
        _one_secret(
            self.bearer_token,
            self.bearer_token_file,
            "notify",
            "webhook",
            "bearer_token",
            required=False,
        )
        return self

    def bearer_token_value(self) -> str | None:
        return _secret_value(self.bearer_token, self.bearer_token_file)


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

    @model_validator(mode="after")
    def _check_outbox(self) -> NotifySettings:
        if self.backoff_initial > self.backoff_max:
            raise ValueError("expected backoff_initial <= backoff_max")
        if self.failover_after is not None and self.failover_after >= self.max_age:
            raise ValueError("expected failover_after < max_age (or failover_after: null)")
        return self

    def channel_names(self) -> tuple[str, ...]:
        return tuple(
            name
            for name in ("pagerduty", "alertmanager", "slack", "webhook")
            if getattr(self, name) is not None
        )
