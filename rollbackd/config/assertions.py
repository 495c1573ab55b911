"""Data assertions: named PromQL values that verification compares with an expected number.

An assertion is a query (``expr``) whose value rollbackd compares itself
(``op`` and ``value``), e.g. ``sum(rate(orders_failed_total[{window}]))``,
``==``, ``0``. The comparison is kept out of the PromQL on purpose: a PromQL
comparison *filters* (``x == 0`` answers nothing when x is 3), so a failed
assertion would look exactly like missing data, and the page could not say
which value was seen. A trailing comparison in ``expr`` is therefore refused
at load with the rewrite spelled out.

``expr`` is a template of ``{namespace}``, ``{deployment}``, ``{window}``
(the verification window since the restored version became ready) and
``{deployment_label}`` (the metric label naming the workload,
``prometheus.deployment_label``). What can
be checked without a Prometheus is checked here: placeholders, balanced
brackets and quotes, a top-level comparison, and range selectors with a fixed
duration (``[5m]`` would reach back into the bad period: ``[{window}]``).
Everything else (a misspelt function, say) is Prometheus's 400 at run time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator

from rollbackd.config.types import NonEmptyStr, _Section, unique_named
from rollbackd.metriclabel import DEFAULT_DEPLOYMENT_LABEL, LABEL_PLACEHOLDER
from rollbackd.model import ANNOTATION_PREFIX
from rollbackd.querytemplate import PLACEHOLDER, fill

ANNOTATION_ASSERTIONS = ANNOTATION_PREFIX + "assertions"
PLACEHOLDERS = ("namespace", "deployment", "window", LABEL_PLACEHOLDER)
Op = Literal["==", "!=", "<", "<=", ">", ">="]
AppliesTo = Literal["annotated", "all"]

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {close: open_ for open_, close in _OPEN.items()}
_COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Assertion(_Section):
    """One named assertion: every series of ``expr`` must satisfy ``op value``."""

    name: NonEmptyStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    expr: NonEmptyStr
    op: Op
    value: float = Field(allow_inf_nan=False)
    description: str = ""
    # "all": checked for every rolled-back Deployment, annotated or not.
    applies_to: AppliesTo = "annotated"

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        problems = expr_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def render(
        self,
        *,
        namespace: str,
        deployment: str,
        window: str,
        deployment_label: str = DEFAULT_DEPLOYMENT_LABEL,
    ) -> str:
        """The query as sent: placeholders filled in (PromQL's own braces left alone)."""
        values = {"namespace": namespace, "deployment": deployment, "window": window}
        return fill(self.expr, {**values, LABEL_PLACEHOLDER: deployment_label})

    def holds(self, seen: float) -> bool:
        """Whether a value satisfies the comparison (NaN never does: callers treat it as no data)."""
        return not math.isnan(seen) and _OPERATORS[self.op](seen, self.value)

    @property
    def expectation(self) -> str:
        return f"{self.op} {self.value:g}"


def expr_problems(expr: str) -> list[str]:
    """What is wrong with an assertion's PromQL that can be seen without a server."""
    problems: list[str] = []
    depth: list[tuple[str, int]] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        placeholder = PLACEHOLDER.match(expr, i)
        if placeholder:
            problems += _placeholder_problem(placeholder.group(1))
            i = placeholder.end()
            continue
        if char == "#":  # a comment runs to the end of the line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
            continue
        if char in "\"'`":
            i = _string_end(expr, i, problems)
            continue
        problems += _bracket_problem(expr, i, depth)
        if not depth and expr.startswith(_COMPARISONS, i):
            problems.append(_comparison_problem(expr, i))
            break
        i += 1
    problems += [f"{open_!r} at position {at} is never closed" for open_, at in depth]
    return list(dict.fromkeys(problems))


def _placeholder_problem(name: str) -> list[str]:
    if name in PLACEHOLDERS:
        return []
    known = ", ".join(f"{{{known}}}" for known in PLACEHOLDERS)
    return [f"unknown placeholder {{{name}}}: use one of {known}"]


def _string_end(expr: str, start: int, problems: list[str]) -> int:
    """The index after the string starting at ``start``; its placeholders are checked too."""
    quote = expr[start]
    i = start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            for name in PLACEHOLDER.findall(expr, start, i):
                problems += _placeholder_problem(name)
            return i + 1
        i += 1
    problems.append(f"the string opened with {quote} at position {start} is never closed")
    return len(expr)


def _bracket_problem(expr: str, i: int, depth: list[tuple[str, int]]) -> list[str]:
    char = expr[i]
    if char in _OPEN:
        depth.append((char, i))
        if char == "[" and not expr[i + 1 :].lstrip().startswith("{window}"):
            # A fixed range reaches back before the rollback was ready.
            return [
                f"the range at position {i} must start with {{window}} (e.g. [{{window}}]), "
                "so only data after the restored version became ready counts"
            ]
        return []
    if char in _CLOSE:
        if not depth or depth[-1][0] != _CLOSE[char]:
            return [f"{char!r} at position {i} closes nothing"]
        depth.pop()
    return []


def _comparison_problem(expr: str, i: int) -> str:
    op = next(op for op in _COMPARISONS if expr.startswith(op, i))
    left, right = expr[:i].strip(), expr[i + len(op) :].strip().removeprefix("bool").strip()
    return (
        f"a comparison ({op}) in expr filters series out, so a failed assertion would read as "
        f'no data: write expr: {left!r}, op: "{op}", value: {right!r}'
    )


def unique_assertions(assertions: tuple[Assertion, ...]) -> tuple[Assertion, ...]:
    """The assertions, refused when two share a name (the annotation picks by name)."""
    return unique_named(assertions, "assertions")
