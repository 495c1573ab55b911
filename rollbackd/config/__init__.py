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

The package holds one module per concern: ``types`` (value types and
secrets), one module per group of sections, ``settings`` (the whole model
and the per-target policy) and ``loading`` (file, environment, errors).
"""

from rollbackd.config.loading import load_settings
from rollbackd.config.notify import (
    AlertmanagerPushSettings,
    EscalationSettings,
    NotifySettings,
    PagerDutySettings,
    SlackSettings,
    WebhookNotifySettings,
)
from rollbackd.config.policy import PolicySettings, RolloutSettings, TargetsSettings, VerifySettings
from rollbackd.config.runtime import (
    JournalSettings,
    LeaderElectionSettings,
    LoggingSettings,
    RetentionSettings,
)
from rollbackd.config.settings import Settings
from rollbackd.config.sources import ClusterSettings, PrometheusSettings, SignalSettings
from rollbackd.config.types import (
    ANNOTATION_CHANGE_WINDOW,
    ANNOTATION_COOLDOWN,
    ENV_PREFIX,
    SECRET_PATHS,
    ConfigError,
    SecretFile,
)
from rollbackd.config.webhook import BasicAuthSettings, WebhookSettings
from rollbackd.durations import format_duration, parse_duration

__all__ = [
    "ANNOTATION_CHANGE_WINDOW",
    "ANNOTATION_COOLDOWN",
    "ENV_PREFIX",
    "SECRET_PATHS",
    "AlertmanagerPushSettings",
    "BasicAuthSettings",
    "ClusterSettings",
    "ConfigError",
    "EscalationSettings",
    "JournalSettings",
    "LeaderElectionSettings",
    "LoggingSettings",
    "NotifySettings",
    "PagerDutySettings",
    "PolicySettings",
    "PrometheusSettings",
    "RetentionSettings",
    "RolloutSettings",
    "SecretFile",
    "Settings",
    "SignalSettings",
    "SlackSettings",
    "TargetsSettings",
    "VerifySettings",
    "WebhookNotifySettings",
    "WebhookSettings",
    "format_duration",
    "load_settings",
    "parse_duration",
]
