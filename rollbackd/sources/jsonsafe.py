"""Helpers for untrusted JSON: name a place in it, show a value from it safely.

Python's ``json`` decodes a lone surrogate escape ("\\udfff") into a ``str``
that cannot be encoded as UTF-8, so such text would fail later when it is
logged, journaled or sent on. Everything taken from a webhook body for
display or storage goes through ``safe_text`` first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "has_surrogate",
    "json_path",
    "json_type",
    "nesting_exceeds",
    "safe_text",
]

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PATH_KEY_LIMIT = 64


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, i.e. cannot be encoded as UTF-8."""
    return _SURROGATE.search(text) is not None


def safe_text(text: str, limit: int) -> str:
    """``text`` with surrogates replaced by U+FFFD and cut to ``limit`` characters."""
    cleaned = _SURROGATE.sub("\ufffd", text)
    if len(cleaned) <= limit:
        return cleaned
    return cleaned[: max(limit - 1, 0)] + "\u2026"


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type ("object", "array", "string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def json_path(base: str, parts: Iterable[str | int]) -> str:
    """``base`` extended by object keys and array indexes: ``$.alerts[3].labels.ns``.

    Keys that are not identifiers are quoted (``["app.kubernetes.io/name"]``);
    every key is made safe text, so the path itself can be logged and stored.
    """
    out = [base]
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
            continue
        key = str(part)
        if key == "[key]":  # pydantic's marker for "the key itself"; the entry is named already
            continue
        if _IDENTIFIER.match(key) and len(key) <= _PATH_KEY_LIMIT:
            out.append(f".{key}")
        else:
            out.append(f"[{json.dumps(safe_text(key, _PATH_KEY_LIMIT), ensure_ascii=False)}]")
    return "".join(out)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether objects/arrays in ``value`` nest deeper than ``limit``.

    Level by level, without recursion; only containers are kept between
    levels, so the cost stays below what ``json.loads`` paid to build them.
    """
    level: list[Any] = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below.extend([c for c in children if type(c) is dict or type(c) is list])
        level = below
    return False
