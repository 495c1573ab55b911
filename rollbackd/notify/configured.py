"""The channels and routes the configuration names, and the cluster facts routing reads.

Adapters between ``config`` and ``notify``: one channel object per configured
channel (the single-channel sections keep their own names), and watch-cache
reads for ``rollbackd.notify.routing`` and ``rollbackd.notify.reescalate``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from rollbackd.config import Settings
from rollbackd.config.notify import (
    AlertmanagerPushSettings,
    PagerDutySettings,
    SlackSettings,
    WebhookNotifySettings,
)
from rollbackd.model import Target
from rollbackd.notify.alertmanager import AlertmanagerPushChannel
from rollbackd.notify.channel import Channel
from rollbackd.notify.http import SessionFactory, default_session_factory
from rollbackd.notify.pagerduty import PagerDutyChannel
from rollbackd.notify.routing import ANNOTATION_TEAM, Route, TargetFacts
from rollbackd.notify.slack import SlackChannel
from rollbackd.notify.webhook import WebhookChannel

if TYPE_CHECKING:
    from rollbackd.kube import Kube

__all__ = ["annotations_of", "build_channels", "lead_check_interval", "watched_target_facts"]


def build_channels(
    settings: Settings, *, request_class: type[aiohttp.ClientRequest] = aiohttp.ClientRequest
) -> list[Channel]:
    """Instantiate the configured notification channels (all optional), each by its name.

    ``request_class`` makes every channel's HTTP requests (the daemon's: fenced).
    """
    notify = settings.notify
    # The replica in the User-Agent, as on its Kubernetes requests: a pager's
    # request log then shows which replica sent a page.
    identity = settings.leader_election.effective_identity()
    sessions = default_session_factory(
        user_agent=f"rollbackd ({identity})", request_class=request_class
    )
    report_url = (
        f"{str(notify.report_base_url).rstrip('/')}/api/v1/rollbacks/{{rollback_id}}/report"
        if notify.report_base_url
        else None
    )
    configured: list[tuple[str, Any]] = [
        (name, getattr(notify, name))
        for name in ("pagerduty", "alertmanager", "slack", "webhook")
        if getattr(notify, name) is not None
    ]
    configured += list(notify.channels.items())
    return [_channel(name, cfg, sessions, report_url) for name, cfg in configured]


def _channel(name: str, cfg: Any, sessions: SessionFactory, report_url: str | None) -> Channel:
    """One channel from its settings (a single-channel section or a named channel)."""
    if isinstance(cfg, PagerDutySettings):
        return PagerDutyChannel(
            cfg.routing_key_value(),
            url=str(cfg.url),
            name=name,
            report_url_template=report_url,
            session_factory=sessions,
        )
    if isinstance(cfg, AlertmanagerPushSettings):
        return AlertmanagerPushChannel(
            str(cfg.url), name=name, report_url_template=report_url, session_factory=sessions
        )
    if isinstance(cfg, SlackSettings):
        return SlackChannel(
            cfg.webhook_url_value(),
            name=name,
            report_url_template=report_url,
            session_factory=sessions,
        )
    assert isinstance(cfg, WebhookNotifySettings), type(cfg)
    headers = dict(cfg.headers)
    token = cfg.bearer_token_value()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return WebhookChannel(str(cfg.url), name=name, headers=headers, session_factory=sessions)


def annotations_of(kube: Kube) -> Callable[[Target], dict[str, str] | None]:
    """A Deployment's annotations from the watch cache; None when not seen."""

    def read(target: Target) -> dict[str, str] | None:
        deployment: Mapping[str, Any] | None = kube.cached_deployment(target)
        if deployment is None:
            return None
        return dict(deployment.get("metadata", {}).get("annotations") or {})

    return read


def watched_target_facts(kube: Kube) -> Callable[[Target], TargetFacts]:
    """A Deployment's labels and team from the watch cache; namespace only when unseen."""

    def facts_of(target: Target) -> TargetFacts:
        deployment = kube.cached_deployment(target) if kube.synced else None
        if deployment is None:
            return TargetFacts(target.namespace, known=False)
        meta = deployment.get("metadata", {})
        team = (meta.get("annotations") or {}).get(ANNOTATION_TEAM)
        return TargetFacts(
            target.namespace,
            labels=dict(meta.get("labels") or {}),
            team=team.strip() if isinstance(team, str) and team.strip() else None,
        )

    return facts_of


def lead_check_interval(routes: Sequence[Route]) -> float:
    """A tenth of the shortest escalate_after, between 0.5 s and 30 s."""
    afters = [r.escalate_after.total_seconds() for r in routes if r.lead and r.escalate_after]
    return min(30.0, max(0.5, min(afters, default=300.0) / 10))
