"""The factories: what a target is (its TargetKind) and which Strategy rolls it back.

A target with no Deployment of its name but an Argo Rollout is a Rollout
(:func:`kind_of`, from the watch cache), whose canary is aborted. A
Deployment is rolled by the strategy a Service selecting it declares
(``rollbackd.io/strategy``), else by the rolling one. A rollback resumed
after a restart keeps the strategy it started with: its record on the
target says which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rollbackd.argo import ANNOTATION_ARGO_ABORT
from rollbackd.bluegreen import ROLLING, related_service, strategy_name
from rollbackd.canary import canary_of
from rollbackd.model import Target
from rollbackd.reasons import ReasonCode
from rollbackd.state import plan_record as recorded_plan
from rollbackd.strategies import Obj, PlanError, Strategy, StrategyKube, bluegreen, canary
from rollbackd.strategies.argoabort import AbortStrategy, is_rollout
from rollbackd.strategies.argotarget import ROLLOUT
from rollbackd.strategies.bluegreen import BlueGreenStrategy, plan_record
from rollbackd.strategies.canary import CanaryStrategy
from rollbackd.strategies.canary import plan_record as canary_record
from rollbackd.strategies.deployment import DEPLOYMENT
from rollbackd.strategies.kinds import TargetKind
from rollbackd.strategies.rolling import RollingStrategy

# One entry per implementation; canary registers here.
STRATEGIES: Mapping[str, Callable[[], Strategy]] = {
    RollingStrategy.name: RollingStrategy,
    BlueGreenStrategy.name: BlueGreenStrategy,
    CanaryStrategy.name: CanaryStrategy,
}
DEFAULT = RollingStrategy.name


def kind_of(kube: Any, target: Target) -> TargetKind:
    """A Rollout when the watch cache has no Deployment of that name but a Rollout.

    Memory only: a Deployment's rollback costs no extra request. An adapter
    without a cache (or Rollouts not served) means a Deployment.
    """
    cache = getattr(kube, "cache", None)
    if cache is None or not hasattr(cache, "rollout"):
        return DEPLOYMENT
    if cache.deployment(target) is None and cache.rollout(target) is not None:
        return ROLLOUT
    return DEPLOYMENT


def recorded(deployment: Obj) -> Strategy:
    """The strategy of the rollback recorded on ``deployment`` (resume, cleanup)."""
    if is_rollout(deployment) or recorded_plan(deployment, ANNOTATION_ARGO_ABORT):
        return AbortStrategy()
    if canary_record(deployment):
        return CanaryStrategy()
    return BlueGreenStrategy() if plan_record(deployment) else by_name(DEFAULT)


def recorded_owners(deployment: Obj) -> list[dict[str, str]]:
    """The GitOps owners beyond the target's that the recorded rollback paused.

    A blue-green Service's and previous colour's, a canary's HTTPRoute's: each
    strategy's record names them, so a resumed rollback's pages still do.
    """
    return [
        *bluegreen.recorded_gitops_owners(deployment),
        *canary.recorded_gitops_owners(deployment),
    ]


async def for_target(kube: StrategyKube, target: Target, deployment: Obj) -> Strategy:
    """The strategy a selecting Service declares; rolling when none does.

    A canary (``rollbackd.io/canary-of``) is rolled by the canary strategy, an
    Argo Rollout by its abort. An unknown name raises PlanError
    (``strategy_unknown``): nothing is written.
    """
    if is_rollout(deployment):
        return AbortStrategy()
    if canary_of(deployment) is not None:
        return CanaryStrategy()
    services = await kube.list_items(f"/api/v1/namespaces/{target.namespace}/services")
    service = related_service(deployment, services)
    name = strategy_name(service) if service is not None else ROLLING
    if name not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES))
        raise PlanError(
            ReasonCode.STRATEGY_UNKNOWN,
            f"Service {service and service['metadata']['name']} declares strategy {name!r} "
            f"(known: {known}); nothing was changed",
        )
    return by_name(name)


def by_name(name: str) -> Strategy:
    """The strategy called ``name``; KeyError names the known ones."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise KeyError(
            f"unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        ) from None
