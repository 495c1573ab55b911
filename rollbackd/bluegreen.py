"""Blue-green facts, pure: which Service switches a Deployment, when, and back to what.

A Service annotated ``rollbackd.io/strategy: blue-green`` selects one of two
Deployments by a pod label (``rollbackd.io/color-label``, default
``version``). The release is the selector switch; its time is read from the
Service's ``metadata.managedFields``: the entry that owns ``spec.selector``
records when its manager last changed a field it owns (the API server keeps
it, so a daemon that was not running at the switch, restarted or newly
elected still knows). It is an upper bound: a later change of another field
by the same manager moves it too, which can only make an old switch look
recent, never hide a recent one. rollbackd patches with its own field
manager (``rollbackd``), so a switch it made is recognised as its own.

Everything here takes plain Kubernetes JSON and returns plain values, so the
decision (via :class:`~rollbackd.model.ClusterFacts`) and the strategy
(:mod:`rollbackd.strategies.bluegreen`) share one reading of the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rollbackd.model import ANNOTATION_STRATEGY
from rollbackd.reasons import ReasonCode
from rollbackd.revisions import parse_time, revision_of

ANNOTATION_COLOR_LABEL = "rollbackd.io/color-label"
ANNOTATION_CLEANUP = "rollbackd.io/cleanup"  # on the Service: scale-down (default) | keep
# On the target Deployment while a blue-green rollback runs: its plan (JSON).
ANNOTATION_BLUEGREEN = "rollbackd.io/blue-green"
BLUE_GREEN = "blue-green"
ROLLING = "rolling"
KNOWN_STRATEGIES = (BLUE_GREEN, ROLLING)
DEFAULT_COLOR_LABEL = "version"
CLEANUP_MODES = ("scale-down", "keep")

# A label key: optional DNS-subdomain prefix, then a name of 1-63 characters.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class BlueGreenFacts:
    """A Deployment as one colour of a blue-green Service, as the decision sees it."""

    service: str
    color_label: str = DEFAULT_COLOR_LABEL
    selector: Mapping[str, str] = field(default_factory=dict)
    live_color: str = ""  # the colour the selector picks
    target_color: str = ""  # the target Deployment's colour
    cleanup: str = "scale-down"
    switched_at: datetime | None = None  # managedFields time of the selector's owner
    switched_by: str | None = None  # that owner (the field manager)
    previous: str | None = None  # the other colour's Deployment
    previous_color: str | None = None
    previous_replicas: int = 0  # what it will be scaled to
    previous_current_replicas: int = 0
    previous_template: Mapping[str, Any] = field(default_factory=dict)
    previous_revision: int | None = None
    previous_since: datetime | None = None  # when its running version was created
    # Bad input: (reason code, sentence); the decision escalates with it.
    problem: tuple[ReasonCode, str] | None = None
    # Why there is no previous colour (None when there is one).
    no_previous: str | None = None

    @property
    def live(self) -> bool:
        return self.target_color == self.live_color


def labels_of(deployment: Obj) -> Mapping[str, str]:
    """The pod template's labels (what a Service selects)."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def _annotations(obj: Obj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def color_label_of(service: Obj) -> str:
    """The colour label key the Service declares (the default when absent)."""
    return _annotations(service).get(ANNOTATION_COLOR_LABEL, DEFAULT_COLOR_LABEL).strip()


def _selector(service: Obj) -> Mapping[str, str]:
    return (service.get("spec") or {}).get("selector") or {}


def related_service(deployment: Obj, services: Sequence[Obj]) -> Obj | None:
    """The first Service (by name) declaring a strategy whose selector, colour aside, picks it."""
    labels = labels_of(deployment)
    for service in sorted(services, key=_name):
        if ANNOTATION_STRATEGY not in _annotations(service):
            continue
        key = color_label_of(service)
        base = {k: v for k, v in _selector(service).items() if k != key}
        if base and all(labels.get(k) == v for k, v in base.items()):
            return service
    return None


def strategy_name(service: Obj) -> str:
    """The strategy the Service declares, normalised (may be unknown)."""
    return _annotations(service).get(ANNOTATION_STRATEGY, "").strip().lower()


def switch_record(service: Obj) -> tuple[datetime | None, str | None]:
    """When the selector last changed, and by which field manager (managedFields)."""
    latest: tuple[datetime | None, str | None] = (None, None)
    for entry in (service.get("metadata") or {}).get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        if "f:selector" not in (fields.get("f:spec") or {}):
            continue
        at = parse_time(entry.get("time"))
        if at is not None and (latest[0] is None or at > latest[0]):
            latest = (at, entry.get("manager"))
    return latest


def bluegreen_facts(
    deployment: Obj,
    services: Sequence[Obj],
    deployments: Sequence[Obj],
    *,
    running_since: Callable[[Obj], datetime | None] = lambda _: None,
) -> BlueGreenFacts | None:
    """The blue-green facts of ``deployment``; None when no Service declares a strategy for it.

    ``deployments`` are the namespace's Deployments; ``running_since`` tells
    when a Deployment's running version was created (its current
    ReplicaSet), for the stability rule.
    """
    service = related_service(deployment, services)
    if service is None:
        return None
    name = _name(service)
    strategy = strategy_name(service)
    if strategy == ROLLING:
        return None
    if strategy not in KNOWN_STRATEGIES:
        problem = (
            ReasonCode.STRATEGY_UNKNOWN,
            f"Service {name} declares {ANNOTATION_STRATEGY}: "
            f"{_annotations(service).get(ANNOTATION_STRATEGY)!r}, which is not a known strategy "
            f"(known: {', '.join(KNOWN_STRATEGIES)})",
        )
        return BlueGreenFacts(service=name, problem=problem)
    return _colour_facts(deployment, service, deployments, running_since)


def _colour_facts(
    deployment: Obj,
    service: Obj,
    deployments: Sequence[Obj],
    since: Callable[[Obj], datetime | None],
) -> BlueGreenFacts:
    name, key, selector = _name(service), color_label_of(service), dict(_selector(service))
    cleanup = _annotations(service).get(ANNOTATION_CLEANUP, "scale-down").strip().lower()
    switched_at, switched_by = switch_record(service)
    facts = BlueGreenFacts(
        service=name,
        color_label=key,
        selector=selector,
        live_color=selector.get(key, ""),
        target_color=labels_of(deployment).get(key, ""),
        cleanup=cleanup,
        switched_at=switched_at,
        switched_by=switched_by,
    )
    problem = _input_problem(facts, deployment, deployments)
    if problem is not None:
        return _replace(facts, problem=(ReasonCode.COLOR_LABEL_INVALID, problem))
    if cleanup not in CLEANUP_MODES:
        sentence = (
            f"Service {name} declares {ANNOTATION_CLEANUP}: {cleanup!r} "
            f"(expected one of {', '.join(CLEANUP_MODES)})"
        )
        return _replace(facts, problem=(ReasonCode.COLOR_LABEL_INVALID, sentence))
    return _with_previous(facts, deployment, deployments, since)


def _input_problem(
    facts: BlueGreenFacts, deployment: Obj, deployments: Sequence[Obj]
) -> str | None:
    """What is wrong with the Service's declaration, in a sentence; None when nothing."""
    service, key = facts.service, facts.color_label
    if not _LABEL_KEY.match(key):
        return f"Service {service} declares {ANNOTATION_COLOR_LABEL}: {key!r}, not a label key"
    if key not in facts.selector:
        return f"the selector of Service {service} has no {key!r} key ({ANNOTATION_COLOR_LABEL})"
    if not facts.target_color:
        return f"the pods of {_name(deployment)} carry no {key!r} label for Service {service}"
    live = [d for d in _candidates(facts, deployments) if labels_of(d).get(key) == facts.live_color]
    if not live:
        return (
            f"Service {service} selects {key}={facts.live_color}, which no Deployment's pods "
            "carry: it selects nothing"
        )
    return None


def _candidates(facts: BlueGreenFacts, deployments: Sequence[Obj]) -> list[Obj]:
    """Deployments whose pods the Service's selector picks, whatever their colour."""
    base = {k: v for k, v in facts.selector.items() if k != facts.color_label}
    return [d for d in deployments if all(labels_of(d).get(k) == v for k, v in base.items())]


def _with_previous(
    facts: BlueGreenFacts,
    deployment: Obj,
    deployments: Sequence[Obj],
    since: Callable[[Obj], datetime | None],
) -> BlueGreenFacts:
    """Add the other colour: exactly one other Deployment the base selector picks."""
    others = [
        d
        for d in _candidates(facts, deployments)
        if labels_of(d).get(facts.color_label) not in (None, facts.target_color)
    ]
    if len(others) != 1:
        found = ", ".join(sorted(_name(d) for d in others))
        why = (
            f"no other colour of Service {facts.service} exists"
            if not others
            else f"several other colours ({found}): which one ran before is unknown"
        )
        return _replace(facts, no_previous=why)
    previous = others[0]
    spec = previous.get("spec") or {}
    current = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    wanted = int((deployment.get("spec") or {}).get("replicas", 1) or 1)
    return _replace(
        facts,
        previous=_name(previous),
        previous_color=labels_of(previous).get(facts.color_label),
        previous_current_replicas=current,
        # Scaled down since the switch: give it what the live colour carries now.
        previous_replicas=current if current > 0 else wanted,
        previous_template=spec.get("template") or {},
        previous_revision=revision_of(previous),
        previous_since=since(previous),
    )


def _replace(facts: BlueGreenFacts, **changes: Any) -> BlueGreenFacts:
    return replace(facts, **changes)
