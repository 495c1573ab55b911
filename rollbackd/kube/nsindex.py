"""The watch cache's keys by namespace, and the Services that declare a strategy.

Blue-green and canary facts read one namespace's Services and Deployments
for every target they judge; without an index that is a scan of the cluster
per alert. Most namespaces have no Service declaring ``rollbackd.io/strategy``,
so those are indexed apart: the common target pays one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rollbackd.model import ANNOTATION_STRATEGY

__all__ = ["NamespaceIndex"]

Key = tuple[str, str]


class NamespaceIndex:
    """Keys of the indexed kinds by namespace; Services declaring a strategy apart."""

    def __init__(self, kinds: Iterable[str], *, declaring_kind: str) -> None:
        self._keys: dict[str, dict[str, set[Key]]] = {kind: {} for kind in kinds}
        self._declaring_kind = declaring_kind
        self._declaring: dict[str, set[Key]] = {}

    def update(self, kind: str, key: Key, obj: Mapping[str, Any] | None) -> None:
        """Follow a store (``obj``) or a drop (None) of ``key``."""
        if kind == self._declaring_kind:
            annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
            _toggle(self._declaring, key, ANNOTATION_STRATEGY in annotations)
        keys = self._keys.get(kind)
        if keys is not None:
            _toggle(keys, key, obj is not None)

    def keys(self, kind: str, namespace: str) -> list[Key]:
        """The namespace's keys of ``kind``, sorted."""
        return sorted(self._keys[kind].get(namespace, ()))

    def declaring(self, namespace: str) -> list[Key]:
        """The namespace's Services that declare a strategy, sorted."""
        return sorted(self._declaring.get(namespace, ()))


def _toggle(index: dict[str, set[Key]], key: Key, present: bool) -> None:
    if present:
        index.setdefault(key[0], set()).add(key)
    elif key[0] in index:
        index[key[0]].discard(key)
