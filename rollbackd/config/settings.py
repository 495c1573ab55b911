"""The whole configuration, and the effective policy for one target."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import Field

from rollbackd.config.approval import ApprovalSettings, effective_mode
from rollbackd.config.notify import NotifySettings
from rollbackd.config.podhealth import SourcesSettings
from rollbackd.config.policy import PolicySettings, RolloutSettings, TargetsSettings, VerifySettings
from rollbackd.config.report import ReportSettings
from rollbackd.config.runtime import JournalSettings, LeaderElectionSettings, LoggingSettings
from rollbackd.config.sources import ClusterSettings, PrometheusSettings
from rollbackd.config.types import (
    ANNOTATION_CHANGE_WINDOW,
    ANNOTATION_COOLDOWN,
    _not_negative,
    _positive,
    _Section,
)
from rollbackd.config.webhook import WebhookSettings
from rollbackd.durations import parse_duration
from rollbackd.model import ANNOTATION_DRY_RUN, ANNOTATION_ENABLED, Policy, Target


class Settings(_Section):
    """The whole configuration. Only ``prometheus.url`` has no default."""

    cluster: ClusterSettings = ClusterSettings()
    prometheus: PrometheusSettings
    sources: SourcesSettings = SourcesSettings()
    # Validated even when absent: an absent section has no credentials, which is an error.
    webhook: WebhookSettings = Field(default_factory=dict, validate_default=True)
    targets: TargetsSettings = TargetsSettings()
    policy: PolicySettings = PolicySettings()
    rollout: RolloutSettings = RolloutSettings()
    verify: VerifySettings = VerifySettings()
    approval: ApprovalSettings = ApprovalSettings()
    notify: NotifySettings = NotifySettings()
    journal: JournalSettings = JournalSettings()
    report: ReportSettings = ReportSettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    logging: LoggingSettings = LoggingSettings()

    def namespace_allowed(self, namespace: str) -> bool:
        allowed = not self.cluster.namespaces or namespace in self.cluster.namespaces
        return allowed and namespace not in self.cluster.exclude_namespaces

    def policy_for(
        self, target: Target, annotations: Mapping[str, str]
    ) -> tuple[Policy, tuple[str, ...]]:
        """The effective policy for one target, and why any annotation was ignored.

        Annotations can opt a target out, into dry-run or approve mode, and
        change its change window and cooldown. They cannot lift a global or namespace dry-run:
        an operator's dry-run is a safety switch a Deployment owner must not
        override. Bad values are ignored (the global value stays) and reported
        so the caller can log them.
        """
        p = self.policy
        problems: list[str] = []
        enabled = _annotation_flag(annotations, ANNOTATION_ENABLED, problems) is not False
        dry_run = p.dry_run or target.namespace in self.cluster.dry_run_namespaces
        flag = _annotation_flag(annotations, ANNOTATION_DRY_RUN, problems)
        if flag:
            dry_run = True
        elif flag is False and dry_run:
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
        mode = effective_mode(
            p.namespace_modes.get(target.namespace, p.mode), annotations, problems
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
            approve=mode == "approve",
        )
        return policy, tuple(problems)


def _parse_flag(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.strip().lower())


def _bad_annotation(key: str, value: str, expected: str) -> str:
    return f"{key}: ignored bad value {value!r}, expected {expected}"


def _annotation_flag(annotations: Mapping[str, str], key: str, problems: list[str]) -> bool | None:
    """The annotation's true/false, or None when absent or bad (a bad one is reported)."""
    raw = annotations.get(key)
    if raw is None:
        return None
    flag = _parse_flag(raw)
    if flag is None:
        problems.append(_bad_annotation(key, raw, '"true" or "false"'))
    return flag


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
