"""Instant-vector answers folded into ``{(namespace, deployment): value}`` without stalling the loop.

A poll of 10 000 Deployments gets about 1 MB of JSON per query. Decoding it
with one ``json.loads`` holds the GIL for 10 to 80 ms on a busy machine, in
whichever thread runs it, so a worker thread does not help the event loop:
every other thread waits for the same lock. The answer is therefore handed
over undecoded (``AnswerText``) and folded on the event loop item by item
(``fold_answer``), yielding every couple of milliseconds; no object is kept
per sample, only one float per target.

Prometheus writes success answers compactly and always in the same order,
so the result array starts right after ``VECTOR_PREFIX``; any other answer
(a scalar, an error, a future format) is decoded whole, as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rollbackd import loopslice
from rollbackd.loopslice import LoopSlices

__all__ = [
    "VECTOR_PREFIX",
    "AnswerText",
    "Combine",
    "Folder",
    "NotAVectorError",
    "Sample",
    "TargetKey",
    "decoded_result",
    "each_item",
    "fold_answer",
    "is_scalar",
    "reduce_vector",
]

TargetKey = tuple[str, str]
"""(namespace, deployment): the key every grouped signal query is folded into."""

Combine = Literal["max", "min", "sum"]
"""How several series of one target fold into one value (worst, or total traffic)."""

VECTOR_PREFIX = '{"status":"success","data":{"resultType":"vector","result":['
# How long the loop is held at most between yields while folding.
SLICE_SECONDS = loopslice.SLICE_SECONDS
_CHECK_EVERY = 64  # items between clock reads (a few microseconds each)
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or a scalar, with empty labels)."""

    labels: Mapping[str, str]
    value: float  # NaN stays NaN: callers treat it as no data
    timestamp: float


class NotAVectorError(ValueError):
    """The answer is not an instant vector (a range vector, a string, malformed JSON)."""


@dataclass(frozen=True)
class AnswerText:
    """The undecoded body of a successful ``/api/v1/query`` answer."""

    text: str


def is_scalar(result: Any) -> bool:
    # ``custom_query`` drops ``resultType``, so the shape tells: a scalar is ``[ts, "v"]``.
    return (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and not isinstance(result[0], bool)
    )


def decoded_result(answer: Any) -> Any:
    """``data.result`` decoded whole (small answers, or any shape)."""
    if not isinstance(answer, AnswerText):
        return answer
    try:
        return json.loads(answer.text)["data"]["result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAVectorError(f"unexpected answer: {answer.text[:200]!r}") from exc


class Folder:
    """Folds vector elements into one value per target, one element at a time.

    Series without both labels are ignored. A target with several series
    (a query that is not fully aggregated) gets its worst value
    (``max``/``min``, NaN only when every series is NaN) or their ``sum``
    (traffic; NaN counts as no traffic).
    """

    def __init__(
        self,
        combine: Combine = "max",
        namespace_label: str = "namespace",
        deployment_label: str = "deployment",
    ) -> None:
        self.folded: dict[TargetKey, float] = {}
        self._combine = combine
        self._namespace_label = namespace_label
        self._deployment_label = deployment_label

    def add(self, item: Any) -> None:
        try:
            metric = item["metric"]
            namespace = metric.get(self._namespace_label)
            name = metric.get(self._deployment_label)
            if not namespace or not name:
                return
            raw = item["value"][1]
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise NotAVectorError(
                "expected an instant vector (a range vector or string came back)"
            ) from exc
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        key = (namespace, name)
        current = self.folded.get(key)
        combine = self._combine
        if combine == "sum":
            if value != value:  # NaN
                value = 0.0
            self.folded[key] = value if current is None else current + value
        elif current is None or current != current:
            self.folded[key] = value
        elif (combine == "max" and value > current) or (combine == "min" and value < current):
            self.folded[key] = value


def reduce_vector(
    result: Any,
    *,
    combine: Combine = "max",
    namespace_label: str = "namespace",
    deployment_label: str = "deployment",
) -> dict[TargetKey, float]:
    """Fold a decoded ``data.result`` (a scalar has no labels, so it folds to nothing)."""
    result = decoded_result(result)
    if is_scalar(result):
        return {}
    if not isinstance(result, list):
        raise NotAVectorError(f"unexpected query result: {result!r:.200}")
    folder = Folder(combine, namespace_label, deployment_label)
    for item in result:
        folder.add(item)
    return folder.folded


def _vector_items(text: str) -> Iterator[Any]:
    """Each element of a compact vector answer's result array, decoded one at a time."""
    index = len(VECTOR_PREFIX)
    if text.startswith("]", index):
        return
    decode = _DECODER.raw_decode
    while True:
        try:
            item, index = decode(text, index)
        except ValueError as exc:
            raise NotAVectorError(f"malformed answer near byte {index}") from exc
        yield item
        separator = text[index : index + 1]
        if separator == "]":
            return
        if separator != ",":
            raise NotAVectorError(f"malformed answer near byte {index}")
        index += 1


async def each_item(answer: Any, visit: Callable[[Any], None]) -> None:
    """Call ``visit`` with every vector element, yielding at least every ``SLICE_SECONDS``."""
    if not isinstance(answer, AnswerText) or not answer.text.startswith(VECTOR_PREFIX):
        result = decoded_result(answer)
        if is_scalar(result):
            return
        if not isinstance(result, list):
            raise NotAVectorError(f"unexpected query result: {result!r:.200}")
        items: Iterable[Any] = result
    else:
        items = _vector_items(answer.text)
    slices = LoopSlices(SLICE_SECONDS)
    for count, item in enumerate(items, 1):
        visit(item)
        if count % _CHECK_EVERY == 0:
            await slices.pause_if_due()


async def fold_answer(
    answer: Any,
    *,
    combine: Combine = "max",
    namespace_label: str = "namespace",
    deployment_label: str = "deployment",
) -> dict[TargetKey, float]:
    """Fold an answer per target on the event loop, in slices (see ``each_item``)."""
    folder = Folder(combine, namespace_label, deployment_label)
    await each_item(answer, folder.add)
    return folder.folded
