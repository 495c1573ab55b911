"""The Kubernetes adapter, by concern.

- :mod:`~rollbackd.kube.client`: one typed, retried API call; fresh reads
- :mod:`~rollbackd.kube.errors`: typed errors from the Status body (and connection errors)
- :mod:`~rollbackd.kube.retry`: the one retry policy and the per-rollback budget
- :mod:`~rollbackd.kube.cache`: the watch cache (list+watch, per-kind transforms,
  pods as :mod:`~rollbackd.kube.podrecord` records); :mod:`~rollbackd.kube.pager`: lists in pages
- :mod:`~rollbackd.kube.writes`, :mod:`~rollbackd.kube.patch`: guarded writes
- :mod:`~rollbackd.kube.events`: Events on the Deployment
- :mod:`~rollbackd.kube.rollout`: waiting for a rollout or a template change
- :mod:`~rollbackd.kube.election`, :mod:`~rollbackd.kube.lease`,
  :mod:`~rollbackd.kube.fencing`, :mod:`~rollbackd.kube.leader_label`: leader election
- :mod:`~rollbackd.kube.adapter`: :class:`Kube`, all of the above on one client

Nothing here imports verification or a strategy: a strategy is handed the
adapter, never the other way round.
"""

# Re-exported (``X as X``) for the daemon, the dispatcher and the tests.
from rollbackd.kube.adapter import Kube as Kube
from rollbackd.kube.errors import ConflictError as ConflictError
from rollbackd.kube.errors import ConnectionFailedError as ConnectionFailedError
from rollbackd.kube.errors import ForbiddenError as ForbiddenError
from rollbackd.kube.errors import GoneError as GoneError
from rollbackd.kube.errors import InvalidError as InvalidError
from rollbackd.kube.errors import KubeError as KubeError
from rollbackd.kube.errors import NotFoundError as NotFoundError
from rollbackd.kube.errors import ServerError as ServerError
from rollbackd.kube.errors import TooManyRequestsError as TooManyRequestsError
from rollbackd.kube.retry import RetryBudget as RetryBudget
from rollbackd.kube.rollout import RolloutOutcome as RolloutOutcome
from rollbackd.kube.rollout import RolloutStatus as RolloutStatus
from rollbackd.readiness import ReadinessReport as ReadinessReport
from rollbackd.revisions import gitops_owner as gitops_owner
