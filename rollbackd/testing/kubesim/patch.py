"""The three PATCH flavours of the Kubernetes API, applied to plain JSON objects.

* JSON patch (RFC 6902) via ``jsonpatch``; a malformed document is 400, an
  operation that cannot apply (including a failed ``test``) is 422, exactly
  as the real API server answers.
* JSON merge patch (RFC 7386).
* Strategic merge patch: like merge patch, but lists that Kubernetes declares
  with a ``patchMergeKey`` are merged element-wise by that key, and the
  ``$patch``, ``$retainKeys``, ``$setElementOrder/`` and
  ``$deleteFromPrimitiveList/`` directives are honoured. The merge keys come
  from a table of the fields that Deployments, Pods and Services use, which
  is what rollbackd and kubectl patch.

Every function returns a new object and never mutates its inputs, so a
failing patch cannot corrupt the stored object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonpatch

from .errors import ApiError, bad_request, unsupported_media_type
from .store import clone

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_PATCH_TYPES_BUILTIN = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
_PATCH_TYPES_CUSTOM = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)

# Field name -> merge key for lists merged by key (patchStrategy "merge").
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy "merge" on a primitive list).
_MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})


def check_patch_type(content_type: str, *, custom: bool) -> str:
    """The patch type for a request's Content-Type, or 415 as the real server answers."""
    media_type = content_type.split(";")[0].strip().lower()
    accepted = _PATCH_TYPES_CUSTOM if custom else _PATCH_TYPES_BUILTIN
    if media_type not in accepted:
        raise unsupported_media_type(
            f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
        )
    return media_type


def apply_json_patch(obj: Mapping[str, Any], document: Any) -> dict[str, Any]:
    """RFC 6902. 400 for a malformed document, 422 when an operation fails."""
    if not isinstance(document, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        # The constructor checks every operation: a malformed one is a decode error (400).
        patch = jsonpatch.JsonPatch(document)
    except (
        jsonpatch.InvalidJsonPatch,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
    ) as error:
        raise bad_request(f"invalid JSON patch: {error}") from None
    try:
        result = patch.apply(clone(dict(obj)), in_place=True)
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
    ) as error:
        raise ApiError(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
            details={"causes": [{"reason": "UnexpectedServerResponse", "message": str(error)}]},
        ) from None
    if not isinstance(result, dict):
        raise bad_request("a JSON patch must leave an object at the document root")
    return result


def apply_merge_patch(obj: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def apply_strategic_merge_patch(obj: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """Kubernetes strategic merge patch on a built-in kind."""
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    merged = _merge_map(dict(obj), patch)
    if merged is None:
        raise bad_request("a strategic merge patch cannot delete the whole object")
    return merged


def _merge_map(
    original: Mapping[str, Any] | None, patch: Mapping[str, Any]
) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "replace":
        return _strip_directives(body)
    if directive is not None:
        raise bad_request(f"Unknown patch type: {directive}")
    result: dict[str, Any] = clone(dict(original)) if original else {}
    retain = body.pop("$retainKeys", None)
    orders = _pop_list_directives(body, "$setElementOrder/")
    deletions = _pop_list_directives(body, "$deleteFromPrimitiveList/")
    for key, value in body.items():
        if key.startswith("$"):
            raise bad_request(f"unknown strategic merge patch directive {key!r}")
        _merge_field(result, key, value)
    for key, values in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [item for item in result[key] if item not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            result[key] = _apply_order(key, result[key], order)
    if retain is not None:
        if not isinstance(retain, list):
            raise bad_request("$retainKeys must be a list of field names")
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _pop_list_directives(body: dict[str, Any], prefix: str) -> dict[str, list[Any]]:
    """Remove the ``prefix<field>`` directives from ``body``: {field: its list}."""
    found: dict[str, list[Any]] = {}
    for key in [k for k in body if k.startswith(prefix)]:
        found[key.split("/", 1)[1]] = body.pop(key) or []
    return found


def _merge_field(result: dict[str, Any], key: str, value: Any) -> None:
    """One field of a patch into ``result``: null deletes, maps and lists merge."""
    if value is None:
        result.pop(key, None)
    elif isinstance(value, dict):
        merged = _merge_map(result.get(key) if isinstance(result.get(key), dict) else None, value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    elif isinstance(value, list):
        result[key] = _merge_list(key, result.get(key), value)
    else:
        result[key] = value


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        sample = next((item for item in items if isinstance(item, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return _MERGE_KEYS.get(field)


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _strip_directives(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    current = list(original) if isinstance(original, list) else []
    if field in _MERGED_PRIMITIVE_LISTS:
        return clone(current) + [item for item in patch if item not in current]
    merge_key = _merge_key(field, current + patch)
    if merge_key is None or not all(isinstance(item, dict) for item in patch):
        return [_strip_directives(item) if isinstance(item, dict) else item for item in patch]
    result = clone(current)
    for item in patch:
        if merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            merged = _merge_map(result[index], item)
            if merged is None:
                del result[index]
            else:
                result[index] = merged
    return result


def _apply_order(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Reorder ``items`` as ``$setElementOrder`` asks; items it does not name go last."""
    merge_key = _merge_key(field, items)

    def identity(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [identity(entry) for entry in order]
    ranked = sorted(
        enumerate(items),
        key=lambda pair: (
            wanted.index(identity(pair[1])) if identity(pair[1]) in wanted else len(wanted),
            pair[0],
        ),
    )
    return [item for _, item in ranked]


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value
