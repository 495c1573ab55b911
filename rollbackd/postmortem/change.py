"""The change that caused the incident: what differs between the bad and the restored template.

The plan event journals both pod templates in a compact form
(``compact_template``) so the draft can show the change after the
ReplicaSets are gone. Only what a release changes and a reader needs is
kept: per container the image, env, args, command and resources. Secrets
never reach the journal: an env value whose name looks like a credential is
masked, and every other value goes through ``redact_text`` (a URL with a
password in it) and is cut to a readable length.

Everything here is pure: plain mappings in, plain values out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollbackd.guard import CONTAINER_LISTS
from rollbackd.redact import MASK, looks_secret, redact_text

MAX_VALUE_CHARS = 200
# The container fields the change section compares, in display order.
FIELDS = ("image", "command", "args", "env", "resources")
ABSENT = "(absent)"


def _short(text: str) -> str:
    text = redact_text(text)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _env_value(var: Mapping[str, Any]) -> str:
    """What one env var is set to, as the draft may show it."""
    name = str(var.get("name", ""))
    source = var.get("valueFrom")
    if isinstance(source, Mapping):
        for kind, ref in source.items():
            if isinstance(ref, Mapping):
                # A reference names where the value lives, never the value itself.
                where = "/".join(str(ref[k]) for k in ("name", "key", "fieldPath") if ref.get(k))
                return f"from {kind} {where}".strip()
        return "from a reference"
    value = var.get("value")
    if value is None:
        return ""
    return MASK if looks_secret(name) else _short(str(value))


def _container(container: Mapping[str, Any]) -> dict[str, Any]:
    env = {
        str(var["name"]): _env_value(var)
        for var in container.get("env") or ()
        if isinstance(var, Mapping) and var.get("name")
    }
    return {
        "name": str(container.get("name", "")),
        "image": str(container.get("image", "")),
        "command": [_short(str(a)) for a in container.get("command") or ()],
        "args": [_short(str(a)) for a in container.get("args") or ()],
        "env": env,
        "resources": _resources(container.get("resources")),
    }


def _resources(value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        return {}
    return {
        str(kind): {str(k): str(v) for k, v in amounts.items()}
        for kind, amounts in value.items()
        if isinstance(amounts, Mapping) and amounts
    }


def compact_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod template the change section shows, secrets masked (for the journal)."""
    spec = template.get("spec") or {}
    return {
        list_name: [_container(c) for c in spec.get(list_name) or () if isinstance(c, Mapping)]
        for list_name in CONTAINER_LISTS
    }


@dataclass(frozen=True)
class FieldChange:
    """One line of the change: a container's field, as it was in the bad and the restored revision."""

    container: str
    field: str  # "image", "command", "args", "resources", "env NAME", or "container"
    bad: str
    restored: str


def _text(value: Any) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, list):
        return " ".join(value) if value else "[]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) or "{}"
    return str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    # A journal written by hand or by another version may hold anything here.
    return value if isinstance(value, Mapping) else {}


def _containers(compact: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for list_name in CONTAINER_LISTS:
        prefix = "init:" if list_name != "containers" else ""
        listed = compact.get(list_name)
        for c in listed if isinstance(listed, list) else ():
            if isinstance(c, Mapping):
                found[prefix + str(c.get("name", ""))] = c
    return found


def _field_changes(
    name: str, bad: Mapping[str, Any], good: Mapping[str, Any]
) -> Iterator[FieldChange]:
    for field in FIELDS:
        if field == "env":
            bad_env, good_env = _mapping(bad.get("env")), _mapping(good.get("env"))
            for var in sorted(set(bad_env) | set(good_env)):
                if bad_env.get(var) != good_env.get(var):
                    yield FieldChange(
                        name, f"env {var}", _text(bad_env.get(var)), _text(good_env.get(var))
                    )
        elif bad.get(field) != good.get(field):
            yield FieldChange(name, field, _text(bad.get(field)), _text(good.get(field)))


def template_changes(bad: Mapping[str, Any], restored: Mapping[str, Any]) -> list[FieldChange]:
    """What the bad revision changed, per container: each field that differs from the restored one."""
    bad_containers, good_containers = _containers(bad), _containers(restored)
    changes: list[FieldChange] = []
    for name in [*bad_containers, *(n for n in good_containers if n not in bad_containers)]:
        if name not in good_containers:
            changes.append(FieldChange(name, "container", "added", ABSENT))
        elif name not in bad_containers:
            changes.append(FieldChange(name, "container", ABSENT, "present"))
        else:
            changes.extend(_field_changes(name, bad_containers[name], good_containers[name]))
    return changes


def image_changes(bad: Sequence[str], restored: Sequence[str]) -> list[FieldChange]:
    """The fallback for a plan recorded without templates: the two image lists only."""
    if list(bad) == list(restored):
        return []
    return [FieldChange("*", "image", ", ".join(bad) or ABSENT, ", ".join(restored) or ABSENT)]
