"""What rollbackd may do: target labels, policy, rollout and verification."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from rollbackd.config.approval import Mode
from rollbackd.config.assertions import Assertion, unique_assertions
from rollbackd.config.smoke import SmokeCheck, SmokeVia, unique_names
from rollbackd.config.types import (
    NamespaceName,
    NonEmptyStr,
    NonNegativeDuration,
    PositiveDuration,
    _Section,
)
from rollbackd.model import Policy


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
    # auto: roll back at once; approve: propose, page, wait for a human (see approval.*).
    mode: Mode = "auto"
    namespace_modes: dict[NamespaceName, Mode] = {}


class RolloutSettings(_Section):
    timeout: PositiveDuration = timedelta(minutes=10)


class VerifySettings(_Section):
    intervals: int = Field(default=3, ge=1, le=20)
    # Intervals without data or readiness that are judged again, not failed.
    max_inconclusive: int = Field(default=3, ge=0, le=20)
    timeout: PositiveDuration = timedelta(minutes=5)
    require_endpoints: bool = True
    # Named HTTP checks; a Deployment picks them with rollbackd.io/smoke-checks.
    smoke_checks: tuple[SmokeCheck, ...] = ()
    # In the cluster by default: no extra RBAC (the service proxy needs services/proxy).
    smoke_via: SmokeVia = "cluster-dns"
    # Named PromQL values compared at each interval; rollbackd.io/assertions picks them.
    assertions: tuple[Assertion, ...] = ()

    @field_validator("smoke_checks")
    @classmethod
    def _unique_smoke_checks(cls, value: tuple[SmokeCheck, ...]) -> tuple[SmokeCheck, ...]:
        return unique_names(value)

    @field_validator("assertions")
    @classmethod
    def _unique_assertions(cls, value: tuple[Assertion, ...]) -> tuple[Assertion, ...]:
        return unique_assertions(value)
