"""Structural schemas of custom resources, defaulted and checked as apiextensions does.

A CustomResourceDefinition's OpenAPI v3 schema is applied by the API server
on every write: ``default`` values fill absent fields first, then the value
is validated and every violation is a cause of one 422 (``Rollout.argoproj.io
"x" is invalid: spec.replicas: Invalid value: "string": spec.replicas in body
must be of type integer: "string"``). kubesim carries the subset of the real
CRDs that its clients touch, as plain dicts with the same keywords: ``type``
(``object``, ``array``, ``string``, ``integer``, ``boolean``),
``x-kubernetes-int-or-string``, ``properties``, ``additionalProperties``,
``items``, ``required``, ``minimum``/``maximum``, ``minLength``/``maxLength``,
``pattern``, ``minItems``/``maxItems`` and ``default``. CEL rules
(``x-kubernetes-validations``) are Python predicates under ``x-kubesim-rules``
with the CRD's message; ``x-kubesim-immutable`` stands for ``self == oldSelf``.

Limits: unknown fields are kept, not pruned (the schemas here are subsets of
the real ones), and ``null`` is treated as absent.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Schema = Mapping[str, Any]
Cause = dict[str, str]
# A CEL rule: a predicate over the value and the message the CRD gives when it is false.
Rule = tuple[Callable[[Any], bool], str]

RULES = "x-kubesim-rules"
IMMUTABLE = "x-kubesim-immutable"


def apply_defaults(schema: Schema, value: Any) -> Any:
    """``value`` with the schema's defaults filled in where fields are absent (in place)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if value.get(name) is None and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and schema.get("type") == "array" and "items" in schema:
        for index, item in enumerate(value):
            value[index] = apply_defaults(schema["items"], item)
    return value


def _type_name(value: Any) -> str:
    """The JSON type of a value as kube-openapi names it in messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _type_ok(schema: Schema, value: Any) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return _type_name(value) in ("integer", "string")
    wanted = schema.get("type")
    actual = _type_name(value)
    if wanted == "integer" and isinstance(value, float):
        return value.is_integer()
    return wanted is None or wanted == actual


def _shown(value: Any) -> str:
    """A value as Go's %#v-ish rendering in field errors: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return f'"{_type_name(value)}"'
    return str(value)


def _invalid(path: str, value: Any, detail: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": f"Invalid value: {_shown(value)}: {detail}", "field": path}


def _bounds(schema: Schema, value: Any, path: str) -> list[Cause]:
    """minimum/maximum, minLength/maxLength, pattern, minItems/maxItems."""
    causes: list[Cause] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            detail = f"{path} in body should be greater than or equal to {schema['minimum']}"
            causes.append(_invalid(path, value, detail))
        if "maximum" in schema and value > schema["maximum"]:
            detail = f"{path} in body should be less than or equal to {schema['maximum']}"
            causes.append(_invalid(path, value, detail))
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            detail = f"{path} in body should be at least {schema['minLength']} chars long"
            causes.append(_invalid(path, value, detail))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            message = f"Too long: may not be more than {schema['maxLength']} bytes"
            causes.append({"reason": "FieldValueTooLong", "message": message, "field": path})
        if "pattern" in schema and not re.search(schema["pattern"], value):
            detail = f"{path} in body should match '{schema['pattern']}'"
            causes.append(_invalid(path, value, detail))
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            detail = f"{path} in body should have at least {schema['minItems']} items"
            causes.append(_invalid(path, len(value), detail))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            message = f"Too many: {len(value)}: must have at most {schema['maxItems']} items"
            causes.append({"reason": "FieldValueTooMany", "message": message, "field": path})
    return causes


def _children(schema: Schema, value: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    if isinstance(value, dict):
        for name in schema.get("required") or ():
            if value.get(name) is None:
                field = f"{path}.{name}" if path else name
                causes.append(
                    {"reason": "FieldValueRequired", "message": "Required value", "field": field}
                )
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = properties.get(name) or (extra if isinstance(extra, dict) else None)
            if sub is not None and item is not None:
                causes += validate(sub, item, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            if item is not None:
                causes += validate(schema["items"], item, f"{path}[{index}]")
    return causes


def validate(schema: Schema, value: Any, path: str = "") -> list[Cause]:
    """Every violation of ``schema`` by ``value`` at ``path``, in document order."""
    if not _type_ok(schema, value):
        wanted = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema["type"]
        detail = f"{path} in body must be of type {wanted}: {json.dumps(_type_name(value))}"
        return [_invalid(path, _type_name(value), detail, "FieldValueTypeInvalid")]
    causes = _bounds(schema, value, path) + _children(schema, value, path)
    if not causes:
        for predicate, message in schema.get(RULES) or ():
            if not predicate(value):
                causes.append(_invalid(path, _type_name(value), message))
    return causes


def immutable_changes(schema: Schema, new: Any, old: Any, path: str = "") -> list[Cause]:
    """``self == oldSelf`` rules: fields marked immutable that an update changed."""
    causes: list[Cause] = []
    if not isinstance(new, dict) or not isinstance(old, dict):
        return causes
    for name, sub in (schema.get("properties") or {}).items():
        field = f"{path}.{name}" if path else name
        if sub.get(IMMUTABLE) and name in old and new.get(name) != old.get(name):
            message = f".{field} is immutable"
            causes.append(_invalid(field, _type_name(new.get(name)), message))
        else:
            causes += immutable_changes(sub, new.get(name), old.get(name), field)
    return causes


__all__ = [
    "IMMUTABLE",
    "RULES",
    "Rule",
    "Schema",
    "apply_defaults",
    "immutable_changes",
    "validate",
]
