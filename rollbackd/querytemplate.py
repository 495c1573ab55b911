"""rollbackd's placeholders in PromQL: ``{namespace}``, ``{deployment}``, ``{window}``.

str.format would trip over PromQL's own braces (``{code=~"5.."}``), so only a
brace around a bare identifier is a placeholder, and only a known one is
filled in: anything else stays as written for Prometheus to judge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PLACEHOLDER", "fill"]

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` found in ``values`` replaced by its value."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
