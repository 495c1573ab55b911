"""The Kubernetes adapter, by concern.

- :mod:`~rollbackd.kube.client`: one typed, retried API call; fresh reads
- :mod:`~rollbackd.kube.errors`: typed errors from the Status body (and connection errors)
- :mod:`~rollbackd.kube.retry`: the one retry policy and the per-rollback budget
- :mod:`~rollbackd.kube.cache`: the watch cache (list+watch, per-kind transforms)
- :mod:`~rollbackd.kube.writes`, :mod:`~rollbackd.kube.patch`: guarded writes
- :mod:`~rollbackd.kube.events`: Events on the Deployment
- :mod:`~rollbackd.kube.rollout`: waiting for a rollout or a template change
- :mod:`~rollbackd.kube.election`, :mod:`~rollbackd.kube.lease`,
  :mod:`~rollbackd.kube.fencing`, :mod:`~rollbackd.kube.leader_label`: leader election
- :mod:`~rollbackd.kube.adapter`: :class:`Kube`, all of the above on one client

Nothing here imports verification or a strategy: a strategy is handed the
adapter, never the other way round.
"""

from rollbackd.kube.adapter import Kube
from rollbackd.kube.errors import (
    ConflictError,
    ConnectionFailedError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
)
from rollbackd.kube.retry import RetryBudget
from rollbackd.kube.rollout import RolloutOutcome, RolloutStatus
from rollbackd.readiness import ReadinessReport
from rollbackd.revisions import gitops_owner

__all__ = [
    "ConflictError",
    "ConnectionFailedError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "Kube",
    "KubeError",
    "NotFoundError",
    "ReadinessReport",
    "RetryBudget",
    "RolloutOutcome",
    "RolloutStatus",
    "ServerError",
    "TooManyRequestsError",
    "gitops_owner",
]
