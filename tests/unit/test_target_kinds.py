"""The target kinds and the Argo abort behind the Strategy interface, pure.

The executor runs one phase flow for every target; what a target is (a
Deployment, an Argo Rollout) is a TargetKind the factory picks from the
watch cache, and a Rollout's abort is a Strategy like the others. These specs
pin what the executor relies on: the choice, each kind's fresh re-check and
"moved since", the abort's plan as a Restore, and that no module of the
executor knows a Rollout.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
from datetime import UTC, datetime
from typing import Any

import pytest

from rollbackd.argo import ANNOTATION_ARGO_ABORT
from rollbackd.model import ANNOTATION_ROLLBACK, Phase, Rollback, Target
from rollbackd.reasons import ReasonCode
from rollbackd.state import RollbackState, encode_state
from rollbackd.strategies import PlanError
from rollbackd.strategies.argoabort import AbortStrategy, abort_plan
from rollbackd.strategies.argotarget import ROLLOUT
from rollbackd.strategies.deployment import DEPLOYMENT
from rollbackd.strategies.factory import for_target, kind_of, recorded
from rollbackd.strategies.rolling import RollingStrategy
from tests.unit.test_argo import REPLICASETS, rollout

WEB = Target("shop", "web")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXECUTOR = pathlib.Path(__file__).parents[2] / "rollbackd" / "executor"


class Cache:
    """The watch cache as kind_of reads it: what is cached by name."""

    def __init__(
        self, deployments: frozenset[str] = frozenset(), rollouts: frozenset[str] = frozenset()
    ) -> None:
        self._deployments, self._rollouts = deployments, rollouts

    def deployment(self, target: Target) -> dict[str, Any] | None:
        return {"kind": "Deployment"} if target.name in self._deployments else None

    def rollout(self, target: Target) -> dict[str, Any] | None:
        return {"kind": "Rollout"} if target.name in self._rollouts else None


class Adapter:
    def __init__(self, cache: object) -> None:
        self.cache = cache


def rollback(**kw: Any) -> Rollback:
    fields = {"id": "rb-1", "target": WEB, "phase": Phase.PLANNING, "started_at": NOW}
    return Rollback(**{**fields, "updated_at": NOW, **kw})


def state(rollback_id: str, phase: Phase = Phase.ROLLING_BACK) -> str:
    return encode_state(RollbackState(rollback_id, phase, None, None, NOW, NOW, "error_ratio"))


# --- the choice --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kube", "kind"),
    [
        (Adapter(Cache(rollouts=frozenset({"web"}))), ROLLOUT),
        (Adapter(Cache(deployments=frozenset({"web"}))), DEPLOYMENT),
        # A Deployment and a Rollout of one name: the Deployment is the target.
        (Adapter(Cache(deployments=frozenset({"web"}), rollouts=frozenset({"web"}))), DEPLOYMENT),
        (Adapter(Cache()), DEPLOYMENT),  # neither cached: the Deployment's read says not found
        (object(), DEPLOYMENT),  # an adapter without a watch cache
        (Adapter(object()), DEPLOYMENT),  # Rollouts not served: the cache has no rollouts
    ],
)
def test_a_target_is_a_rollout_only_when_the_cache_has_a_rollout_and_no_deployment(
    kube: object, kind: object
) -> None:
    assert kind_of(kube, WEB) is kind


async def test_a_rollout_is_aborted_without_asking_a_service_which_strategy() -> None:
    class NoServices:
        async def list_items(self, path: str) -> list[dict[str, Any]]:
            raise AssertionError(f"listed {path}")

    chosen = await for_target(NoServices(), WEB, rollout())
    assert isinstance(chosen, AbortStrategy)


def test_a_resumed_rollback_keeps_the_abort_when_its_record_is_the_states() -> None:
    annotations = {
        ANNOTATION_ROLLBACK: state("rb-1", Phase.ROLLBACK_COMPLETED),
        ANNOTATION_ARGO_ABORT: json.dumps({"rollback_id": "rb-1"}),
    }
    chosen = recorded({"metadata": {"annotations": annotations}})
    assert isinstance(chosen, AbortStrategy)
    assert not chosen.cleanup_due({"metadata": {"annotations": annotations}})
    # Another rollback's record is not this one's: nothing says abort.
    stale = {**annotations, ANNOTATION_ROLLBACK: state("rb-2")}
    assert isinstance(recorded({"metadata": {"annotations": stale}}), RollingStrategy)


# --- the abort as a Strategy ---------------------------------------------------------------


def test_the_abort_plans_a_restore_whose_changes_are_the_abort_plan() -> None:
    restore = AbortStrategy().plan(rollout(), REPLICASETS, None, {}, rollback_id="rb-1")

    assert restore.to_revision is None  # nothing numbered is restored
    assert restore.summary == "aborting Rollout shop/web: canary web-c2 to 0, stable web-s1 to 4"
    assert restore.changes["rollback_id"] == "rb-1" and restore.template_hash == "s1"
    assert restore.replicaset["metadata"]["name"] == "web-s1"
    assert abort_plan(restore).changes() == restore.changes


def test_the_abort_patch_carries_the_record_and_the_state_guarded_by_the_plans_read() -> None:
    strategy = AbortStrategy()
    restore = strategy.plan(rollout(), REPLICASETS, None, rollback_id="rb-1")

    ops = strategy.patch(rollout(), restore, annotations={ANNOTATION_ROLLBACK: state("rb-1")})

    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    written = {op["path"]: op["value"] for op in ops[1:]}["/metadata/annotations"]
    assert set(written) == {ANNOTATION_ROLLBACK, ANNOTATION_ARGO_ABORT}
    assert json.loads(written[ANNOTATION_ARGO_ABORT])["canary_hash"] == "c2"


@pytest.mark.parametrize(
    ("now", "code"),
    [
        (rollout(abort=True), ReasonCode.ROLLOUT_ALREADY_ABORTED),
        (rollout(currentPodHash="c3"), ReasonCode.TARGET_CHANGED),
        (rollout(currentPodHash="s1"), ReasonCode.ROLLOUT_NOT_UPDATING),
    ],
)
def test_an_approved_abort_is_refused_when_the_rollout_moved_from_the_proposal(
    now: dict[str, Any], code: ReasonCode
) -> None:
    proposed = AbortStrategy().plan(rollout(), REPLICASETS, None, rollback_id="rb-1")
    record = abort_plan(proposed).record()
    now["metadata"]["annotations"] = {ANNOTATION_ARGO_ABORT: record}

    with pytest.raises(PlanError) as refused:
        AbortStrategy().plan(now, REPLICASETS, None, rollback_id="rb-1")

    assert refused.value.reason_code == code
    assert "changed since the approved proposal" in refused.value.message


def test_the_abort_status_over_the_rollout_alone_is_whether_the_abort_took() -> None:
    assert not AbortStrategy().status(rollout()).complete
    assert AbortStrategy().status(rollout(abort=True)).complete
    assert not AbortStrategy().status({"spec": {}}).complete  # cannot be judged


# --- each kind's fresh re-check and "moved since" ------------------------------------------


def deployment(revision: str = "2", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": revision}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}, **spec},
    }


def replicaset(revision: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "creationTimestamp": "2026-03-01T11:50:00Z",
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def test_a_deployment_still_as_decided_gives_the_revision_and_when_it_began() -> None:
    fresh = DEPLOYMENT.recheck(
        rollback(from_revision=2), deployment(), [replicaset("1", "a:1"), replicaset("2", "a:2")]
    )
    assert (fresh.from_revision, fresh.rollout_started_at) == (2, "2026-03-01T11:50:00Z")


@pytest.mark.parametrize(
    ("obj", "replicasets", "code", "says"),
    [
        (deployment("3"), [replicaset("3", "a:2")], ReasonCode.TARGET_CHANGED, "revision is now 3"),
        (deployment(), [replicaset("2", "a:1")], ReasonCode.TARGET_CHANGED, "no longer revision"),
        (deployment(paused=True), [replicaset("2", "a:2")], ReasonCode.PAUSED, "is paused"),
    ],
)
def test_a_deployment_that_moved_since_the_decision_is_refused(
    obj: dict[str, Any], replicasets: list[dict[str, Any]], code: ReasonCode, says: str
) -> None:
    with pytest.raises(PlanError) as refused:
        DEPLOYMENT.recheck(rollback(from_revision=2), obj, replicasets)
    assert refused.value.reason_code == code and says in refused.value.message


def test_a_rollout_is_judged_by_the_aborts_own_plan_not_by_revisions() -> None:
    fresh = ROLLOUT.recheck(rollback(), rollout(), REPLICASETS)
    assert fresh.from_revision is None


def test_a_resumed_proposal_on_a_rollout_compares_its_status_with_the_record_on_it() -> None:
    proposed = AbortStrategy().plan(rollout(), REPLICASETS, None, rollback_id="rb-1")
    moved = rollout(abort=True)
    moved["metadata"]["annotations"] = {ANNOTATION_ARGO_ABORT: abort_plan(proposed).record()}

    why = ROLLOUT.moved(rollback(), moved, None)
    stepped = ROLLOUT.stepped_back(rollback(phase=Phase.PENDING_APPROVAL), moved)

    assert why == "Rollout shop/web changed while the abort waited: it was aborted by someone else"
    assert stepped.reason_code == ReasonCode.ROLLOUT_ALREADY_ABORTED
    assert stepped.change["aborted"] is True and stepped.what == "its proposed abort was withdrawn"
    # Unmoved, or no record of this rollback on it (none was written): nothing moved.
    assert ROLLOUT.moved(rollback(), rollout(), dataclasses.asdict(abort_plan(proposed))) is None
    assert ROLLOUT.moved(rollback(id="rb-2"), moved, None) is None


def test_the_pages_name_what_each_kind_did() -> None:
    done = rollback(phase=Phase.ROLLBACK_COMPLETED, to_revision=1)
    assert ROLLOUT.headline(done, done.phase) == "rollbackd aborted the canary of shop/web"
    assert DEPLOYMENT.headline(done, done.phase) == "rollbackd rolled back shop/web to revision 1"
    assert ROLLOUT.headline(done, Phase.ROLLING_BACK) == "rollbackd is rolling back shop/web"
    assert ROLLOUT.gitops_note and "a sync applies spec, not status" in ROLLOUT.gitops_note
    assert DEPLOYMENT.gitops_note is None  # owners paused, PLANNING recorded first


# --- the executor knows no kind of target ------------------------------------------------


def test_no_executor_module_imports_or_calls_anything_argo_rollouts_specific() -> None:
    rollout_calls = {"read_rollout", "patch_rollout", "abort_rollout", "rollout_replicasets"}
    found = []
    for path in sorted(EXECUTOR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute) and node.attr in rollout_calls:
                names = [node.attr]
            found += [f"{path.name}: {n}" for n in names if "argo" in n or n in rollout_calls]
    assert found == []
    assert not (EXECUTOR / "argo.py").exists() and not (EXECUTOR / "argoproposal.py").exists()
