"""Plain values that move through rollbackd's pipeline.

Everything here is a frozen dataclass or an enum with no behaviour that does
I/O, so the decision module and the tests can build them by hand.
Times are timezone-aware UTC datetimes; durations are ``timedelta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rollbackd.argo import RolloutFacts
    from rollbackd.bluegreen import BlueGreenFacts
    from rollbackd.canary import CanaryFacts

ANNOTATION_PREFIX = "rollbackd.io/"
ANNOTATION_ENABLED = "rollbackd.io/enabled"
ANNOTATION_ROLLBACK = "rollbackd.io/rollback"  # JSON state of the rollback in flight
ANNOTATION_RESTORED = (
    "rollbackd.io/restored"  # on the Deployment: JSON {rollback_id, template_hash, revision}
)
# JSON, per reason code: the escalation page's dedup key, time and channels (incidents.py)
ANNOTATION_ESCALATED = "rollbackd.io/escalated"
ANNOTATION_DRY_RUN = "rollbackd.io/dry-run"
ANNOTATION_MODE = "rollbackd.io/mode"  # "approve": a human approves each rollback first
ANNOTATION_STRATEGY = "rollbackd.io/strategy"  # on a Service: how its Deployments roll back
ANNOTATION_CHANGE_CAUSE = "kubernetes.io/change-cause"
ANNOTATION_REVISION = "deployment.kubernetes.io/revision"
ANNOTATION_REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
LABEL_POD_TEMPLATE_HASH = "pod-template-hash"
# rollbackd's field manager on the writes whose owner is read back (a Service's
# selector: managedFields then say a blue-green switch was rollbackd's own).
FIELD_MANAGER = "rollbackd"


def utcnow() -> datetime:
    """The one wall clock; everything else takes ``now`` or a clock as an argument."""
    return datetime.now(UTC)


@dataclass(frozen=True, order=True)
class Target:
    """A Deployment, the unit rollbackd acts on."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> Target:
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
        return cls(namespace, name)


class SignalSource(StrEnum):
    ALERTMANAGER = "alertmanager"
    PROMETHEUS = "prometheus"
    KUBERNETES = "kubernetes"  # pod health, from the API server (no Prometheus needed)
    MANUAL = "manual"


class SignalStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    NO_DATA = "no_data"  # the query failed, was empty or NaN: never a trigger


@dataclass(frozen=True)
class Signal:
    """One observation that a target may be unhealthy (or healthy again).

    ``started_at`` is when the anomaly began (Alertmanager's startsAt, or the
    first breaching evaluation); ``observed_at`` is when rollbackd saw it.
    ``key`` identifies repeats of the same signal for idempotency.

    ``evidence_since`` (polled signals) is how far back the evidence behind
    ``started_at`` may reach: a polled look judges a whole query window. A
    breach first seen with nothing looked at just before (a poller that only
    now took the Lease, or came back from an outage) may be made of samples
    from up to one window earlier; one seen after a healthy look, of samples
    since that look (less one interval). Attribution to a replaced revision
    asks whether that evidence began before the restore.
    """

    target: Target
    source: SignalSource
    name: str  # alertname or signal name ("error_ratio", "latency_p99")
    status: SignalStatus
    started_at: datetime
    observed_at: datetime
    value: float | None = None
    threshold: float | None = None
    key: str = ""  # e.g. "am:<fingerprint>:<status>:<startsAt>"
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    evidence_since: datetime | None = None

    @property
    def earliest_start(self) -> datetime:
        """The earliest the anomaly may have begun, as far as its evidence shows."""
        if self.evidence_since is None:
            return self.started_at
        return min(self.evidence_since, self.started_at)


@dataclass(frozen=True)
class RevisionInfo:
    """One ReplicaSet of a Deployment, as the decision needs to see it."""

    revision: int
    replicaset: str
    uid: str
    created_at: datetime
    template: Mapping[str, Any]  # the RS pod template, pod-template-hash label removed
    images: tuple[str, ...]
    # When this revision stopped being the current one (the next revision's
    # rollout started); None for the current revision.
    replaced_at: datetime | None = None
    # The rollback id if rollbackd created this revision by restoring it.
    restored_by: str | None = None
    replicas: int = 0
    available_replicas: int = 0


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster says about a target at decision time."""

    target: Target
    exists: bool
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    template: Mapping[str, Any] = field(default_factory=dict)
    paused: bool = False
    # Newest first; revisions[0] is the current one when the rollout is known.
    revisions: tuple[RevisionInfo, ...] = ()
    # When the newest rollout began (creation of, or promotion to, the current RS).
    rollout_started_at: datetime | None = None
    gitops_owner: str | None = None  # "argocd:<app>" / "flux:<kind>/<name>" when managed
    # The target as one colour of a blue-green Service (None: a rolling target).
    bluegreen: BlueGreenFacts | None = None
    # The target as the canary of a stable Deployment (None: not a canary).
    canary: CanaryFacts | None = None
    # No Deployment of that name, but an Argo Rollout (``exists`` stays False).
    rollout: RolloutFacts | None = None


class Phase(StrEnum):
    PENDING = "PENDING"
    # Approve mode: the proposal is paged and waits for a human (or the timeout).
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PLANNING = "PLANNING"
    ROLLING_BACK = "ROLLING_BACK"
    VERIFYING = "VERIFYING"
    ROLLBACK_COMPLETED = "ROLLBACK_COMPLETED"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    ESCALATED = "ESCALATED"
    SKIPPED = "SKIPPED"
    DRY_RUN = "DRY_RUN"
    # A human changed the pod template while rollbackd rolled back or
    # verified: rollbackd stepped back and left their version alone.
    SUPERSEDED = "SUPERSEDED"
    # Approve mode: a human said no; nothing was changed.
    REJECTED = "REJECTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset(
    {
        Phase.ROLLBACK_COMPLETED,
        Phase.ESCALATED,
        Phase.SKIPPED,
        Phase.DRY_RUN,
        Phase.SUPERSEDED,
        Phase.REJECTED,
    }
)

# Reason codes of a rollback that ended because the cluster could not be
# worked with for its whole retry budget (API errors, endless write
# conflicts), not because rolling back was wrong: the next signal may try
# again, so they start no cooldown.
REASON_KUBE_UNAVAILABLE = "kube_api_unavailable"
REASON_WRITE_CONFLICTS = "write_conflicts"
RETRYABLE_REASON_CODES = frozenset({REASON_KUBE_UNAVAILABLE, REASON_WRITE_CONFLICTS})


class RecordKind(StrEnum):
    """What a record in the journal is: a rollback, a would-be one, or a page with no rollback."""

    ROLLBACK = "rollback"
    DRY_RUN = "dry_run"
    ESCALATION = "escalation"


@dataclass(frozen=True)
class Rollback:
    """A rollback rollbackd started (or recorded as would-be, or an escalation), as it stands now."""

    id: str
    target: Target
    phase: Phase
    started_at: datetime
    updated_at: datetime
    from_revision: int | None = None
    to_revision: int | None = None
    reason_code: str = ""
    reason: str = ""
    finished_at: datetime | None = None
    kind: RecordKind = RecordKind.ROLLBACK


@dataclass(frozen=True)
class History:
    """What rollbackd itself remembers about a target (journal + annotations)."""

    in_flight: Rollback | None = None
    last_finished: Rollback | None = None
    # Revisions rollbackd created by restoring them, newest first.
    restored_revisions: tuple[int, ...] = ()
    # The newest dry-run record: later reports of the same anomaly join it.
    last_dry_run: Rollback | None = None
    # A rollback the Deployment's state annotation still calls running although
    # the journal recorded its end (the final write failed): not in flight.
    ended_on_record: str | None = None


@dataclass(frozen=True)
class Policy:
    """Effective policy for one target (global config + namespace + annotations)."""

    change_window: timedelta = timedelta(minutes=30)
    min_stable: timedelta = timedelta(minutes=10)
    cooldown: timedelta = timedelta(minutes=30)
    dry_run: bool = False
    enabled: bool = True
    namespace_allowed: bool = True
    allowed_template_fields: tuple[str, ...] = (
        "image",
        "env",
        "envFrom",
        "args",
        "command",
        "annotations",
    )
    allow_mutable_images: bool = False
    # A signal replayed from the journal older than this is recorded, not acted on.
    signal_max_age: timedelta = timedelta(hours=1)
    # policy.mode "approve": a rollback waits in PENDING_APPROVAL for a human.
    approve: bool = False


class Action(StrEnum):
    ROLLBACK = "rollback"
    ESCALATE = "escalate"
    SKIP = "skip"
    DRY_RUN = "dry_run"
    JOIN = "join"  # the signal joins the rollback already in flight


@dataclass(frozen=True)
class Decision:
    """What to do about a signal, and why.

    ``reason_code`` is stable and machine-readable (used as a metric label);
    ``reason`` is a sentence for humans.
    """

    action: Action
    target: Target
    reason_code: str
    reason: str
    from_revision: int | None = None
    to_revision: int | None = None
    rollback_id: str | None = None  # set for JOIN: the rollback in flight
