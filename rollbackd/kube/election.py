"""Leader election on the adapter: campaign for the Lease and fence this client's writes."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from rollbackd.kube.client import KubeClient
from rollbackd.kube.lease import LeaseElector, LeaseProblem, LeaseSettings
from rollbackd.kube.retry import RetryBudget, budget_scope


class LeaderElection(KubeClient):
    """``run_leader_election`` and the elector it leaves in ``election``."""

    election: LeaseElector | None = None

    async def run_leader_election(
        self,
        *,
        namespace: str,
        lease_name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
        on_problem: Callable[[LeaseProblem | None], None] | None = None,
    ) -> None:
        """Campaign for the Lease until cancelled; ``on_started`` runs while leading.

        Turns fencing on: from here, this client writes only while the Lease
        is certainly held (see :mod:`rollbackd.kube.fencing` and
        :mod:`rollbackd.kube.lease`). A replica that loses the Lease becomes a
        standby and campaigns again. ``on_problem`` hears about a Lease that
        cannot be used as configured (None once it can).
        """
        self.fence.require_lease()
        # Audit logs (and kubesim's request log) tell the replicas apart.
        self._api.user_agent = f"rollbackd/{_version()} ({identity})"
        self._identity = identity
        self.election = LeaseElector(
            self._lease_request,
            self.fence,
            LeaseSettings(
                namespace=namespace,
                name=lease_name,
                identity=identity,
                lease_duration=max(1, math.ceil(lease_duration)),
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            ),
        )
        await self.election.run(on_started, on_stopped, on_problem=on_problem)

    async def _lease_request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        # No retries inside one attempt: the elector retries every retry
        # period, and a renewal must not outlive the renew deadline waiting.
        with budget_scope(RetryBudget(0.0)):
            return await self.request(method, path, body=body)


def _version() -> str:
    from rollbackd import __version__

    return __version__
