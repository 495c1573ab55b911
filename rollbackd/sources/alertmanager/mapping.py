"""Step 3: map a valid alert to its Deployment and a Signal; tell repeats from first sightings."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollbackd.model import Signal, SignalSource, SignalStatus, Target
from rollbackd.sources.alertmanager.alert import WebhookAlert, WebhookPayload


@dataclass(frozen=True)
class TargetMapping:
    """Which alert labels name the Deployment; the first label present wins."""

    namespace_labels: tuple[str, ...] = ("namespace",)
    deployment_labels: tuple[str, ...] = ("deployment",)
    pod_labels: tuple[str, ...] = ("pod",)


@dataclass(frozen=True)
class UnresolvedAlert:
    """An alert that names no Deployment rollbackd can find: recorded, counted, not acted on."""

    fingerprint: str
    alertname: str
    labels: Mapping[str, str]
    reason: str


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _resolve(
    alert: WebhookAlert,
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
) -> Target | str:
    """The alert's target, or the reason there is none."""
    namespace = _first(alert.labels, mapping.namespace_labels)
    if namespace is None:
        return f"no namespace label (looked for {', '.join(mapping.namespace_labels)})"
    deployment = _first(alert.labels, mapping.deployment_labels)
    if deployment is not None:
        return Target(namespace, deployment)
    pod = _first(alert.labels, mapping.pod_labels)
    if pod is None:
        looked_for = ", ".join(mapping.deployment_labels + mapping.pod_labels)
        return f"no deployment or pod label (looked for {looked_for})"
    target = resolve_pod(namespace, pod)
    if target is None:
        return f"pod {namespace}/{pod} has no known owning Deployment"
    return target


def alert_to_signal(
    alert: WebhookAlert,
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
    now: datetime,
) -> Signal | UnresolvedAlert:
    """The Signal for one validated alert, or why it names no target."""
    alertname = alert.labels.get("alertname", "")
    target = _resolve(alert, mapping, resolve_pod)
    if isinstance(target, str):
        return UnresolvedAlert(alert.identity, alertname, alert.labels, target)
    status = SignalStatus.FIRING if alert.status == "firing" else SignalStatus.RESOLVED
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or alertname
    return Signal(
        target=target,
        source=SignalSource.ALERTMANAGER,
        name=alertname,
        status=status,
        started_at=alert.starts_at,
        observed_at=now,
        key=f"am:{alert.identity}:{alert.status}:{alert.starts_at.isoformat()}",
        labels=dict(alert.labels),
        summary=summary,
    )


def alerts_to_signals(
    alerts: WebhookPayload | Iterable[WebhookAlert],
    mapping: TargetMapping,
    resolve_pod: Callable[[str, str], Target | None],
    now: datetime,
) -> tuple[list[Signal], list[UnresolvedAlert]]:
    """One Signal per alert with a target; the rest come back as UnresolvedAlert."""
    signals: list[Signal] = []
    unresolved: list[UnresolvedAlert] = []
    for alert in alerts.alerts if isinstance(alerts, WebhookPayload) else alerts:
        converted = alert_to_signal(alert, mapping, resolve_pod, now)
        if isinstance(converted, UnresolvedAlert):
            unresolved.append(converted)
        else:
            signals.append(converted)
    return signals, unresolved


class SignalDeduper:
    """Remembers signal keys for ``ttl`` so re-sends and HA duplicates are seen once.

    Bounded: past ``max_entries`` the oldest keys are forgotten first. The
    journal's ``signal_seen`` is the restart-proof check; this one is the
    cheap in-memory front line.
    """

    def __init__(self, max_entries: int = 100_000, ttl: timedelta = timedelta(hours=6)) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._ttl = ttl
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, key: str, now: datetime) -> bool:
        """True the first time ``key`` is seen (or once it has expired)."""
        self._expire(now)
        seen_at = self._seen.get(key)
        if seen_at is not None and now - seen_at < self._ttl:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        """Drop ``key``: it was not accepted after all, so its re-send must not be a repeat."""
        self._seen.pop(key, None)

    def _expire(self, now: datetime) -> None:
        # Insertion order is time order, so expired keys sit at the front.
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._ttl:
                return
            del self._seen[key]
