"""JSON patch pieces every guarded write of rollbackd builds (RFC 6901/6902).

Every write carries a resourceVersion precondition: a ``test`` op first, so a
human's concurrent change fails the patch instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RESOURCE_VERSION_PATH = "/metadata/resourceVersion"


def escape_pointer(segment: str) -> str:
    """One JSON-pointer path segment: ``~`` -> ``~0``, ``/`` -> ``~1`` (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


def annotation_path(key: str) -> str:
    """The JSON pointer of one annotation, e.g. ``/metadata/annotations/rollbackd.io~1x``."""
    return f"/metadata/annotations/{escape_pointer(key)}"


def precondition(resource_version: Any) -> dict[str, Any]:
    """The ``test`` op: the patch applies only to this resourceVersion."""
    return {"op": "test", "path": RESOURCE_VERSION_PATH, "value": resource_version}


def precondition_of(ops: Sequence[Mapping[str, Any]]) -> str | None:
    """The resourceVersion a patch's precondition tests, if it has one."""
    for op in ops:
        if op.get("op") == "test" and op.get("path") == RESOURCE_VERSION_PATH:
            return str(op.get("value"))
    return None


def annotation_ops(
    existing: Mapping[str, str] | None, changes: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    """Ops that set (or, with None, remove) annotations on an object.

    ``existing`` is the object's annotations map (None when it has none: then
    the map itself is added, since a pointer into a missing map fails).
    """
    if existing is None:
        value = {k: v for k, v in changes.items() if v is not None}
        return [{"op": "add", "path": "/metadata/annotations", "value": value}]
    ops: list[dict[str, Any]] = []
    for key, item in changes.items():
        if item is not None:
            ops.append({"op": "add", "path": annotation_path(key), "value": item})
        elif key in existing:
            ops.append({"op": "remove", "path": annotation_path(key)})
    return ops
