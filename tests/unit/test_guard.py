"""The pre-rollback guard: template diffs, the field allow-list, mutable images."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollbackd import guard
from rollbackd.guard import (
    disallowed_changes,
    field_of,
    images,
    is_mutable_image,
    mutable_images,
    template_diff_paths,
    templates_equal,
)
from rollbackd.model import Policy
from rollbackd.strategies import rolling

DEFAULT_ALLOWED = Policy().allowed_template_fields


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A pod template with the given containers and extra pod spec keys."""
    return {
        "metadata": {"labels": {"app": "cart"}},
        "spec": {"containers": list(containers), **spec},
    }


def app(image: str = "shop/cart:7", **fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": image, **fields}


def test_identical_templates_have_no_diff() -> None:
    template = pod(app(env=[{"name": "A", "value": "1"}]))
    assert template_diff_paths(template, template) == []
    assert templates_equal(template, template)


def test_pod_template_hash_label_is_not_a_difference() -> None:
    current = pod(app())
    replicaset_copy = pod(app())
    replicaset_copy["metadata"]["labels"]["pod-template-hash"] = "5d8f9c7b6"
    assert template_diff_paths(current, replicaset_copy) == []


def test_null_and_empty_list_equal_an_absent_field() -> None:
    assert template_diff_paths(pod(app(args=None, env=[])), pod(app())) == []


def test_empty_mapping_is_not_an_absent_field_because_it_selects_a_volume_type() -> None:
    with_empty_dir = pod(app(), volumes=[{"name": "scratch", "emptyDir": {}}])
    without_source = pod(app(), volumes=[{"name": "scratch"}])
    assert template_diff_paths(with_empty_dir, without_source) == ["spec.volumes[scratch].emptyDir"]


def test_guard_and_strategy_use_one_template_comparison() -> None:
    # They used to disagree here: the strategy called these equal, the guard did not.
    with_empty_dir = pod(app(), volumes=[{"name": "scratch", "emptyDir": {}}])
    without_source = pod(app(), volumes=[{"name": "scratch"}])
    assert rolling.templates_equal is templates_equal
    assert not templates_equal(with_empty_dir, without_source)
    replicaset_copy = pod(app(args=None, env=[]))
    replicaset_copy["metadata"]["labels"]["pod-template-hash"] = "5d8f9c7b6"
    assert templates_equal(pod(app()), replicaset_copy)


def test_equal_templates_are_told_equal_without_walking_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every Deployment's facts compare it with its current ReplicaSet at every look:
    equal copies are the common case and must not pay the normalizing walk."""

    def walked(template: Any) -> Any:
        raise AssertionError("an equal copy was normalized")

    template = pod(app(env=[{"name": "A", "value": "1"}]))
    copy = pod(app(env=[{"name": "A", "value": "1"}]))
    monkeypatch.setattr(guard, "_normalized_template", walked)
    assert templates_equal(template, copy)


def test_a_remembered_diff_is_reused_only_while_both_templates_stay_equal() -> None:
    memo = guard.TemplateDiffMemo()
    current, candidate = pod(app("shop/cart:7")), pod(app("shop/cart:6"))
    assert memo.paths("cart", current, candidate) == ["spec.containers[app].image"]
    assert memo.paths("cart", pod(app("shop/cart:7")), candidate) == ["spec.containers[app].image"]
    # A new rollout under the same key: diffed afresh, not the remembered paths.
    rolled = pod(app("shop/cart:6", resources={"limits": {"cpu": "2"}}))
    assert memo.paths("cart", rolled, candidate) == ["spec.containers[app].resources.limits.cpu"]
    # Changed in place after it was remembered: the memo kept its own copy.
    candidate["spec"]["containers"][0]["image"] = "shop/cart:5"
    assert memo.paths("cart", rolled, candidate) == [
        "spec.containers[app].image",
        "spec.containers[app].resources.limits.cpu",
    ]


def test_the_diff_memo_forgets_the_least_recently_used_pair_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    diffed: list[str] = []

    def counting(current: Any, candidate: Any) -> list[str]:
        diffed.append(candidate["spec"]["containers"][0]["image"])
        return []

    monkeypatch.setattr(guard, "template_diff_paths", counting)
    memo = guard.TemplateDiffMemo(max_entries=2)
    for image in ("a:1", "b:1", "a:1", "c:1", "a:1", "b:1"):
        memo.paths(image, pod(app()), pod(app(image)))
    assert diffed == ["a:1", "b:1", "c:1", "b:1"]


def test_image_change_is_reported_under_the_container_name() -> None:
    paths = template_diff_paths(pod(app("shop/cart:7")), pod(app("shop/cart:6")))
    assert paths == ["spec.containers[app].image"]


def test_containers_are_matched_by_name_not_position() -> None:
    sidecar = {"name": "proxy", "image": "envoy:1.30"}
    current = pod(app("shop/cart:7"), sidecar)
    candidate = pod(app("shop/cart:6"), sidecar)
    assert template_diff_paths(current, candidate) == ["spec.containers[app].image"]


def test_reordered_containers_are_a_change_of_the_container_list() -> None:
    sidecar = {"name": "proxy", "image": "envoy:1.30"}
    paths = template_diff_paths(pod(app(), sidecar), pod(sidecar, app()))
    assert paths == ["spec.containers"]
    assert [field_of(p) for p in paths] == ["containers"]


def test_env_vars_are_matched_by_name_down_to_their_value() -> None:
    current = pod(app(env=[{"name": "A", "value": "1"}, {"name": "LOG", "value": "debug"}]))
    candidate = pod(app(env=[{"name": "A", "value": "1"}, {"name": "LOG", "value": "info"}]))
    assert template_diff_paths(current, candidate) == ["spec.containers[app].env[LOG].value"]


def test_added_and_removed_items_are_named() -> None:
    current = pod(app(env=[{"name": "OLD", "value": "1"}]))
    candidate = pod(app(env=[{"name": "NEW", "value": "1"}]), volumes=[{"name": "data"}])
    assert template_diff_paths(current, candidate) == [
        "spec.containers[app].env[NEW]",
        "spec.containers[app].env[OLD]",
        "spec.volumes[data]",
    ]


def test_unnamed_lists_are_compared_as_a_whole() -> None:
    paths = template_diff_paths(pod(app(args=["--fast"])), pod(app(args=["--slow"])))
    assert paths == ["spec.containers[app].args"]


def test_field_present_on_one_side_only_is_reported_at_its_leaves() -> None:
    current = pod(app())
    candidate = pod(app(resources={"limits": {"cpu": "2", "memory": "1Gi"}}))
    assert template_diff_paths(current, candidate) == [
        "spec.containers[app].resources.limits.cpu",
        "spec.containers[app].resources.limits.memory",
    ]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("spec.containers[app].image", "image"),
        ("spec.initContainers[migrate].image", "image"),
        ("spec.containers[app].env[LOG].value", "env"),
        ("spec.containers[app].envFrom", "envFrom"),
        ("spec.containers[app].resources.limits.cpu", "resources"),
        ("spec.containers[app].volumeMounts[data].mountPath", "volumeMounts"),
        ("spec.containers[proxy]", "containers"),
        ("spec.containers", "containers"),
        ("spec.volumes[data]", "volumes"),
        ("spec.serviceAccountName", "serviceAccountName"),
        ("metadata.annotations.prometheus.io/scrape", "annotations"),
        ("metadata.labels.version", "annotations"),
        ("metadata.labels", "annotations"),
    ],
)
def test_each_diff_path_belongs_to_one_allow_list_field(path: str, field: str) -> None:
    assert field_of(path) == field


def test_default_allow_list_accepts_release_changes() -> None:
    current = pod(
        app("shop/cart:7", env=[{"name": "A", "value": "1"}], args=["--x"], command=["run"]),
    )
    current["metadata"]["annotations"] = {"release": "7"}
    candidate = pod(
        app("shop/cart:6", env=[{"name": "A", "value": "2"}], args=["--y"], command=["serve"]),
    )
    candidate["metadata"]["annotations"] = {"release": "6"}
    candidate["metadata"]["labels"]["version"] = "6"
    paths = template_diff_paths(current, candidate)
    assert len(paths) == 6
    assert disallowed_changes(paths, DEFAULT_ALLOWED) == []


def test_default_allow_list_refuses_pod_shape_changes() -> None:
    current = pod(app(), serviceAccountName="cart")
    candidate = pod(
        app(resources={"requests": {"cpu": "1"}}),
        {"name": "proxy", "image": "envoy:1.30"},
        serviceAccountName="cart-legacy",
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    paths = template_diff_paths(current, candidate)
    assert disallowed_changes(paths, DEFAULT_ALLOWED) == [
        "spec.containers[app].resources.requests.cpu",
        "spec.containers[proxy]",
        "spec.serviceAccountName",
        "spec.volumes[data]",
    ]


def test_disallowed_changes_keeps_input_order_and_drops_allowed_ones() -> None:
    paths = ["spec.volumes[a]", "spec.containers[app].image", "spec.containers[app].resources"]
    assert disallowed_changes(paths, ["image"]) == [
        "spec.volumes[a]",
        "spec.containers[app].resources",
    ]
    assert disallowed_changes(paths, ["image", "volumes", "resources"]) == []


def test_images_lists_containers_then_init_containers() -> None:
    template = pod(
        app("shop/cart:7"),
        {"name": "proxy", "image": "envoy:1.30"},
        initContainers=[{"name": "migrate", "image": "shop/migrate:7"}],
    )
    assert images(template) == ("shop/cart:7", "envoy:1.30", "shop/migrate:7")
    assert images({}) == ()


@pytest.mark.parametrize(
    "ref",
    [
        "cart",
        "cart:latest",
        "shop/cart",
        "registry.local:5000/shop/cart",
        "registry.local:5000/cart:latest",
    ],
)
def test_untagged_or_latest_image_without_digest_is_mutable(ref: str) -> None:
    assert is_mutable_image(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "cart:1.4.2",
        "registry.local:5000/shop/cart:v7",
        "cart@sha256:" + "a" * 64,
        "cart:latest@sha256:" + "b" * 64,
    ],
)
def test_tagged_or_digest_pinned_image_is_immutable(ref: str) -> None:
    assert not is_mutable_image(ref)


def test_mutable_images_names_every_mutable_reference_of_a_template() -> None:
    template = pod(
        app("shop/cart:latest"),
        {"name": "proxy", "image": "envoy:1.30"},
        initContainers=[{"name": "wait", "image": "busybox"}],
    )
    assert mutable_images(template) == ["shop/cart:latest", "busybox"]


# --- properties ----------------------------------------------------------------

_images = st.sampled_from(["shop/cart:5", "shop/cart:6", "shop/cart:latest"])
_env = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["A", "B", "C"]), "value": st.sampled_from(["1", "2"])}
    ),
    max_size=3,
    unique_by=lambda e: e["name"],
)
_containers = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["app", "proxy", "agent"]), "image": _images, "env": _env}
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c["name"],
)
_templates = st.builds(
    lambda containers, labels, hash_label: {
        "metadata": {
            "labels": {**labels, **({"pod-template-hash": hash_label} if hash_label else {})}
        },
        "spec": {"containers": containers},
    },
    _containers,
    st.dictionaries(st.sampled_from(["app", "version"]), st.sampled_from(["x", "y"]), max_size=2),
    st.sampled_from(["", "abc123", "def456"]),
)


@given(_templates, _templates)
def test_diff_is_symmetric_and_empty_exactly_when_templates_match(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    paths = template_diff_paths(a, b)
    assert paths == template_diff_paths(b, a)
    assert template_diff_paths(a, a) == []

    def without_hash(t: dict[str, Any]) -> dict[str, Any]:
        labels = {k: v for k, v in t["metadata"]["labels"].items() if k != "pod-template-hash"}
        containers = [{k: v for k, v in c.items() if v} for c in t["spec"]["containers"]]
        return {"labels": labels, "containers": containers}

    assert (paths == []) == (without_hash(a) == without_hash(b))
    assert templates_equal(a, b) is (paths == [])


def _frozen(value: Any) -> Any:
    """``value`` as read-only mappings and tuples, as other callers may hold a template."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


@given(_templates, _templates)
def test_any_mapping_and_sequence_types_diff_like_dicts_and_lists(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    # Plain dicts, lists and strings take a fast path; the rest must agree with it.
    expected = template_diff_paths(a, b)
    assert template_diff_paths(_frozen(a), _frozen(b)) == expected
    assert template_diff_paths(_frozen(a), b) == expected


@given(_templates, _templates)
def test_every_diff_path_maps_to_a_known_field(a: dict[str, Any], b: dict[str, Any]) -> None:
    for path in template_diff_paths(a, b):
        assert field_of(path) in {"image", "env", "containers", "annotations"}
