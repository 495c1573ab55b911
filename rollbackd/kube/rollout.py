"""Waiting on a Deployment: for a rollout to finish, or for its template to change.

Both are woken by the watch cache and polled as a safety net for a broken
watch. What "finished" means is the caller's predicate (a strategy's status);
the default is ``kubectl rollout status`` for a Deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from rollbackd.guard import templates_equal
from rollbackd.kube.cache import WatchCache
from rollbackd.kube.client import KubeClient
from rollbackd.kube.errors import KubeError, NotFoundError
from rollbackd.model import StrEnum, Target

log = structlog.get_logger("rollbackd.kube")


class RolloutStatus(StrEnum):
    COMPLETE = "complete"
    PROGRESSING = "progressing"
    FAILED = "failed"  # the controller gave up (ProgressDeadlineExceeded)
    TIMEOUT = "timeout"  # rollbackd's own deadline passed first
    GONE = "gone"  # the Deployment was deleted while waiting


@dataclass(frozen=True)
class RolloutOutcome:
    """Where a rollout stands, with kubectl-style wording for humans."""

    status: RolloutStatus
    message: str

    @property
    def complete(self) -> bool:
        return self.status is RolloutStatus.COMPLETE

    @property
    def finished(self) -> bool:
        """True when waiting longer cannot change the outcome."""
        return self.status is not RolloutStatus.PROGRESSING


StatusFn = Callable[[Mapping[str, Any]], RolloutOutcome]


def deployment_status(deployment: Mapping[str, Any]) -> RolloutOutcome:
    """The rules of ``kubectl rollout status`` for a Deployment (never TIMEOUT/GONE)."""
    name = deployment.get("metadata", {}).get("name", "?")
    generation = deployment.get("metadata", {}).get("generation", 0)
    status = deployment.get("status") or {}
    if generation > status.get("observedGeneration", 0):
        return RolloutOutcome(
            RolloutStatus.PROGRESSING, "waiting for deployment spec update to be observed"
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutOutcome(
                RolloutStatus.FAILED, f"deployment {name!r} exceeded its progress deadline"
            )
    desired = deployment.get("spec", {}).get("replicas")
    updated = status.get("updatedReplicas", 0)
    replicas = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if desired is not None and updated < desired:
        return RolloutOutcome(
            RolloutStatus.PROGRESSING, f"{updated} out of {desired} new replicas have been updated"
        )
    if replicas > updated:
        return RolloutOutcome(
            RolloutStatus.PROGRESSING, f"{replicas - updated} old replicas are pending termination"
        )
    if available < updated:
        return RolloutOutcome(
            RolloutStatus.PROGRESSING, f"{available} of {updated} updated replicas are available"
        )
    return RolloutOutcome(RolloutStatus.COMPLETE, f"deployment {name!r} successfully rolled out")


def generation(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("generation", 0))
    except (TypeError, ValueError):
        return 0


class RolloutWaits(KubeClient):
    """Waits on one Deployment, woken by the watch cache."""

    cache: WatchCache

    # `timeout` is the contract's name for the rollout deadline (kubectl --timeout).
    async def wait_rollout_complete(
        self,
        target: Target,
        *,
        timeout: float,
        poll_interval: float = 2.0,
        status: StatusFn = deployment_status,
    ) -> RolloutOutcome:
        """Wait like ``kubectl rollout status``: woken by the watch, polled as a safety net.

        Cached objects older than the generation seen at the start are ignored,
        so a stale "complete" from before the patch never counts.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.cache.subscribe(target) as changed:
            try:
                deployment = await self.read_deployment(target)
            except NotFoundError:
                return RolloutOutcome(RolloutStatus.GONE, f"deployment {target} not found")
            min_generation = generation(deployment)
            while True:
                last = status(deployment)
                if last.finished:
                    return last
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return RolloutOutcome(
                        RolloutStatus.TIMEOUT, f"timed out after {timeout:g}s: {last.message}"
                    )
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, poll_interval)):
                        await changed.wait()
                cached = self.cache.deployment(target)
                if changed.is_set() and cached is not None and generation(cached) >= min_generation:
                    deployment = cached
                    continue
                try:
                    deployment = await self.read_deployment(target)
                except NotFoundError:
                    return RolloutOutcome(RolloutStatus.GONE, f"deployment {target} not found")
                except KubeError as exc:
                    log.warning("rollout_status_read_failed", target=str(target), error=str(exc))

    async def wait_template_change(
        self,
        target: Target,
        template: Mapping[str, Any],
        *,
        poll_interval: float = 5.0,
    ) -> dict[str, Any]:
        """Return the Deployment once its pod template is no longer ``template``.

        The watch cache wakes us and a fresh GET decides: the cache may still
        hold the object from before rollbackd's own write. Only a newer
        ``metadata.generation`` can carry a spec change, so status churn
        during a rollout costs no request; a poll every ``poll_interval`` is
        the safety net for a broken watch. Raises NotFoundError when the
        Deployment is deleted; other read errors wait for the next poll.
        """
        checked = -1  # the generation whose template was last confirmed unchanged
        with self.cache.subscribe(target) as changed:
            due = True
            while True:
                changed.clear()
                cached = self.cache.deployment(target)
                if due or cached is None or generation(cached) > checked:
                    current = await self._changed_template(target, template)
                    if isinstance(current, dict):
                        return current
                    checked = current if current is not None else checked
                try:
                    async with asyncio.timeout(poll_interval):
                        await changed.wait()
                    due = False
                except TimeoutError:
                    due = True

    async def _changed_template(
        self, target: Target, template: Mapping[str, Any]
    ) -> dict[str, Any] | int | None:
        """The Deployment when its template changed, else the generation checked (None: unread)."""
        try:
            current = await self.read_deployment(target)
        except NotFoundError:
            raise
        except KubeError as exc:
            log.warning("template_check_failed", target=str(target), error=str(exc))
            return None
        if not templates_equal(current.get("spec", {}).get("template") or {}, template):
            return current
        return generation(current)
