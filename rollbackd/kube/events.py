"""core/v1 Events on a Deployment (or a Rollout): what ``kubectl describe`` shows of a rollback."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import structlog

from rollbackd.kube.client import KubeClient
from rollbackd.kube.retry import RetryBudget, budget_scope, current_budget
from rollbackd.model import Target

log = structlog.get_logger("rollbackd.kube")

# (apiVersion, kind) of the object an Event names.
DEPLOYMENT_KIND = ("apps/v1", "Deployment")


def event_body(
    target: Target,
    *,
    reason: str,
    message: str,
    type: str,
    uid: str | None,
    identity: str,
    now: datetime,
    kind: tuple[str, str] = DEPLOYMENT_KIND,
) -> dict[str, Any]:
    """The Event object naming ``target`` as ``kind`` (messages are capped at the API's 1 KiB)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{target.name}.{uuid.uuid4().hex[:16]}",
            "namespace": target.namespace,
        },
        "involvedObject": {
            "apiVersion": kind[0],
            "kind": kind[1],
            "name": target.name,
            "namespace": target.namespace,
            **({"uid": uid} if uid else {}),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "rollbackd", "host": identity},
        "reportingComponent": "rollbackd",
        "reportingInstance": identity,
    }


class DeploymentEvents(KubeClient):
    """Best-effort Events: a failure is logged, never raised."""

    def involved_object(
        self, target: Target, uid: str | None
    ) -> tuple[tuple[str, str], str | None]:
        """The (apiVersion, kind) and uid an Event on ``target`` names: its Deployment here."""
        return DEPLOYMENT_KIND, uid

    async def emit_event(
        self,
        target: Target,
        *,
        reason: str,
        message: str,
        type: str = "Normal",
        uid: str | None = None,
    ) -> None:
        """A core/v1 Event on the target (:meth:`involved_object`); logged, never raised.

        Transient faults are retried, but only for a request timeout's worth
        of the budget in scope: an Event is worth less than the rollback's
        next step.
        """
        try:
            kind, uid = self.involved_object(target, uid)
            body = event_body(
                target,
                reason=reason,
                message=message,
                type=type,
                uid=uid,
                identity=self._identity,
                now=datetime.now(UTC),
                kind=kind,
            )
            budget = (current_budget() or RetryBudget(self._retry_budget)).child(
                self._request_timeout
            )
            with budget_scope(budget):
                await self.request(
                    "POST", f"/api/v1/namespaces/{quote(target.namespace)}/events", body=body
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an Event is best effort, whatever went wrong
            log.warning("event_not_emitted", reason=reason, target=str(target), error=repr(exc))
