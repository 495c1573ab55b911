"""The HTTP server section: listen address, credentials, request limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, model_validator

from rollbackd.config.types import (
    NonEmptyStr,
    PositiveDuration,
    SecretFromFile,
    _env_name,
    _one_secret,
    _required_secret,
    _secret_value,
    _Section,
)


class BasicAuthSettings(_Section):
    username: NonEmptyStr
    password_file: SecretFromFile | None = None
    password: SecretStr | None = None  # env only

    @model_validator(mode="after")
    def _check(self) -> BasicAuthSettings:
        _one_secret(
            self.password, self.password_file, "webhook", "basic_auth", "password", required=True
        )
        return self

    def password_value(self) -> str:
        return _required_secret(self.password, self.password_file)


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # "[::]:8080"
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f'expected "HOST:PORT" with a port 0-65535, got {listen!r}')
    return host, int(port_text)


def _check_listen(listen: str) -> str:
    _split_listen(listen)
    return listen


class WebhookSettings(_Section):
    """The HTTP server: Alertmanager webhook, health, metrics and the API.

    Secure by default: the API needs Alertmanager's credential (a bearer
    token, basic auth, or both) unless ``allow_unauthenticated`` says
    otherwise on purpose. Starting a rollback over HTTP needs a separate
    operator token; without one, manual rollbacks over HTTP are disabled.
    """

    listen: Annotated[str, AfterValidator(_check_listen)] = "0.0.0.0:8080"
    # Alertmanager's credential: may post alerts and read, never start a rollback.
    bearer_token_file: SecretFromFile | None = None
    bearer_token: SecretStr | None = None  # env only
    basic_auth: BasicAuthSettings | None = None
    # Accept alerts and reads without credentials; warned about at every start.
    allow_unauthenticated: bool = False
    # A human's credential for POST /api/v1/rollbacks; None: manual rollbacks over HTTP are off.
    operator_token_file: SecretFromFile | None = None
    operator_token: SecretStr | None = None  # env only
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    # Inbound connections at most; lowered at start to fit RLIMIT_NOFILE (rollbackd.serving).
    max_connections: int = Field(default=512, ge=1, le=1_000_000)
    # A connection must deliver complete request headers this soon after opening
    # (or after its previous response) or it is closed.
    header_timeout: PositiveDuration = timedelta(seconds=10)
    # A request body must arrive completely this soon after its headers.
    body_timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _check(self) -> WebhookSettings:
        _one_secret(
            self.bearer_token, self.bearer_token_file, "webhook", "bearer_token", required=False
        )
        _one_secret(
            self.operator_token,
            self.operator_token_file,
            "webhook",
            "operator_token",
            required=False,
        )
        if not self.has_credentials and not self.allow_unauthenticated:
            raise ValueError(
                "the API has no credentials: set bearer_token_file (or env "
                f"{_env_name('webhook', 'bearer_token')}) or basic_auth, and give Alertmanager "
                "the same credential; or set allow_unauthenticated: true to accept "
                "unauthenticated alerts and reads on purpose"
            )
        operator = self.operator_token_value()
        if operator is not None and operator in (
            self.bearer_token_value(),
            self.basic_auth.password_value() if self.basic_auth else None,
        ):
            raise ValueError(
                "operator_token must differ from Alertmanager's credential: "
                "the alert token must not be able to start rollbacks"
            )
        return self

    @property
    def has_credentials(self) -> bool:
        """Whether Alertmanager's credential (bearer token or basic auth) is configured."""
        return self.bearer_token_value() is not None or self.basic_auth is not None

    def operator_token_value(self) -> str | None:
        return _secret_value(self.operator_token, self.operator_token_file)

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]

    def bearer_token_value(self) -> str | None:
        return _secret_value(self.bearer_token, self.bearer_token_file)
