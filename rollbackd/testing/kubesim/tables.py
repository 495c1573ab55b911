"""Server-side Tables (``meta.k8s.io/v1``), which ``kubectl get`` asks for.

The columns follow the real server's printers for the kinds people look at
(Deployments, ReplicaSets, Pods, Namespaces); other kinds get Name and Age.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType
from .selectors import label_selector_string
from .store import Obj
from .watches import event_line

_TABLE_ACCEPT = re.compile(r"as=Table")


def wants_table(accept: str) -> bool:
    return bool(_TABLE_ACCEPT.search(accept)) and "g=meta.k8s.io" in accept


def human_age(created: str | None, now: datetime) -> str:
    """``5s``, ``3m20s``, ``2d`` as kubectl shows ages."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _column(name: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": kind,
        "format": "",
        "description": "",
        "priority": priority,
    }
    if name == "Name":
        column["format"] = "name"
    return column


def _containers(obj: Obj) -> list[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("containers") or [])


def _pod_status(obj: Obj) -> str:
    """STATUS as the server's pod printer says it: the last container's waiting or exit reason."""
    status = obj.get("status") or {}
    reason = str(status.get("reason") or status.get("phase") or "Unknown")
    for container in reversed(status.get("containerStatuses") or []):
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated is not None and terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated is not None:
            signal = terminated.get("signal") or 0
            code = terminated.get("exitCode") or 0
            reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return reason


def _pod_restarts(statuses: list[dict[str, Any]], now: datetime) -> str:
    """RESTARTS: the count, and since when the last container was restarted (``3 (5s ago)``)."""
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    finished = [
        str(ended["finishedAt"])
        for c in statuses
        if (ended := (c.get("lastState") or {}).get("terminated")) and ended.get("finishedAt")
    ]
    if restarts and finished:
        return f"{restarts} ({human_age(max(finished), now)} ago)"
    return str(restarts)


def _table_row(rtype: ResourceType, obj: Obj, now: datetime) -> list[Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    age = human_age(meta.get("creationTimestamp"), now)
    if rtype.key == "apps/v1/deployments":
        containers = _containers(obj)
        return [
            meta["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            age,
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            label_selector_string(spec.get("selector")),
        ]
    if rtype.key == "apps/v1/replicasets":
        containers = _containers(obj)
        return [
            meta["name"],
            spec.get("replicas", 0),
            status.get("replicas", 0),
            status.get("readyReplicas", 0),
            age,
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            label_selector_string(spec.get("selector")),
        ]
    if rtype.key == "v1/pods":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = _pod_restarts(statuses, now)
        total = len(spec.get("containers") or [])
        return [
            meta["name"],
            f"{ready}/{total}",
            _pod_status(obj),
            restarts,
            age,
            status.get("podIP", "<none>"),
            spec.get("nodeName", "<none>"),
        ]
    if rtype.key == "v1/namespaces":
        return [meta["name"], status.get("phase", "Active"), age]
    if rtype.columns:  # a CRD's additionalPrinterColumns, then Age
        return [meta["name"], *(_at_path(obj, path) for _, _, path in rtype.columns), age]
    return [meta["name"], age]


def _at_path(obj: Obj, path: str) -> Any:
    """A printer column's cell by dotted path: a list or map as compact JSON (as the
    server's JSONPath printer writes it), an absent field as None (``<none>``)."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _table_columns(rtype: ResourceType) -> list[dict[str, Any]]:
    if rtype.key == "apps/v1/deployments":
        return [
            _column("Name"),
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            _column("Age"),
            _column("Containers", priority=1),
            _column("Images", priority=1),
            _column("Selector", priority=1),
        ]
    if rtype.key == "apps/v1/replicasets":
        return [
            _column("Name"),
            _column("Desired", "integer"),
            _column("Current", "integer"),
            _column("Ready", "integer"),
            _column("Age"),
            _column("Containers", priority=1),
            _column("Images", priority=1),
            _column("Selector", priority=1),
        ]
    if rtype.key == "v1/pods":
        return [
            _column("Name"),
            _column("Ready"),
            _column("Status"),
            _column("Restarts"),
            _column("Age"),
            _column("IP", priority=1),
            _column("Node", priority=1),
        ]
    if rtype.key == "v1/namespaces":
        return [_column("Name"), _column("Status"), _column("Age")]
    if rtype.columns:
        return [
            _column("Name"),
            *(_column(name, kind) for name, kind, _ in rtype.columns),
            _column("Age"),
        ]
    return [_column("Name"), _column("Age")]


def as_table(
    rtype: ResourceType, items: list[Obj], metadata: dict[str, Any], include: str, now: datetime
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1 Table`` of ``items``; ``include`` is the includeObject policy."""
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": _table_row(rtype, obj, now)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": _table_columns(rtype),
        "rows": rows,
    }


class TableEventEncoder:
    """Watch events whose objects are one-row Tables, for ``kubectl get --watch``.

    Column definitions go with the first event only; kubectl prints the
    header once and the rows after it.
    """

    def __init__(self, rtype: ResourceType, include: str, clock: Callable[[], datetime]) -> None:
        self.rtype = rtype
        self.include = include
        self.clock = clock
        self.sent_columns = False

    def encode(self, event_type: str, obj: Obj) -> bytes:
        metadata = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
        table = as_table(self.rtype, [obj], metadata, self.include, self.clock())
        if self.sent_columns:
            table["columnDefinitions"] = []
        self.sent_columns = True
        return event_line(event_type, table)
