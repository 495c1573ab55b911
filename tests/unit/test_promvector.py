"""Vector answers fold per target: the same values whether decoded whole or item by item."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from rollbackd import promvector
from rollbackd.promvector import (
    VECTOR_PREFIX,
    AnswerText,
    Combine,
    NotAVectorError,
    fold_answer,
    reduce_vector,
)


def item(namespace: str, name: str, value: str, **extra: str) -> dict[str, Any]:
    return {"metric": {"namespace": namespace, "deployment": name, **extra}, "value": [1.5, value]}


def answer(items: list[dict[str, Any]], **spacing: Any) -> AnswerText:
    """A success answer as Prometheus writes it (compact, same key order)."""
    body = {"status": "success", "data": {"resultType": "vector", "result": items}}
    return AnswerText(json.dumps(body, separators=(",", ":"), **spacing))


class TestReduceVector:
    def test_one_value_per_target(self) -> None:
        folded = reduce_vector([item("shop", "cart", "0.2"), item("shop", "web", "0.01")])
        assert folded == {("shop", "cart"): 0.2, ("shop", "web"): 0.01}

    @pytest.mark.parametrize(("combine", "expected"), [("max", 3.0), ("min", 0.5), ("sum", 3.5)])
    def test_several_series_of_a_target_fold_by_the_combiner(
        self, combine: Combine, expected: float
    ) -> None:
        series = [item("shop", "cart", "0.5", pod="a"), item("shop", "cart", "3", pod="b")]
        assert reduce_vector(series, combine=combine) == {("shop", "cart"): expected}

    def test_nan_is_kept_only_when_every_series_is_nan(self) -> None:
        mixed = [item("shop", "cart", "NaN", pod="a"), item("shop", "cart", "0.7", pod="b")]
        assert reduce_vector(mixed, combine="max") == {("shop", "cart"): 0.7}
        only_nan = reduce_vector([item("shop", "cart", "NaN")], combine="min")
        assert math.isnan(only_nan[("shop", "cart")])
        # Traffic: a NaN rate is no traffic.
        assert reduce_vector(mixed, combine="sum") == {("shop", "cart"): 0.7}
        assert reduce_vector([item("shop", "cart", "NaN")], combine="sum") == {
            ("shop", "cart"): 0.0
        }

    def test_series_without_both_labels_and_scalars_fold_to_nothing(self) -> None:
        stray = [{"metric": {"namespace": "shop"}, "value": [0, "1"]}]
        assert reduce_vector(stray) == {}
        assert reduce_vector([1_700_000_000.0, "1"]) == {}

    def test_custom_label_names(self) -> None:
        found = [{"metric": {"ns": "shop", "app": "cart"}, "value": [0, "+Inf"]}]
        folded = reduce_vector(found, namespace_label="ns", deployment_label="app")
        assert folded == {("shop", "cart"): math.inf}

    @pytest.mark.parametrize(
        "result",
        [
            [{"metric": {"namespace": "a", "deployment": "b"}, "values": [[0, "1"]]}],  # matrix
            "a string",
            [["not", "a", "sample"]],
        ],
    )
    def test_anything_but_an_instant_vector_is_refused(self, result: Any) -> None:
        with pytest.raises(NotAVectorError):
            reduce_vector(result)


class TestFoldAnswer:
    async def test_item_by_item_folding_matches_decoding_whole(self) -> None:
        tricky = [
            item("shop", "cart", "0.25"),
            item("shop", "cart", "0.75", pod="b"),
            # Label values holding JSON punctuation and escapes.
            item("ns", 'we"ird},{"metric":]', "1e-3"),
            item("ns", "ünï\\code\n", "NaN"),
            item("ns", "inf", "+Inf"),
        ]
        text = answer(tricky)
        assert text.text.startswith(VECTOR_PREFIX)
        for combine in ("max", "min", "sum"):
            stepped = await fold_answer(text, combine=combine)
            whole = reduce_vector(tricky, combine=combine)
            assert stepped.keys() == whole.keys()
            for key, value in whole.items():
                assert stepped[key] == value or (math.isnan(value) and math.isnan(stepped[key]))

    async def test_other_shapes_are_decoded_whole(self) -> None:
        assert await fold_answer(answer([])) == {}
        scalar = AnswerText('{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}')
        assert await fold_answer(scalar) == {}
        spaced = answer([item("shop", "cart", "2")], indent=1)  # not compact: no fast path
        assert not spaced.text.startswith(VECTOR_PREFIX)
        assert await fold_answer(spaced) == {("shop", "cart"): 2.0}
        matrix = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {"namespace": "a", "deployment": "b"}, "values": [[0, "1"]]}],
            },
        }
        with pytest.raises(NotAVectorError):
            await fold_answer(AnswerText(json.dumps(matrix)))

    @pytest.mark.parametrize(
        "tail",
        ['{"metric":{}', '{"metric":{},"value":[1,"2"]}x', '{"metric":{},"value":[1,"2"]},'],
    )
    async def test_malformed_answers_are_refused(self, tail: str) -> None:
        with pytest.raises(NotAVectorError):
            await fold_answer(AnswerText(VECTOR_PREFIX + tail))

    async def test_a_long_answer_lets_other_tasks_run_while_it_is_folded(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(promvector, "SLICE_SECONDS", 0.0)  # yield at every check
        fleet = answer([item("fleet", f"svc{i}", "1") for i in range(5_000)])
        ran_during_fold = 0
        folding = True

        async def other() -> None:
            nonlocal ran_during_fold
            while folding:
                ran_during_fold += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        before = ran_during_fold
        folded = await fold_answer(fleet)
        folding = False
        await task
        assert len(folded) == 5_000
        assert ran_during_fold - before >= 5_000 // 256 - 1
