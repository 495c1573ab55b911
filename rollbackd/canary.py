"""Canary facts, pure: which stable Deployment a canary stands beside, and the route's shift.

A canary Deployment is annotated ``rollbackd.io/canary-of: <stable
Deployment>`` and runs beside the stable one. Its release is its own
rollout: the decision's shared change-window rule reads the canary's newest
ReplicaSet (its creation, which for a fresh canary is the Deployment's
creation). Traffic is split either by replicas (both behind one Service:
rollbackd scales the canary to 0) or by a Gateway API HTTPRoute named by
``rollbackd.io/canary-route`` (rollbackd sets the canary backend's weight to
0 and gives the stable backend the rule's total).

Everything here takes plain Kubernetes JSON and returns plain values, so the
decision (:class:`~rollbackd.model.ClusterFacts` ``canary``) and the strategy
(:mod:`rollbackd.strategies.canary`) share one reading of the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rollbackd.kube.rollout import deployment_status
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import revision_of

ANNOTATION_CANARY_OF = "rollbackd.io/canary-of"
ANNOTATION_CANARY_ROUTE = "rollbackd.io/canary-route"
# On the canary once rollbackd scaled it down: the replicas it had, for a human.
ANNOTATION_CANARY_REPLICAS = "rollbackd.io/canary-replicas"
# On the canary while a canary rollback runs: its plan (JSON, names the rollback).
ANNOTATION_CANARY = "rollbackd.io/canary"
CANARY = "canary"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class CanaryFacts:
    """A Deployment as the canary of a stable one, as the decision sees it."""

    canary: str
    stable: str
    route: str | None = None  # the HTTPRoute splitting traffic (None: by replicas)
    replicas: int = 0  # the canary's replicas now (what is recorded when scaled down)
    stable_template: Mapping[str, Any] = field(default_factory=dict)
    stable_revision: int | None = None
    # Bad input: (reason code, sentence); the decision escalates with it.
    problem: tuple[ReasonCode, str] | None = None


@dataclass(frozen=True)
class RouteShift:
    """The weights an HTTPRoute has and gets: canary backends 0, stable the rule's total."""

    route: str
    canary_service: str
    stable_service: str
    before: tuple[tuple[int, int, int], ...]  # (rule, backendRef, weight) of both services
    after: tuple[tuple[int, int, int], ...]

    @property
    def done(self) -> bool:
        return self.before == self.after


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", ""))


def _labels(deployment: Obj) -> Mapping[str, str]:
    template = (deployment.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def canary_of(deployment: Obj) -> str | None:
    """The stable Deployment's name the annotation gives; None when it is not a canary."""
    value = (_meta(deployment).get("annotations") or {}).get(ANNOTATION_CANARY_OF)
    return None if value is None else value.strip()


def replicas_of(deployment: Obj) -> int:
    """``spec.replicas`` (1 when absent, as the API server defaults it)."""
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def canary_facts(deployment: Obj, deployments: Sequence[Obj]) -> CanaryFacts | None:
    """The canary facts of ``deployment``; None when it is not annotated as a canary.

    ``deployments`` are the namespace's Deployments. Bad input (no name, the
    canary itself, a missing or not Ready stable) is a ``problem``.
    """
    stable = canary_of(deployment)
    if stable is None:
        return None
    name = _name(deployment)
    route = (_meta(deployment).get("annotations") or {}).get(ANNOTATION_CANARY_ROUTE)
    facts = CanaryFacts(
        canary=name,
        stable=stable,
        route=route.strip() if route is not None else None,
        replicas=replicas_of(deployment),
    )
    if not stable or stable == name:
        why = "names no Deployment" if not stable else "names the canary itself"
        sentence = f"{name} declares {ANNOTATION_CANARY_OF}: {stable!r}, which {why}"
        return _with(facts, problem=(ReasonCode.CANARY_OF_INVALID, sentence))
    if facts.route == "":
        sentence = f"{name} declares an empty {ANNOTATION_CANARY_ROUTE}"
        return _with(facts, problem=(ReasonCode.CANARY_ROUTE_INVALID, sentence))
    found = [d for d in deployments if _name(d) == stable]
    if not found:
        sentence = f"{name} declares {ANNOTATION_CANARY_OF}: {stable}, which does not exist"
        return _with(facts, problem=(ReasonCode.CANARY_STABLE_NOT_FOUND, sentence))
    spec = found[0].get("spec") or {}
    facts = _with(
        facts, stable_template=spec.get("template") or {}, stable_revision=revision_of(found[0])
    )
    not_ready = stable_not_ready(found[0])
    if not_ready is not None:
        sentence = f"the stable Deployment {stable} of canary {name} is not Ready ({not_ready})"
        return _with(facts, problem=(ReasonCode.CANARY_STABLE_NOT_READY, sentence))
    return facts


def stable_not_ready(stable: Obj) -> str | None:
    """Why the stable Deployment cannot take the canary's traffic; None when it can."""
    if replicas_of(stable) == 0:
        return "scaled to 0 replicas"
    outcome = deployment_status(stable)
    return None if outcome.complete else outcome.message


def weight_of(ref: Obj) -> int:
    """A backendRef's weight; absent or null is the CRD's default 1, never a crash."""
    weight = ref.get("weight")
    return weight if isinstance(weight, int) and not isinstance(weight, bool) else 1


def _selects(service: Obj, deployment: Obj) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    labels = _labels(deployment)
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _only_service(services: Sequence[Obj], picks: Obj, not_picks: Obj) -> list[str]:
    return [_name(s) for s in services if _selects(s, picks) and not _selects(s, not_picks)]


def route_shift(route: Obj, services: Sequence[Obj], canary: Obj, stable: Obj) -> RouteShift | str:
    """The weight shift of ``route`` away from ``canary``; a sentence when it cannot be made.

    The canary's Service selects the canary's pods and not the stable's (and
    the other way round). Every rule with a canary backend must also have a
    stable one, which gets the rule's total weight (absent weights are 1).
    """
    name = _name(route)
    canary_services = _only_service(services, canary, stable)
    stable_services = _only_service(services, stable, canary)
    before: list[tuple[int, int, int]] = []
    after: list[tuple[int, int, int]] = []
    found: dict[str, str] = {}
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        refs = _service_refs(rule)
        ours = [r for r in refs if r[1] in canary_services]
        theirs = [r for r in refs if r[1] in stable_services]
        if not ours:
            continue
        if not theirs:
            return (
                f"rule {i} of HTTPRoute {name} has no backend for the stable Deployment's Service"
            )
        found.setdefault("canary", ours[0][1])
        found.setdefault("stable", theirs[0][1])
        rule_before, rule_after = _rule_shift(i, refs, ours, theirs)
        before += rule_before
        after += rule_after
    if "canary" not in found:
        wanted = ", ".join(canary_services) or "none selects only the canary's pods"
        return f"HTTPRoute {name} has no backend for the canary's Service ({wanted})"
    return RouteShift(name, found["canary"], found["stable"], tuple(before), tuple(after))


_Ref = tuple[int, str, int]  # (index in backendRefs, Service name, weight)


def _service_refs(rule: Mapping[str, Any]) -> list[_Ref]:
    """The rule's backends that are core Services."""
    return [
        (j, str(ref.get("name", "")), weight_of(ref))
        for j, ref in enumerate(rule.get("backendRefs") or [])
        if ref.get("kind", "Service") == "Service" and ref.get("group", "") == ""
    ]


def _rule_shift(
    i: int, refs: Sequence[_Ref], ours: Sequence[_Ref], theirs: Sequence[_Ref]
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Rule ``i``'s weights before, and after: the canary's at 0, the first stable's the rest."""
    total = sum(w for _, _, w in refs)
    others = sum(w for _, _, w in theirs[1:])
    before = [(i, j, w) for j, _, w in [*ours, *theirs]]
    after = [(i, j, 0) for j, _, _ in ours]
    after += [(i, theirs[0][0], total - others)] + [(i, j, w) for j, _, w in theirs[1:]]
    return before, after


def weight_ops(weights: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """JSON patch ops setting (rule, backendRef, weight) triples (without the precondition)."""
    return [
        {"op": "add", "path": f"/spec/rules/{i}/backendRefs/{j}/weight", "value": w}
        for i, j, w in weights
    ]


def _with(facts: CanaryFacts, **changes: Any) -> CanaryFacts:
    return replace(facts, **changes)
