"""rollbackd's configuration: a YAML file, environment overrides, secret files.

Why it is shaped this way:

* Every model forbids unknown keys, so a typo (``policy.cooldwn``) is an error
  naming its full key path instead of a silently ignored setting.
* All problems are reported at once (``ConfigError.errors``), one
  ``key.path: message`` line each, so an operator fixes a file in one pass.
* Secrets never live in the YAML file, which ends up in Git and in Helm
  values: they come from files (``*_file``, read at load time so a missing
  mount fails at start-up, not at the first page) or from the environment.
* ``ROLLBACKD__SECTION__KEY=value`` overrides any key; values are parsed as
  YAML scalars (``true``, ``30s``, ``[a, b]``), secrets are taken verbatim.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    model_validator,
)

from rollbackd.model import (
    ANNOTATION_DRY_RUN,
    ANNOTATION_ENABLED,
    ANNOTATION_PREFIX,
    Policy,
    Target,
)
from rollbackd.redact import redact_text

if TYPE_CHECKING:
    from rollbackd.signals import SignalSpec

__all__ = [
    "ANNOTATION_CHANGE_WINDOW",
    "ANNOTATION_COOLDOWN",
    "ENV_PREFIX",
    "ConfigError",
    "SecretFile",
    "Settings",
    "format_duration",
    "load_settings",
    "parse_duration",
]

ENV_PREFIX = "ROLLBACKD__"
ANNOTATION_CHANGE_WINDOW = ANNOTATION_PREFIX + "change-window"
ANNOTATION_COOLDOWN = ANNOTATION_PREFIX + "cooldown"

# Key paths that hold secrets: refused inline in the YAML file, accepted from
# the environment (verbatim, not YAML-parsed) or from the sibling `*_file` key.
SECRET_PATHS: tuple[tuple[str, ...], ...] = (
    ("prometheus", "bearer_token"),
    ("webhook", "bearer_token"),
    ("webhook", "basic_auth", "password"),
    ("webhook", "operator_token"),
    ("notify", "pagerduty", "routing_key"),
    ("notify", "slack", "webhook_url"),
    ("notify", "webhook", "bearer_token"),
)


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[str]) -> None:
        # Messages quote values back; a URL's credentials must not be among them.
        self.errors: tuple[str, ...] = tuple(redact_text(error) for error in errors)
        super().__init__("\n".join(self.errors))


# --- value types ---------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):  # bool is an int: `cooldown: true` is a mistake
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value!r}")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        if _NUMBER.fullmatch(text):
            return timedelta(seconds=float(text))
        unsigned = text.removeprefix("-")
        if unsigned and _DURATION_FULL.fullmatch(unsigned):
            seconds = sum(
                float(amount) * _UNIT_SECONDS[unit]
                for amount, unit in _DURATION_PART.findall(unsigned)
            )
            return timedelta(seconds=sign * seconds)
    raise ValueError(
        f'invalid duration {value!r}: expected e.g. "500ms", "30s", "5m", "1h30m" '
        "or a number of seconds"
    )


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be greater than zero")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonNegativeDuration = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)
]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _namespace_name(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid namespace name (RFC 1123 label)")
    return value


NamespaceName = Annotated[str, AfterValidator(_namespace_name)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


@dataclass(frozen=True)
class SecretFile:
    """A secret read from a file at load time; the path is kept for messages."""

    path: Path
    value: SecretStr


def _read_secret_file(value: object) -> SecretFile:
    if isinstance(value, SecretFile):
        return value
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError("expected the path of a file holding the secret")
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{str(path)!r} is a directory, expected a file") from None
    except PermissionError:
        raise ValueError(f"file {str(path)!r} is not readable (permission denied)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read file {str(path)!r}: {exc}") from None
    if not text:
        raise ValueError(f"file {str(path)!r} is empty")
    return SecretFile(path=path, value=SecretStr(text))


SecretFromFile = Annotated[
    SecretFile,
    PlainValidator(_read_secret_file),
    PlainSerializer(lambda s: str(s.path), return_type=str),
]


def _env_name(*path: str) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _one_secret(
    inline: SecretStr | None, from_file: SecretFile | None, *path: str, required: bool
) -> None:
    """Check that a secret comes from exactly one place (env or file)."""
    key = path[-1]
    if inline is not None and from_file is not None:
        raise ValueError(f"set either {key}_file or env {_env_name(*path)}, not both")
    if required and inline is None and from_file is None:
        raise ValueError(f"{key} is required: set {key}_file or env {_env_name(*path)}")


def _secret_value(inline: SecretStr | None, from_file: SecretFile | None) -> str | None:
    if inline is not None:
        return inline.get_secret_value()
    if from_file is not None:
        return from_file.value.get_secret_value()
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ------------------------------------------------------------


class ClusterSettings(_Section):
    """Which cluster to talk to and which namespaces rollbackd may act in."""

    kubeconfig: str | None = None  # None: in-cluster service account
    context: str | None = None
    namespaces: tuple[NamespaceName, ...] = ()  # empty: every namespace (allow-list)
    dry_run_namespaces: tuple[NamespaceName, ...] = ()
    exclude_namespaces: tuple[NamespaceName, ...] = ("kube-system",)


_SIGNAL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_PROM_DURATION = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


class SignalSettings(_Section):
    """One PromQL signal; queries carry a ``{window}`` placeholder."""

    name: str
    query: str
    threshold: float = Field(allow_inf_nan=False)
    comparison: Literal[">", "<"] = ">"
    traffic_query: str | None = None
    min_traffic: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    # Requests the window must hold before the ratio is judged (rate x window):
    # one failed request must never be enough to roll back.
    min_requests: float = Field(default=10, ge=0, allow_inf_nan=False)
    window: str = "1m"
    for_count: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SignalSettings:
        problems = []
        if not _SIGNAL_NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} must be snake_case (it is a metric label)")
        # Verification narrows the window to the time since the rollback was
        # ready; a query without the placeholder would look into the bad period.
        if "{window}" not in self.query:
            problems.append("query must contain the {window} placeholder")
        if self.traffic_query is not None and "{window}" not in self.traffic_query:
            problems.append("traffic_query must contain the {window} placeholder")
        if not _PROM_DURATION.fullmatch(self.window):
            problems.append(f'window {self.window!r} is not a PromQL duration such as "1m"')
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _default_signals() -> tuple[SignalSettings, ...]:
    # Imported lazily: the signal definitions belong to rollbackd.signals,
    # which the config only mirrors when the key is absent.
    from rollbackd.signals import DEFAULT_SIGNALS

    return tuple(
        SignalSettings(
            name=spec.name,
            query=spec.query,
            threshold=spec.threshold,
            comparison=spec.comparison,
            traffic_query=spec.traffic_query,
            min_traffic=spec.min_traffic,
            min_requests=spec.min_requests,
            window=spec.window,
            for_count=spec.for_count,
        )
        for spec in DEFAULT_SIGNALS
    )


class PrometheusSettings(_Section):
    """Where to query signals, and which signals to watch."""

    url: HttpUrl
    timeout: PositiveDuration = timedelta(seconds=10)
    attempts: int = Field(default=3, ge=1, le=10)
    poll_interval: PositiveDuration | None = None  # None: the scrape interval
    scrape_interval: PositiveDuration | None = None  # None: read from Prometheus
    bearer_token_file: SecretFromFile | None = None
    bearer_token: SecretStr | None = None  # env only
    signals: tuple[SignalSettings, ...] = Field(default_factory=_default_signals)

    @model_validator(mode="after")
    def _check(self) -> PrometheusSettings:
        _one_secret(
            self.bearer_token, self.bearer_token_file, "prometheus", "bearer_token", required=False
        )
        if not self.signals:
            raise ValueError("signals must list at least one signal")
        names = [s.name for s in self.signals]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"signal names must be unique: {', '.join(duplicates)}")
        return self

    def bearer_token_value(self) -> str | None:
        return _secret_value(self.bearer_token, self.bearer_token_file)

    def signal_specs(self) -> tuple[SignalSpec, ...]:
        """The signals as ``rollbackd.signals.SignalSpec`` values for the poller."""
        from rollbackd.signals import SignalSpec

        return tuple(SignalSpec(**s.model_dump()) for s in self.signals)


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
        value = _secret_value(self.password, self.password_file)
        assert value is not None  # guaranteed by _check
        return value


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


class TargetsSettings(_Section):
    """Alert labels that name the Deployment an alert is about, tried in order."""

    namespace_labels: tuple[NonEmptyStr, ...] = Field(default=("namespace",), min_length=1)
    deployment_labels: tuple[NonEmptyStr, ...] = Field(default=("deployment",), min_length=1)
    pod_labels: tuple[NonEmptyStr, ...] = Field(default=("pod",), min_length=1)


_DEFAULT_POLICY = Policy()


class PolicySettings(_Section):
    """Global policy; namespaces and annotations refine it per target."""

    change_window: PositiveDuration = _DEFAULT_POLICY.change_window
    min_stable: NonNegativeDuration = _DEFAULT_POLICY.min_stable
    cooldown: NonNegativeDuration = _DEFAULT_POLICY.cooldown
    dry_run: bool = _DEFAULT_POLICY.dry_run
    allowed_template_fields: tuple[NonEmptyStr, ...] = _DEFAULT_POLICY.allowed_template_fields
    allow_mutable_images: bool = _DEFAULT_POLICY.allow_mutable_images


class RolloutSettings(_Section):
    timeout: PositiveDuration = timedelta(minutes=10)


class VerifySettings(_Section):
    intervals: int = Field(default=3, ge=1, le=20)
    timeout: PositiveDuration = timedelta(minutes=5)
    require_endpoints: bool = True


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
        value = _secret_value(self.routing_key, self.routing_key_file)
        assert value is not None  # guaranteed by _check
        return value


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
        value = _secret_value(self.webhook_url, self.webhook_url_file)
        assert value is not None  # guaranteed by _check
        return value


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


class RetentionSettings(_Section):
    # History older than this is pruned; the live part (rollbacks in flight,
    # undecided signals, undelivered pages) never is.
    max_age: PositiveDuration = timedelta(days=30)
    # Past this many bytes of pages, older history goes first. Half the
    # chart's 1 GiB volume: room for the WAL and a checkpoint.
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    interval: PositiveDuration = timedelta(hours=1)


class JournalSettings(_Section):
    path: NonEmptyStr = "/var/lib/rollbackd/journal.sqlite"
    # normal: a 2xx survives any process crash; full: also a power cut (an
    # fsync per commit), for a journal on a persistent volume.
    synchronous: Literal["normal", "full"] = "normal"
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


class LeaderElectionSettings(_Section):
    enabled: bool = True
    namespace: NamespaceName = "rollbackd"
    lease_name: NonEmptyStr = "rollbackd"
    identity: NonEmptyStr | None = None  # None: the host name (the pod name)
    lease_duration: PositiveDuration = timedelta(seconds=15)
    renew_deadline: PositiveDuration = timedelta(seconds=10)
    retry_period: PositiveDuration = timedelta(seconds=2)

    @model_validator(mode="after")
    def _check(self) -> LeaderElectionSettings:
        # As in client-go: a leader must give up before others may take over.
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("expected retry_period < renew_deadline < lease_duration")
        return self

    def effective_identity(self) -> str:
        return self.identity or socket.gethostname()


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class LoggingSettings(_Section):
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = "auto"


class Settings(_Section):
    """The whole configuration. Only ``prometheus.url`` has no default."""

    cluster: ClusterSettings = ClusterSettings()
    prometheus: PrometheusSettings
    # Validated even when absent: an absent section has no credentials, which is an error.
    webhook: WebhookSettings = Field(default_factory=dict, validate_default=True)
    targets: TargetsSettings = TargetsSettings()
    policy: PolicySettings = PolicySettings()
    rollout: RolloutSettings = RolloutSettings()
    verify: VerifySettings = VerifySettings()
    notify: NotifySettings = NotifySettings()
    journal: JournalSettings = JournalSettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    logging: LoggingSettings = LoggingSettings()

    def namespace_allowed(self, namespace: str) -> bool:
        allowed = not self.cluster.namespaces or namespace in self.cluster.namespaces
        return allowed and namespace not in self.cluster.exclude_namespaces

    def policy_for(
        self, target: Target, annotations: Mapping[str, str]
    ) -> tuple[Policy, tuple[str, ...]]:
        """The effective policy for one target, and why any annotation was ignored.

        Annotations can opt a target out, into dry-run, and change its change
        window and cooldown. They cannot lift a global or namespace dry-run:
        an operator's dry-run is a safety switch a Deployment owner must not
        override. Bad values are ignored (the global value stays) and reported
        so the caller can log them.
        """
        p = self.policy
        problems: list[str] = []
        enabled = True
        raw_enabled = annotations.get(ANNOTATION_ENABLED)
        if raw_enabled is not None:
            flag = _parse_flag(raw_enabled)
            if flag is None:
                problems.append(
                    _bad_annotation(ANNOTATION_ENABLED, raw_enabled, '"true" or "false"')
                )
            else:
                enabled = flag
        dry_run = p.dry_run or target.namespace in self.cluster.dry_run_namespaces
        raw_dry_run = annotations.get(ANNOTATION_DRY_RUN)
        if raw_dry_run is not None:
            flag = _parse_flag(raw_dry_run)
            if flag is None:
                problems.append(
                    _bad_annotation(ANNOTATION_DRY_RUN, raw_dry_run, '"true" or "false"')
                )
            elif flag:
                dry_run = True
            elif dry_run:
                problems.append(
                    f'{ANNOTATION_DRY_RUN}: "false" ignored: dry-run is set globally '
                    "or for the namespace"
                )
        change_window = _annotation_duration(
            annotations, ANNOTATION_CHANGE_WINDOW, p.change_window, _positive, problems
        )
        cooldown = _annotation_duration(
            annotations, ANNOTATION_COOLDOWN, p.cooldown, _not_negative, problems
        )
        policy = Policy(
            change_window=change_window,
            min_stable=p.min_stable,
            cooldown=cooldown,
            dry_run=dry_run,
            enabled=enabled,
            namespace_allowed=self.namespace_allowed(target.namespace),
            allowed_template_fields=p.allowed_template_fields,
            allow_mutable_images=p.allow_mutable_images,
        )
        return policy, tuple(problems)


def _parse_flag(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.strip().lower())


def _bad_annotation(key: str, value: str, expected: str) -> str:
    return f"{key}: ignored bad value {value!r}, expected {expected}"


def _annotation_duration(
    annotations: Mapping[str, str],
    key: str,
    default: timedelta,
    check: Any,
    problems: list[str],
) -> timedelta:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        value: timedelta = check(parse_duration(raw))
    except ValueError as exc:
        problems.append(f"{key}: ignored bad value {raw!r}: {exc}")
        return default
    return value


# --- loading -------------------------------------------------------------


def load_settings(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ
) -> Settings:
    """Load, override from ``env`` and validate; raise ConfigError listing every problem."""
    data = _read_yaml(path) if path is not None else {}
    for section in Settings.model_fields:
        if section in data and data[section] is None:
            data[section] = {}  # an empty section means "all defaults"
    errors = _pop_inline_secrets(data)
    env_errors, from_env = _apply_env(data, env)
    errors += env_errors
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors += [_format_error(e, from_env) for e in exc.errors()]
        raise ConfigError(errors) from None
    if errors:
        raise ConfigError(errors)
    return settings


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: config file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read config file: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{name}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}: expected a mapping of sections at the top level"])
    return data


def _pop_inline_secrets(data: dict[str, Any]) -> list[str]:
    errors = []
    for secret_path in SECRET_PATHS:
        node: Any = data
        for key in secret_path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and secret_path[-1] in node:
            del node[secret_path[-1]]  # never keep an inline secret around
            key = secret_path[-1]
            errors.append(
                f"{'.'.join(secret_path)}: secrets are not accepted in the config file; "
                f"use {key}_file or env {_env_name(*secret_path)}"
            )
    return errors


def _apply_env(
    data: dict[str, Any], env: Mapping[str, str]
) -> tuple[list[str], dict[tuple[str, ...], str]]:
    """Merge overrides into ``data``; return problems and which key paths env set."""
    errors = []
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            errors.append(f"env {name}: expected ROLLBACKD__SECTION__KEY")
            continue
        raw = env[name]
        value: Any = raw if path in SECRET_PATHS else _yaml_scalar(raw)
        node = data
        for depth, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                errors.append(f"env {name}: {where} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
            applied[path] = name
    return errors, applied


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _format_error(error: Mapping[str, Any], from_env: Mapping[tuple[str, ...], str]) -> str:
    loc = tuple(error["loc"])
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    # Say where a bad value came from: the file shows a different one.
    source = next(
        (name for env_path, name in from_env.items() if loc[: len(env_path)] == env_path), None
    )
    if source is not None:
        message += f" (from env {source})"
    return f"{path or '(top level)'}: {message}"


def format_duration(value: timedelta) -> str:
    """The compact form the config accepts ("1h30m", "500ms"), for messages and summaries."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    sign, millis = ("-", -millis) if millis < 0 else ("", millis)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, millis = divmod(millis, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)
