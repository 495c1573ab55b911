"""Pre-rollback guard: what restoring an old pod template would change.

A rollback is only safe to do unattended when the old and the current pod
template differ in things a release normally changes (image, env, args, ...).
A diff in resources, volumes or the service account means the old revision
was built for a different pod shape: restoring it could do more harm than the
bad release, so the decision escalates instead (safety rule 6 in docs/architecture.md).
Restoring a mutable image reference would not restore what actually ran
before, so that is refused too (safety rule 7).

Everything here is pure: plain mappings in, plain strings out.

Paths are dotted, with list items that carry a ``name`` (containers, env
vars, volumes, ...) matched by name and written ``[name]``, for example
``spec.containers[app].env[LOG_LEVEL].value``. A list whose items are not
uniquely named, or whose named items were reordered, is reported as a whole
(``spec.containers[app].args``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from rollbackd.model import LABEL_POD_TEMPLATE_HASH

# Pod spec keys that hold containers; the field of a path below them is the
# container's key (image, env, resources, ...).
CONTAINER_LISTS = ("containers", "initContainers")
# Pod template metadata that counts as "annotations" for the allow-list.
ANNOTATION_LIKE_METADATA = ("annotations", "labels")
ANNOTATIONS_FIELD = "annotations"


def template_diff_paths(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """Dotted paths where ``candidate`` differs from ``current``, sorted.

    The ``pod-template-hash`` label is ignored (the controller adds it to the
    ReplicaSet copy only), and absent, null and empty values are equal
    because the Kubernetes API omits empty fields.
    """
    if current == candidate:
        # Identical templates have no diff; the comparison in C spares both walks.
        return []
    paths: list[str] = []
    _diff(_normalized_template(current), _normalized_template(candidate), "", paths)
    return sorted(paths)


class TemplateDiffMemo:
    """``template_diff_paths`` remembered under a key while both templates stay equal.

    A Deployment's decisions diff the same two templates until one of them
    changes, and a real pod template's diff costs far more than comparing
    it with a copy. Copies are kept and compared, so a changed template (in
    place or not, under a reused key or not) is diffed afresh. Bounded: the
    least recently used keys are dropped first.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[Any, Any, tuple[str, ...]]] = OrderedDict()

    def paths(
        self, key: Hashable, current: Mapping[str, Any], candidate: Mapping[str, Any]
    ) -> list[str]:
        """``template_diff_paths(current, candidate)``; ``key`` names the pair (target, revision)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == current and entry[1] == candidate:
            self._entries.move_to_end(key)
            return list(entry[2])
        paths = template_diff_paths(current, candidate)
        try:
            self._entries[key] = (copy.deepcopy(current), copy.deepcopy(candidate), tuple(paths))
        except Exception:  # a template that cannot be copied is not remembered
            self._entries.pop(key, None)
            return paths
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return paths


def templates_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The one template comparison: equal exactly when the guard sees no diff.

    The strategy (which ReplicaSet is current, is the restored template still
    ours) and the guard (what a rollback would change) must never disagree,
    e.g. on ``emptyDir: {}`` against an absent key.
    """
    # Identical templates (the common case: a Deployment's and its current
    # ReplicaSet's) have no diff; the comparison in C spares the two
    # normalizing walks, which every Deployment's facts paid at every look.
    return a == b or not template_diff_paths(a, b)


def field_of(path: str) -> str:
    """The allow-list field a diff path belongs to.

    ``spec.containers[app].image`` -> ``image``; ``spec.volumes[data]`` ->
    ``volumes``; ``metadata.labels.team`` -> ``annotations``; a container
    added, removed or reordered -> ``containers``.
    """
    section, _, rest = path.partition(".")
    if not rest:
        return _head(section)
    key = _head(rest)
    if section == "metadata":
        return ANNOTATIONS_FIELD if key in ANNOTATION_LIKE_METADATA else key
    if section == "spec" and key in CONTAINER_LISTS:
        # "containers[app].image" -> "image"; "containers[app]" -> "containers".
        _, dot, container_rest = rest.partition("].")
        return _head(container_rest) if dot else key
    return key


def disallowed_changes(paths: Iterable[str], allowed_fields: Iterable[str]) -> list[str]:
    """The diff paths whose field is not in ``allowed_fields``, in input order."""
    allowed = frozenset(allowed_fields)
    return [path for path in paths if field_of(path) not in allowed]


def images(template: Mapping[str, Any]) -> tuple[str, ...]:
    """Image references of a pod template: containers first, then init containers."""
    spec = template.get("spec") or {}
    refs: list[str] = []
    for list_name in CONTAINER_LISTS:
        for container in spec.get(list_name) or ():
            if isinstance(container, Mapping) and isinstance(container.get("image"), str):
                refs.append(container["image"])
    return tuple(refs)


def mutable_images(template: Mapping[str, Any]) -> list[str]:
    """Image references in ``template`` that may resolve to different bits later.

    Mutable means no digest and either no tag or the tag ``latest``: pods
    created from it pull whatever the tag points to today, not what ran.
    """
    return [ref for ref in images(template) if is_mutable_image(ref)]


def is_mutable_image(ref: str) -> bool:
    """True for ``app``, ``app:latest``, ``host:5000/app``; False for ``app:1.2`` or ``app@sha256:..``."""
    if "@" in ref:
        return False
    # The tag follows the last ":" of the last path component; a ":" before
    # the last "/" is a registry port.
    _, _, last_component = ref.rpartition("/")
    _, colon, tag = last_component.rpartition(":")
    return not colon or not tag or tag == "latest"


def _head(segment: str) -> str:
    """The key at the start of a path remainder: ``containers[app].image`` -> ``containers``."""
    for stop, char in enumerate(segment):
        if char in ".[":
            return segment[:stop]
    return segment


def _normalized_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """Drop what does not make two templates different: the hash label, empties.

    Empty labels/annotations maps and empty metadata are dropped as the API
    does (``map[string]string`` with omitempty).
    """
    cleaned: dict[str, Any] = _drop_empty(template)
    metadata = dict(cleaned.pop("metadata", None) or {})
    labels = {
        k: v for k, v in (metadata.get("labels") or {}).items() if k != LABEL_POD_TEMPLATE_HASH
    }
    metadata["labels"] = labels
    for key in ANNOTATION_LIKE_METADATA:
        if not metadata.get(key):
            metadata.pop(key, None)
    if metadata:
        cleaned["metadata"] = metadata
    return cleaned


# Types that are neither mappings nor sequences here: checked first, by exact
# type, because a template is mostly such leaves and the ABC checks below cost
# several times more (they made a real template's diff cost a millisecond).
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})


def _is_mapping(value: Any) -> bool:
    kind = type(value)
    return kind is dict or (kind not in _LEAF_TYPES and isinstance(value, Mapping))


def _is_empty(value: Any) -> bool:
    return _is_mapping(value) and not value


def _drop_empty(value: Any) -> Any:
    """Recursively remove null values and empty lists (the API omits both).

    Empty mappings stay: ``emptyDir: {}`` selects a volume type, so it is not
    the same as an absent key.
    """
    if type(value) in _LEAF_TYPES:
        return value
    if _is_mapping(value):
        result = {}
        for key, item in value.items():
            cleaned = _drop_empty(item)
            # Every sequence comes back as a list, so an empty one is ``[]``.
            if cleaned is not None and not (type(cleaned) is list and not cleaned):
                result[key] = cleaned
        return result
    if _is_sequence(value):
        return [_drop_empty(item) for item in value]
    return value


def _is_sequence(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        return True
    if kind in _LEAF_TYPES:
        return False
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if type(old) in _LEAF_TYPES and type(new) in _LEAF_TYPES:
        if old != new:
            out.append(path)
    elif _is_mapping(old) and _is_mapping(new):
        for key in sorted(set(old) | set(new), key=str):
            key_path = _join(path, str(key))
            if key in old and key in new:
                _diff(old[key], new[key], key_path, out)
            elif _is_empty(old.get(key, new.get(key))):
                # `emptyDir: {}` on one side only: the key itself is the change.
                out.append(key_path)
            else:
                # Compared with an empty value of its kind, so the paths name
                # the leaves that appeared or went away.
                _diff(
                    old.get(key, _empty_like(new.get(key))),
                    new.get(key, _empty_like(old.get(key))),
                    key_path,
                    out,
                )
    elif _is_sequence(old) and _is_sequence(new):
        _diff_lists(old, new, path, out)
    elif old != new:
        out.append(path)


def _empty_like(value: Any) -> Any:
    if _is_mapping(value):
        return {}
    if _is_sequence(value):
        return []
    return None


def _item_names(items: Sequence[Any]) -> list[str] | None:
    """Names of the items when every item is a mapping with a unique string ``name``."""
    names: list[str] = []
    for item in items:
        name = item.get("name") if _is_mapping(item) else None
        if not isinstance(name, str):
            return None
        names.append(name)
    return names if len(set(names)) == len(names) else None


def _diff_lists(old: Sequence[Any], new: Sequence[Any], path: str, out: list[str]) -> None:
    old_names, new_names = _item_names(old), _item_names(new)
    if old_names is None or new_names is None:
        if list(old) != list(new):
            out.append(path)
        return
    old_by_name = dict(zip(old_names, old, strict=True))
    new_by_name = dict(zip(new_names, new, strict=True))
    common = [name for name in old_names if name in new_by_name]
    if common != [name for name in new_names if name in old_by_name]:
        # Same items in another order: order can matter (env expansion), so
        # it is a change of the list as a whole.
        out.append(path)
    for name in sorted(set(old_names) ^ set(new_names)):
        out.append(f"{path}[{name}]")
    for name in common:
        _diff(old_by_name[name], new_by_name[name], f"{path}[{name}]", out)
