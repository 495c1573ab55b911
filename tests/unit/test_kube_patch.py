"""The JSON patch pieces of every guarded write: pointer escaping, preconditions, annotations."""

from __future__ import annotations

from rollbackd.kube.patch import (
    annotation_ops,
    annotation_path,
    escape_pointer,
    precondition,
    precondition_of,
)


def test_pointer_segments_escape_tilde_before_slash() -> None:
    assert escape_pointer("rollbackd.io/paused-sync") == "rollbackd.io~1paused-sync"
    assert escape_pointer("a~/b") == "a~0~1b"  # "~1" from "/" must not become "~01"
    assert annotation_path("x/y") == "/metadata/annotations/x~1y"


def test_the_precondition_is_found_again_in_a_patch() -> None:
    ops = [precondition("41"), {"op": "replace", "path": "/spec/template", "value": {}}]
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    assert precondition_of(ops) == "41"
    assert precondition_of(ops[1:]) is None


def test_annotations_are_set_and_removed_one_by_one() -> None:
    ops = annotation_ops(
        {"keep": "1", "drop/me": "2"}, {"new/one": "v", "drop/me": None, "absent": None}
    )
    assert ops == [
        {"op": "add", "path": "/metadata/annotations/new~1one", "value": "v"},
        {"op": "remove", "path": "/metadata/annotations/drop~1me"},
    ]


def test_an_object_without_annotations_gets_the_whole_map() -> None:
    # A pointer into a missing map fails, so the map itself is added.
    assert annotation_ops(None, {"a": "1", "b": None}) == [
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}
    ]
