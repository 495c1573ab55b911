"""``verify.assertions``: what check-config accepts, and what it refuses with the key path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rollbackd import cli
from rollbackd.config.assertions import Assertion, expr_problems
from tests.unit.test_smoke_config import errors_with, settings_with

FAILED_ORDERS = 'sum(rate(orders_failed_total{namespace="{namespace}"}[{window}]))'


def test_an_assertion_needs_a_name_an_expr_and_a_comparison(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        "  assertions:\n"
        f"    - {{name: no-failed-orders, expr: '{FAILED_ORDERS}', op: '==', value: 0}}\n",
    )
    (assertion,) = settings.verify.assertions
    assert (assertion.op, assertion.value) == ("==", 0.0)
    # Picked by the annotation unless said otherwise: no surprise queries for every Deployment.
    assert assertion.applies_to == "annotated" and assertion.description == ""
    assert settings_with(tmp_path, "  smoke_checks: []\n").verify.assertions == ()


def test_every_field_is_read_and_placeholders_are_filled_leaving_promql_braces(
    tmp_path: Path,
) -> None:
    settings = settings_with(
        tmp_path,
        "  assertions:\n"
        "    - name: queue\n"
        '      expr: max(max_over_time(queue_depth{deployment="{deployment}"}[{window}:1s]))\n'
        "      op: '<='\n"
        "      value: 100.5\n"
        "      description: the queue drains\n"
        "      applies_to: all\n",
    )
    (assertion,) = settings.verify.assertions
    assert assertion.applies_to == "all" and assertion.description == "the queue drains"
    assert assertion.expectation == "<= 100.5"
    assert (
        assertion.render(namespace="shop", deployment="orders", window="31s")
        == 'max(max_over_time(queue_depth{deployment="orders"}[31s:1s]))'
    )


@pytest.mark.parametrize(
    ("op", "value", "seen", "holds"),
    [
        ("==", 0, 0.0, True),
        ("==", 0, 0.4, False),
        ("!=", 0, 0.0, False),
        ("<", 1, 0.5, True),
        ("<=", 1, 1.0, True),
        (">", 1, 1.0, False),
        (">=", 1, 1.0, True),
        (">=", 1, math.nan, False),  # NaN never satisfies (callers call it no data)
        (">", 1, math.inf, True),
    ],
)
def test_the_comparison_is_rollbackds_own(op: str, value: float, seen: float, holds: bool) -> None:
    assertion = Assertion(name="a", expr="vector(1)", op=op, value=value)  # type: ignore[arg-type]
    assert assertion.holds(seen) is holds


def test_mistakes_are_reported_with_their_key_path(tmp_path: Path) -> None:
    errors = errors_with(
        tmp_path,
        "  assertions:\n"
        "    - {name: empty, expr: '  ', op: '==', value: 0}\n"
        "    - {name: pod, expr: 'up{pod=\"{pod}\"}', op: '==', value: 1}\n"
        "    - {name: paren, expr: 'sum(rate(x[{window}])', op: '==', value: 0}\n"
        "    - {name: quote, expr: 'x{a=\"b}', op: '==', value: 0}\n"
        "    - {name: fixed, expr: 'sum(rate(x[5m]))', op: '==', value: 0}\n"
        "    - {name: cmp, expr: 'sum(rate(x[{window}])) == 0'}\n"
        "    - {name: op, expr: 'vector(1)', op: '=', value: 1}\n"
        "    - {name: nan, expr: 'vector(1)', op: '==', value: .nan}\n"
        "    - {name: extra, expr: 'vector(1)', op: '==', value: 1, expected: 1}\n",
    )
    text = "\n".join(errors)
    assert "verify.assertions[0].expr: must not be empty" in errors
    assert "verify.assertions[1].expr:" in text and "unknown placeholder {pod}" in text
    assert "verify.assertions[2].expr:" in text and "'(' at position 3 is never closed" in text
    assert "verify.assertions[3].expr:" in text and 'string opened with " at position' in text
    assert "verify.assertions[4].expr:" in text and "must start with {window}" in text
    # The rewrite is spelled out; op and value are then missing too.
    assert "verify.assertions[5].expr:" in text
    assert "write expr: 'sum(rate(x[{window}]))', op: \"==\", value: '0'" in text
    assert "verify.assertions[5].op: Field required" in errors
    assert "verify.assertions[6].op:" in text
    assert "verify.assertions[7].value:" in text
    assert "verify.assertions[8].expected: Extra inputs are not permitted" in errors


def test_names_are_unique_because_the_annotation_picks_by_name(tmp_path: Path) -> None:
    errors = errors_with(
        tmp_path,
        "  assertions:\n"
        "    - {name: a, expr: 'vector(0)', op: '==', value: 0}\n"
        "    - {name: a, expr: 'vector(1)', op: '==', value: 1}\n",
    )
    assert any(
        error.startswith("verify.assertions:") and "two assertions are named 'a'" in error
        for error in errors
    ), errors


@pytest.mark.parametrize(
    "expr",
    [
        # Comparisons inside a function or aggregation are PromQL's business.
        'count(rate(http_requests_total{code=~"5..",namespace="{namespace}"}[{window}]) > 0)',
        'sum(rate(x{re=~"[45].."}[{window}])) or vector(0)',  # a bracket inside a string
        "sum(x) # trailing comment with an unbalanced ( and [5m]",
        "vector(1)",  # an instant value needs no window
        'absent(up{job="orders"})',
    ],
)
def test_valid_promql_is_accepted(expr: str) -> None:
    assert expr_problems(expr) == []


def test_check_config_refuses_a_broken_assertion_naming_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "api.token"
    token.write_text("alertmanager-token\n")
    path = tmp_path / "rollbackd.yaml"
    path.write_text(
        f"webhook:\n  bearer_token_file: {token}\nprometheus:\n  url: http://prom:9090\n"
        "verify:\n  assertions:\n"
        "    - {name: a, expr: 'sum(rate(x[{windw}]))', op: '==', value: 0}\n"
    )
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "verify.assertions[0].expr" in err and "unknown placeholder {windw}" in err
