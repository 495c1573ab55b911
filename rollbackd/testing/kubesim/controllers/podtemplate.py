"""Pod templates as the deployment controller compares and names them.

A ReplicaSet carries its Deployment's template plus a ``pod-template-hash``
label; "the same template" means semantically equal apart from that label,
and the hash (FNV-1a, rendered in upstream's vowel-free alphabet) names the
ReplicaSet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

HASH_LABEL = "pod-template-hash"

# The alphabet of k8s.io/apimachinery/pkg/util/rand.SafeEncodeString: no vowels, no 0/1/3.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text: str) -> str:
    """Map each byte onto the vowel-free alphabet the real controller uses for hashes."""
    return "".join(_SAFE_ALPHABET[byte % len(_SAFE_ALPHABET)] for byte in text.encode())


def template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """A stable pod-template-hash: FNV-1a over canonical JSON, rendered like upstream."""
    data = json.dumps(without_hash_label(template), sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += f"#{collision_count}"
    value = 0x811C9DC5
    for byte in data.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(value))


def _semantic(value: Any) -> Any:
    """Drop null, empty-object and empty-list fields: Go decodes all of them as "unset".

    kubectl's rollback patch, for example, carries ``creationTimestamp: null``
    in the template; the real controller's semantic DeepEqual ignores it.
    """
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            item = _semantic(item)
            if item is None or item == {} or item == []:
                continue
            result[key] = item
        return result
    if isinstance(value, list):
        return [_semantic(item) for item in value]
    return value


def without_hash_label(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template in its semantic form, without the pod-template-hash label."""
    copy: dict[str, Any] = _semantic(dict(template))
    meta = copy.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    labels.pop(HASH_LABEL, None)
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    if meta:
        copy["metadata"] = meta
    else:
        copy.pop("metadata", None)
    return copy


def equal_ignore_hash(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Templates equal apart from the pod-template-hash label (EqualIgnoreHash)."""
    return without_hash_label(a or {}) == without_hash_label(b or {})
