"""Placeholders are filled into PromQL without touching PromQL's own braces."""

from __future__ import annotations

from rollbackd.querytemplate import fill


def test_known_placeholders_are_filled_and_label_matchers_are_left_alone() -> None:
    template = 'sum(rate(x{namespace="{namespace}",code=~"5.."}[{window}]))'
    assert fill(template, {"namespace": "shop", "window": "30s"}) == (
        'sum(rate(x{namespace="shop",code=~"5.."}[30s]))'
    )


def test_a_placeholder_without_a_value_stays_as_written() -> None:
    assert fill("x[{window}] + y{deployment}", {"window": "1m"}) == "x[1m] + y{deployment}"


def test_a_value_is_inserted_verbatim_not_read_as_another_placeholder() -> None:
    assert fill("{namespace}/{deployment}", {"namespace": "{deployment}", "deployment": "d"}) == (
        "{deployment}/d"
    )
