"""The rollback itself: a state machine split by phase.

- :mod:`~rollbackd.executor.runner`: :class:`Executor`, entry points and the ending of every run
- :mod:`~rollbackd.executor.ports`: what it needs of the world (protocols), Event reasons
- :mod:`~rollbackd.executor.core`: phase writes, fresh reads, conflicts, GitOps on pages
- :mod:`~rollbackd.executor.planning`: PLANNING (the kind's re-check, the strategy's plan, GitOps)
- :mod:`~rollbackd.executor.applying`: ROLLING_BACK (the strategy's write; adoption on resume)
- :mod:`~rollbackd.executor.verifying`: the rollout wait and VERIFYING
- :mod:`~rollbackd.executor.endings`: ROLLBACK_FAILED, ESCALATED, SUPERSEDED

Nothing here is specific to a strategy or to what the target is: the
strategy plans, writes and waits; the target kind (a Deployment, an Argo
Rollout: :mod:`rollbackd.strategies.kinds`) reads, records the state and
words the plan, the pages and a proposal.
"""

from rollbackd.executor.ports import (
    EVENT_ESCALATED,
    EVENT_FAILED,
    EVENT_GITOPS_PAUSED,
    EVENT_PLANNED,
    EVENT_READY,
    EVENT_STARTED,
    EVENT_SUPERSEDED,
    EVENT_VERIFIED,
    KubePort,
    Pager,
    Recorder,
    VerifierPort,
)
from rollbackd.executor.runner import Executor

__all__ = [
    "EVENT_ESCALATED",
    "EVENT_FAILED",
    "EVENT_GITOPS_PAUSED",
    "EVENT_PLANNED",
    "EVENT_READY",
    "EVENT_STARTED",
    "EVENT_SUPERSEDED",
    "EVENT_VERIFIED",
    "Executor",
    "KubePort",
    "Pager",
    "Recorder",
    "VerifierPort",
]
