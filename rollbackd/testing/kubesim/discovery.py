"""Discovery documents (legacy format) and the OpenAPI answers kubectl needs.

kubectl 1.33 first asks for aggregated discovery; answering the legacy
``APIGroupList``/``APIResourceList`` with ``Content-Type: application/json``
makes it fall back to per-group requests, which is what older servers do.

OpenAPI: kubectl uses ``/openapi/v3`` only to learn whether the server
supports the ``fieldValidation`` parameter (then it validates server-side) and
for apply's patch computation, where it falls back to its compiled-in types
for built-in kinds. kubesim therefore serves a small v3 index whose per-group
documents declare the ``fieldValidation`` parameter on every path, and no
schemas; ``/openapi/v2`` answers 404 as a server without v2 would.
"""

from __future__ import annotations

from typing import Any

from .resources import REGISTRY, ResourceType, group_versions, types_in

KUBE_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-23T00:00:00Z",
    "goVersion": "go1.24.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SUB_VERBS = ["get", "patch", "update"]


def _resource_entries(rtype: ResourceType) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": _VERBS,
        "storageVersionHash": "",
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    entries = [entry]
    for sub in rtype.subresources:
        sub_entry: dict[str, Any] = {
            "name": f"{rtype.plural}/{sub}",
            "singularName": "",
            "namespaced": rtype.namespaced,
            "kind": rtype.kind,
            "verbs": _SUB_VERBS,
        }
        if sub == "scale":
            sub_entry.update(group="autoscaling", version="v1", kind="Scale")
        elif sub == "eviction":
            sub_entry.update(group="policy", version="v1", kind="Eviction", verbs=["create"])
        entries.append(sub_entry)
    return entries


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``APIResourceList`` for one group/version, or None when it is not served."""
    types = types_in(group, version)
    if not types:
        return None
    resources = [entry for rtype in types for entry in _resource_entries(rtype)]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": types[0].api_version,
        "resources": resources,
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    version_entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "name": group,
        "versions": version_entries,
        "preferredVersion": version_entries[0],
    }


def group_list() -> dict[str, Any]:
    groups = [_group_entry(g, vs) for g, vs in group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(name: str) -> dict[str, Any] | None:
    versions = group_versions().get(name)
    if not name or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(name, versions)}


def _gv_path(group_name: str, version: str) -> str:
    return f"api/{version}" if not group_name else f"apis/{group_name}/{version}"


def openapi_v3_index() -> dict[str, Any]:
    """The ``/openapi/v3`` root: one document per served group/version."""
    paths: dict[str, Any] = {}
    for group_name, versions in group_versions().items():
        for version in versions:
            path = _gv_path(group_name, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash=kubesim"}
    return {"paths": paths}


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "Strict, Warn or Ignore: how the server treats unknown or duplicate fields.",
    "schema": {"type": "string", "uniqueItems": True},
}


def openapi_v3_document(path: str) -> dict[str, Any] | None:
    """A schema-less v3 document for ``api/v1`` or ``apis/G/V`` declaring ``fieldValidation``."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group_name, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group_name, version = parts[1], parts[2]
    else:
        return None
    types = types_in(group_name, version)
    if not types:
        return None
    paths: dict[str, Any] = {}
    for rtype in types:
        # kubectl finds the operation for a kind by this extension, then looks
        # for the fieldValidation parameter on it.
        operation = {
            "parameters": [_FIELD_VALIDATION],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-group-version-kind": {
                "group": group_name,
                "version": version,
                "kind": rtype.kind,
            },
        }
        prefix = f"/{_gv_path(group_name, version)}"
        if rtype.namespaced:
            collection = f"{prefix}/namespaces/{{namespace}}/{rtype.plural}"
        else:
            collection = f"{prefix}/{rtype.plural}"
        paths[collection] = {"post": operation}
        item_paths = [f"{collection}/{{name}}"]
        item_paths += [f"{collection}/{{name}}/{sub}" for sub in rtype.subresources]
        for item in item_paths:
            paths[item] = {"put": operation, "patch": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubesim)", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


__all__ = [
    "KUBE_VERSION",
    "REGISTRY",
    "core_versions",
    "group",
    "group_list",
    "openapi_v3_document",
    "openapi_v3_index",
    "resource_list",
]
