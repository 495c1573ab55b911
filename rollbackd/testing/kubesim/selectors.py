"""Label and field selectors, parsed once and matched against plain JSON objects.

The grammar follows the real API server: equality (``a=b``, ``a==b``,
``a!=b``), set-based (``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) for
labels, and equality only for fields. A malformed selector is a 400, not an
empty result, so a typo in a test is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_REQ = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label too, as in Kubernetes.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)


def _split_clauses(text: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    clauses: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if char == "," and depth == 0:
            clauses.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise bad_request(f"unable to parse requirement: unbalanced '(' in {text!r}")
    clauses.append("".join(current))
    return clauses


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in {text!r}")
    return value


def _parse_clause(clause: str, text: str) -> Requirement:
    stripped = clause.strip()
    if not stripped:
        raise bad_request(f"unable to parse requirement: empty clause in {text!r}")
    set_match = _SET_REQ.match(stripped)
    if set_match:
        key, operator, raw_values = set_match.groups()
        values = frozenset(_check_value(v.strip(), text) for v in raw_values.split(","))
        return Requirement(_check_key(key, text), operator, values)
    for operator, name in (("!=", "!="), ("==", "="), ("=", "=")):
        if operator in stripped:
            key, _, value = stripped.partition(operator)
            return Requirement(
                _check_key(key.strip(), text), name, frozenset({_check_value(value.strip(), text)})
            )
    if stripped.startswith("!"):
        return Requirement(_check_key(stripped[1:].strip(), text), "!")
    return Requirement(_check_key(stripped, text), "exists")


def parse_label_selector(text: str | None) -> LabelSelector | None:
    """Parse ``text``; ``None`` or blank means "everything"."""
    if text is None or not text.strip():
        return None
    return LabelSelector(tuple(_parse_clause(c, text) for c in _split_clauses(text)))


def selector_from_label_selector_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A ``metav1.LabelSelector`` (matchLabels/matchExpressions) as a matcher."""
    requirements: list[Requirement] = []
    if selector:
        for key, value in (selector.get("matchLabels") or {}).items():
            requirements.append(Requirement(key, "=", frozenset({str(value)})))
        for expression in selector.get("matchExpressions") or []:
            operator = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(
                expression.get("operator", "")
            )
            if operator is None:
                raise bad_request(f"invalid label selector operator {expression.get('operator')!r}")
            requirements.append(
                Requirement(expression["key"], operator, frozenset(expression.get("values") or ()))
            )
    return LabelSelector(tuple(requirements))


# Field paths the real server accepts for every kind, plus per-kind extras.
_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
_EXTRA_FIELDS: dict[str, frozenset[str]] = {
    "v1/events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "events.k8s.io/v1/events": frozenset(
        {
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
        }
    ),
    "v1/pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        }
    ),
    "v1/namespaces": frozenset({"status.phase"}),
    "v1/secrets": frozenset({"type"}),
    "apps/v1/replicasets": frozenset({"status.replicas"}),
}


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if current is True or current is False:
        return "true" if current else "false"
    return str(current)


def _split_field_clause(clause: str) -> tuple[str, bool, str] | None:
    """``path=value`` / ``path==value`` / ``path!=value`` as (path, negated, value)."""
    for operator, negated in (("!=", True), ("==", False), ("=", False)):
        if operator in clause:
            path, _, value = clause.partition(operator)
            return path.strip(), negated, value
    return None


FieldMatcher = Callable[[Mapping[str, Any]], bool]


def parse_field_selector(text: str | None, key: str) -> FieldMatcher | None:
    """Parse a field selector for resource ``key``; unknown fields are a 400 as upstream."""
    if text is None or not text.strip():
        return None
    allowed = _COMMON_FIELDS | _EXTRA_FIELDS.get(key, frozenset())
    clauses: list[tuple[str, bool, str]] = []
    for clause in text.split(","):
        parsed = _split_field_clause(clause)
        if parsed is None:
            raise bad_request(f"invalid selector: {text!r}; can't understand {clause!r}")
        path, negate, value = parsed
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}"')
        clauses.append((path, negate, value.strip()))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) != negate for path, negate, value in clauses)

    return matches


def exact_field(text: str | None, path: str) -> str | None:
    """The value a selector pins ``path`` to with ``=``, for index lookups (else None)."""
    if not text:
        return None
    for clause in text.split(","):
        if "!=" in clause:
            continue
        name, sep, value = clause.replace("==", "=").partition("=")
        if sep and name.strip() == path:
            return value.strip()
    return None


def label_selector_string(selector: Any) -> str:
    """A LabelSelector object as the string form Scale.status.selector carries."""
    if not isinstance(selector, dict):
        return ""
    clauses = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        operator = expression.get("operator")
        values = ",".join(sorted(expression.get("values") or []))
        key = expression.get("key")
        clauses.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }.get(operator, "")
        )
    return ",".join(clause for clause in clauses if clause)
