"""Who may do what: credentials, roles, and the middleware that asks for them first."""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from rollbackd.metrics import Metrics
from rollbackd.server.responses import error

if TYPE_CHECKING:
    from rollbackd.config import WebhookSettings


_REALM = "rollbackd"


ALERTS_ROUTE = "alerts"
# Probes and the Prometheus scrape carry no credentials; nothing here changes anything.
OPEN_ROUTES = frozenset({"healthz", "readyz", "metrics", "openapi_yaml", "openapi_json"})


class Role(enum.Enum):
    """What a caller may do, by the credential it showed."""

    ALERTS = "alerts"  # Alertmanager (or anyone, with allow_unauthenticated): post alerts, read
    OPERATOR = "operator"  # a human with the operator token: also start rollbacks


# Env and file keys an operator sets; named in the 403 that says manual rollbacks are off.
OPERATOR_TOKEN_KEYS = "webhook.operator_token_file (or env ROLLBACKD__WEBHOOK__OPERATOR_TOKEN)"


@dataclass(frozen=True)
class AuthSettings:
    """Credentials the API accepts.

    Alertmanager's credential is a bearer token, basic auth, or either; it
    gets ``Role.ALERTS``. ``operator_token`` is a separate bearer token for
    humans (``Role.OPERATOR``). ``allow_unauthenticated`` gives anyone
    ``Role.ALERTS``; it must be asked for, never the result of a missing key.
    """

    bearer_token: str | None = None
    basic_username: str | None = None
    basic_password: str | None = None
    operator_token: str | None = None
    allow_unauthenticated: bool = False

    def __post_init__(self) -> None:
        if (
            self.bearer_token is None
            and self.basic_username is None
            and not self.allow_unauthenticated
        ):
            raise ValueError(
                "AuthSettings needs a bearer token or basic auth credentials "
                "(or allow_unauthenticated=True, on purpose)"
            )
        if (self.basic_username is None) != (self.basic_password is None):
            raise ValueError("basic auth needs both a username and a password")
        if "" in (self.bearer_token, self.basic_password, self.operator_token):
            raise ValueError("credentials must not be empty")
        if self.operator_token is not None and self.operator_token in (
            self.bearer_token,
            self.basic_password,
        ):
            raise ValueError("the operator token must differ from Alertmanager's credential")

    @classmethod
    def from_webhook(cls, webhook: WebhookSettings) -> AuthSettings:
        """The credentials configured in ``webhook`` (validated there: never open by accident)."""
        basic = webhook.basic_auth
        return cls(
            bearer_token=webhook.bearer_token_value(),
            basic_username=basic.username if basic else None,
            basic_password=basic.password_value() if basic else None,
            operator_token=webhook.operator_token_value(),
            allow_unauthenticated=webhook.allow_unauthenticated,
        )

    @property
    def open(self) -> bool:
        """Whether requests without credentials are let in (alerts and reads only)."""
        return self.allow_unauthenticated

    def role(self, header: str | None) -> Role | None:
        """What the Authorization header allows; None: nothing (answer 401)."""
        if header:
            scheme, _, credentials = header.strip().partition(" ")
            scheme = scheme.lower()
            credentials = credentials.strip()
            if scheme == "bearer":
                # Both comparisons always run: timing does not say which token was close.
                operator = self.operator_token is not None and _same(
                    credentials, self.operator_token
                )
                alerts = self.bearer_token is not None and _same(credentials, self.bearer_token)
                if operator:
                    return Role.OPERATOR
                if alerts:
                    return Role.ALERTS
            elif scheme == "basic" and self._basic_matches(credentials):
                return Role.ALERTS
        return Role.ALERTS if self.allow_unauthenticated else None

    def _basic_matches(self, credentials: str) -> bool:
        if self.basic_username is None:
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        # Both comparisons always run: no early exit that leaks which part was wrong.
        user_ok = _same(username, self.basic_username)
        password_ok = _same(password, self.basic_password or "")
        return bool(sep) and user_ok and password_ok

    def allows(self, header: str | None) -> bool:
        """Whether an Authorization header carries valid credentials (any role)."""
        return self.role(header) is not None

    def challenges(self) -> list[str]:
        out = []
        if self.bearer_token is not None or self.operator_token is not None:
            out.append(f'Bearer realm="{_REALM}"')
        if self.basic_username is not None:
            out.append(f'Basic realm="{_REALM}", charset="UTF-8"')
        return out


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


ROLE_KEY = web.RequestKey("rollbackd_role", Role)  # the Role the credential gave


class Authenticator:
    """The 401 answer and the middleware that gives each request its Role."""

    def __init__(self, auth: AuthSettings, metrics: Metrics) -> None:
        self.auth = auth
        self.metrics = metrics

    def unauthorized(self) -> web.Response:
        """The 401 answer, with a challenge per configured scheme."""
        headers: CIMultiDict[str] = CIMultiDict()
        for challenge in self.auth.challenges():
            headers.add("WWW-Authenticate", challenge)
        return error(401, "authentication required", headers)

    @web.middleware
    async def authenticate(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Every route but the open ones needs a credential, before anything else happens.

        Unknown paths and wrong methods included: a caller without
        credentials learns nothing about what exists (401, never 404/405).
        """
        route = request.match_info.route
        if route.name in OPEN_ROUTES:
            return await handler(request)
        role = self.auth.role(request.headers.get("Authorization"))
        if role is None:
            if route.name == ALERTS_ROUTE:
                self.metrics.webhook_requests_total.labels(code="401").inc()
            return self.unauthorized()
        request[ROLE_KEY] = role
        return await handler(request)
