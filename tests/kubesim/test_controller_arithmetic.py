"""The controller's pure rules: rollout arithmetic, hashes, revision annotations, pod identity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollbackd.testing.kubesim.controllers.kubelet import image_id, parse_duration
from rollbackd.testing.kubesim.controllers.podtemplate import equal_ignore_hash, template_hash
from rollbackd.testing.kubesim.controllers.replicas import (
    max_surge,
    max_unavailable,
    resolve_fenceposts,
    scaled_value,
)
from rollbackd.testing.kubesim.controllers.revisions import (
    ANNOTATIONS_TO_SKIP,
    set_new_rs_annotations,
)

REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"


def deployment(
    replicas: int = 10, strategy: dict | None = None, annotations: dict | None = None
) -> dict:
    spec: dict = {"replicas": replicas}
    if strategy is not None:
        spec["strategy"] = strategy
    return {"metadata": {"name": "web", "annotations": dict(annotations or {})}, "spec": spec}


def rolling(surge: int | str, unavailable: int | str) -> dict:
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


class TestSurgeAndUnavailable:
    def test_percent_surge_rounds_up_and_unavailable_rounds_down(self) -> None:
        assert scaled_value("25%", 10, round_up=True) == 3
        assert scaled_value("25%", 10, round_up=False) == 2
        assert scaled_value(4, 10, round_up=False) == 4

    def test_both_zero_means_one_pod_may_be_unavailable(self) -> None:
        assert resolve_fenceposts(0, 0, 5) == (0, 1)
        assert resolve_fenceposts("0%", "0%", 5) == (0, 1)
        # 10% of 3 is 0.3: surge rounds up to 1, so unavailable may stay 0.
        assert resolve_fenceposts("10%", "10%", 3) == (1, 0)

    def test_defaults_are_25_percent_each(self) -> None:
        assert (max_surge(deployment(10)), max_unavailable(deployment(10))) == (3, 2)

    def test_recreate_has_no_surge_and_no_unavailable_budget(self) -> None:
        recreate = deployment(4, {"type": "Recreate"})
        assert (max_surge(recreate), max_unavailable(recreate)) == (0, 0)

    def test_unavailable_is_capped_at_replicas_and_zero_for_zero_replicas(self) -> None:
        assert max_unavailable(deployment(2, rolling(0, 5))) == 2
        assert max_unavailable(deployment(0, rolling(0, 5))) == 0

    @given(
        surge=st.integers(0, 100),
        unavailable=st.integers(0, 100),
        desired=st.integers(0, 500),
    )
    def test_percentages_never_block_a_rollout(
        self, surge: int, unavailable: int, desired: int
    ) -> None:
        resolved_surge, resolved_unavailable = resolve_fenceposts(
            f"{surge}%", f"{unavailable}%", desired
        )
        assert resolved_surge + resolved_unavailable >= 1
        assert resolved_surge == math.ceil(surge * desired / 100)
        assert resolved_unavailable in (math.floor(unavailable * desired / 100), 1)

    def test_malformed_percent_is_an_error_not_a_guess(self) -> None:
        with pytest.raises(ValueError):
            scaled_value("lots%", 10, round_up=True)


class TestTemplateHash:
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }

    def test_hash_uses_the_vowel_free_alphabet_and_is_stable(self) -> None:
        value = template_hash(self.template)
        assert value == template_hash(self.template)
        assert 1 <= len(value) <= 10
        assert set(value) <= set("bcdfghjklmnpqrstvwxz2456789")

    def test_hash_changes_with_the_template_and_the_collision_count(self) -> None:
        changed = {**self.template, "spec": {"containers": [{"name": "app", "image": "app:2"}]}}
        assert template_hash(changed) != template_hash(self.template)
        assert template_hash(self.template, 1) != template_hash(self.template)

    def test_hash_label_and_null_fields_do_not_count(self) -> None:
        labelled = {
            "metadata": {
                "labels": {"app": "web", "pod-template-hash": "abc"},
                "creationTimestamp": None,
            },
            "spec": {"containers": [{"name": "app", "image": "app:1", "resources": {}}]},
        }
        assert equal_ignore_hash(labelled, self.template)
        assert template_hash(labelled) == template_hash(self.template)


class TestReplicaSetAnnotations:
    def test_new_replica_set_gets_revision_replica_counts_and_copied_annotations(self) -> None:
        d = deployment(
            4,
            rolling(1, 0),
            {
                "team": "payments",
                "kubernetes.io/change-cause": "deploy v2",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                REVISION: "7",
            },
        )
        rs: dict = {"metadata": {}}
        assert set_new_rs_annotations(d, rs, 3, exists=False)
        assert rs["metadata"]["annotations"] == {
            "team": "payments",
            "kubernetes.io/change-cause": "deploy v2",
            REVISION: "3",
            "deployment.kubernetes.io/desired-replicas": "4",
            "deployment.kubernetes.io/max-replicas": "5",
        }

    def test_reused_replica_set_keeps_its_old_revisions_in_history(self) -> None:
        rs = {"metadata": {"annotations": {REVISION: "1"}}}
        assert set_new_rs_annotations(deployment(), rs, 3, exists=True)
        assert rs["metadata"]["annotations"][REVISION] == "3"
        assert rs["metadata"]["annotations"][HISTORY] == "1"
        set_new_rs_annotations(deployment(), rs, 5, exists=True)
        assert rs["metadata"]["annotations"][HISTORY] == "1,3"

    def test_revision_is_never_lowered_and_unchanged_means_no_write(self) -> None:
        rs = {"metadata": {"annotations": {REVISION: "9"}}}
        assert not set_new_rs_annotations(deployment(), rs, 4, exists=True)
        assert rs["metadata"]["annotations"] == {REVISION: "9"}

    def test_revision_history_is_capped_by_dropping_the_oldest_entries(self) -> None:
        history = ",".join(str(n) for n in range(1, 600))
        rs = {"metadata": {"annotations": {REVISION: "600", HISTORY: history}}}
        set_new_rs_annotations(deployment(), rs, 601, exists=True)
        kept = rs["metadata"]["annotations"][HISTORY]
        assert len(kept) <= 2000
        assert kept.endswith(",599,600")
        assert not kept.startswith("1,")

    def test_skip_list_is_the_upstream_one(self) -> None:
        assert {
            "kubectl.kubernetes.io/last-applied-configuration",
            REVISION,
            HISTORY,
            "deployment.kubernetes.io/desired-replicas",
            "deployment.kubernetes.io/max-replicas",
            "deprecated.deployment.rollback.to",
        } == ANNOTATIONS_TO_SKIP


class TestPodIdentity:
    def test_image_id_is_a_deterministic_digest_of_the_repository(self) -> None:
        assert image_id("nginx:1.25") == image_id("nginx:1.25")
        assert image_id("nginx:1.25").startswith("docker-pullable://nginx@sha256:")
        assert image_id("nginx:1.25") != image_id("nginx:1.26")
        assert image_id("registry:5000/team/app:2").startswith(
            "docker-pullable://registry:5000/team/app@sha256:"
        )

    def test_image_pinned_by_digest_keeps_that_digest(self) -> None:
        digest = "sha256:" + "a" * 64
        assert image_id(f"app@{digest}") == f"docker-pullable://app@{digest}"

    def test_durations_of_the_ready_after_knob(self) -> None:
        assert parse_duration("2s") == 2.0
        assert parse_duration("500ms") == 0.5
        assert parse_duration("1.5m") == 90.0
        assert parse_duration("3") == 3.0
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration("soon")
