"""Plain JSON values from what rollbackd keeps in details, events and pages."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rollbackd.model import Target


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from what rollbackd keeps in details (datetimes, enums, targets)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN is "no data" (and not valid JSON)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Target):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return _collection_to_jsonable(value)


def _collection_to_jsonable(value: Any) -> Any:
    """Dataclasses and mappings as objects, sequences and sets as arrays, the rest as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    return str(value)
