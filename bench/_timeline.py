"""When each step of one bad rollout happened, read from the cluster, Prometheus and the journal.

The cluster side is watched in the bench's own process (kubesim's store, every
10 ms): the first bad pod Ready, all bad pods Ready (the rollout complete, what
``kubectl rollout status`` waits for), the rollback patch (the template back to
the good image) and the rollback Ready. Prometheus says when the first sample
with a failed request of a bad pod was scraped (the sample's own timestamp) and
when an alert rule first held (``ALERTS_FOR_STATE``). The journal says when
rollbackd received the first Alertmanager webhook and the poller's first
FIRING signal, and when the rollback was declared complete. All times are
epoch seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollbackd.journal import Journal
from rollbackd.model import Target
from rollbackd.testing.kubesim.controller import is_pod_ready
from rollbackd.testing.kubesim.store import Store
from rollbackd.testing.promstack import instant_query

WATCH_PERIOD_SECONDS = 0.01


def _image(obj: Mapping[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def _rolled_out(dep: Mapping[str, Any]) -> bool:
    status, spec = dep.get("status") or {}, dep["spec"]
    replicas = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
    )


@dataclass
class ClusterTimes:
    """What the store showed, first seen by the watcher (10 ms resolution)."""

    first_bad_pod_ready: float | None = None
    bad_ready: float | None = None
    patch: float | None = None
    rollback_ready: float | None = None


@dataclass
class ClusterWatch:
    """Watches one Deployment's bad rollout and its rollback in kubesim's store."""

    store: Store
    target: Target
    good_image: str
    bad_image: str
    times: ClusterTimes = field(default_factory=ClusterTimes)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        times = self.times
        namespace, name = self.target.namespace, self.target.name
        while True:
            now = time.time()
            dep = self.store.peek("apps/v1/deployments", namespace, name)
            if dep is not None:
                image = _image(dep)
                if times.first_bad_pod_ready is None:
                    pods = self.store.list(
                        "v1/pods", namespace, label_selector=f"app={name}", copy=False
                    )
                    if any(_image_of_pod(p) == self.bad_image and is_pod_ready(p) for p in pods):
                        times.first_bad_pod_ready = now
                if image == self.bad_image and times.bad_ready is None and _rolled_out(dep):
                    times.bad_ready = now
                if image == self.good_image and times.first_bad_pod_ready is not None:
                    if times.patch is None:
                        times.patch = now
                    if times.rollback_ready is None and _rolled_out(dep):
                        times.rollback_ready = now
            await asyncio.sleep(WATCH_PERIOD_SECONDS)


def _image_of_pod(pod: Mapping[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["image"])


async def first_bad_sample(
    prometheus_url: str, target: Target, lookback: str = "30m"
) -> float | None:
    """The scrape time of the first sample counting a failed request of ``target``."""
    expr = (
        f'http_requests_total{{namespace="{target.namespace}",deployment="{target.name}",'
        f'code="500"}}[{lookback}]'
    )
    first: float | None = None
    for series in await instant_query(prometheus_url, expr):
        for stamp, value in series.get("values") or []:
            if float(value) > 0:
                first = float(stamp) if first is None else min(first, float(stamp))
                break
    return first


async def rule_first_true(
    prometheus_url: str, target: Target, lookback: str = "30m"
) -> float | None:
    """When an alert rule about ``target`` first held (its activeAt), if one did."""
    expr = (
        f'ALERTS_FOR_STATE{{namespace="{target.namespace}",deployment="{target.name}"}}[{lookback}]'
    )
    found = [
        float(value)
        for series in await instant_query(prometheus_url, expr)
        for _stamp, value in series.get("values") or []
    ]
    return min(found) if found else None


async def first_signal(journal: Journal, target: Target, source: str, since: float) -> float | None:
    """When rollbackd received the first FIRING signal of ``source`` about ``target``."""
    rows = await journal.query(
        "SELECT observed_at FROM signals WHERE namespace = ? AND name = ? AND source = ?"
        " AND status = 'firing' ORDER BY observed_at",
        (target.namespace, target.name, source),
    )
    for row in rows:
        at = datetime.fromisoformat(row["observed_at"]).timestamp()
        if at >= since:
            return at
    return None


async def trigger_source(journal: Journal, target: Target) -> str | None:
    """Which source's signal the rollback decision named (its key prefix)."""
    rows = await journal.query(
        "SELECT signal_key FROM decisions WHERE namespace = ? AND name = ? AND action = 'rollback'"
        " ORDER BY at LIMIT 1",
        (target.namespace, target.name),
    )
    if not rows:
        return None
    key = str(rows[0]["signal_key"])
    return {"am": "alertmanager", "prom": "poller"}.get(key.split(":", 1)[0], key.split(":", 1)[0])
