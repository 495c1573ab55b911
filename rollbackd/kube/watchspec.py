"""What the watch cache runs and how it keys what it stores: one loop per kind and namespace."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollbackd.kube.client import namespace_prefix
from rollbackd.kube.transforms import DEPLOYMENTS, PODS, REPLICASETS, ROLLOUTS, SERVICES

__all__ = ["Key", "WatchSpec", "object_key", "watch_specs"]

Key = tuple[str, str]


def object_key(obj: Mapping[str, Any], *, shared_name: bool = True) -> Key:
    """(namespace, name), interned: the slim object holds the same strings.

    A pod's name is in the key only (its record is its ReplicaSet's name
    or its trouble), so interning it would only grow the interpreter's table.
    """
    meta = obj.get("metadata", {})
    name = meta.get("name", "")
    return sys.intern(meta.get("namespace", "")), sys.intern(name) if shared_name else name


@dataclass(frozen=True)
class WatchSpec:
    """One list+watch loop: a kind in one namespace (None: all)."""

    kind: str
    path: str
    namespace: str | None


def watch_specs(namespaces: Sequence[str] | None, *, rollouts: bool = False) -> list[WatchSpec]:
    """The four loops per namespace (or one set for all); a fifth for served Rollouts."""
    scopes: list[str | None] = list(namespaces) if namespaces else [None]
    specs: list[WatchSpec] = []
    for ns in scopes:
        prefix = namespace_prefix(ns)
        specs += [
            WatchSpec(DEPLOYMENTS, f"/apis/apps/v1{prefix}/deployments", ns),
            WatchSpec(REPLICASETS, f"/apis/apps/v1{prefix}/replicasets", ns),
            WatchSpec(PODS, f"/api/v1{prefix}/pods", ns),
            WatchSpec(SERVICES, f"/api/v1{prefix}/services", ns),
        ]
        if rollouts:
            specs.append(WatchSpec(ROLLOUTS, f"/apis/argoproj.io/v1alpha1{prefix}/rollouts", ns))
    return specs
