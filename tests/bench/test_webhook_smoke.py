"""``bench/webhook.py --quick`` runs end to end and reports every figure, with nothing lost.

The benchmark's numbers are not judged here (nothing is a timed test); what
is checked is that it starts kubesim, rollbackd and the baseline, measures
every cell, finds every acknowledged alert in the journal, and writes JSON
a later run can be compared with. The quick run uses its own client, not wrk.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.bench._quick import positive, run_quick

# A benchmark: scripts/test.sh runs it beside the other tests, one file per worker.
pytestmark = pytest.mark.bench

SIZES = ("1", "10", "100")
MODES = ("repeated", "unique")


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return run_quick("webhook", tmp_path_factory)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def test_every_throughput_cell_has_rates_for_both_servers_and_a_ratio(quick_run: Any) -> None:
    _, results = quick_run
    for mode in MODES:
        for size in SIZES:
            cell = results["throughput"][mode][size]
            for server in ("rollbackd", "baseline"):
                figures = cell[server]
                assert positive(figures["req_per_s"]), (mode, size, server, figures)
                assert figures["alerts_per_s"] == pytest.approx(figures["req_per_s"] * int(size))
                assert _count(figures["ok"]) and figures["ok"] > 0
                assert _count(figures["non_2xx"]) and _count(figures["errors"])
                assert positive(figures["seconds"])
                rounds = figures["rounds_req_per_s"]
                assert len(rounds) == results["environment"]["rounds_per_cell"] >= 1
                assert all(positive(rate) for rate in rounds)
            assert cell["ratio"] == pytest.approx(
                cell["rollbackd"]["req_per_s"] / cell["baseline"]["req_per_s"]
            )
            assert cell["target"] == {"repeated": 0.8, "unique": 0.5}[mode]


def test_every_alert_answered_2xx_is_in_the_journal(quick_run: Any) -> None:
    done, results = quick_run
    assert results["lost"] == 0
    assert results["lost_open_loop"] == 0
    for size in SIZES:
        check = results["integrity"][size]
        assert check["acked"] > 0
        assert check["lost"] == 0
        assert check["journaled"] >= check["acked"]
    assert "lost: 0" in done.stdout.splitlines()


def test_open_loop_latency_is_reported_for_both_servers(quick_run: Any) -> None:
    _, results = quick_run
    latency = results["latency"]
    assert latency["alerts_per_s"] == 500
    assert latency["alerts_per_body"] == 10
    assert latency["target_p99_ms"] == 20
    for server in ("rollbackd", "baseline"):
        figures = latency[server]
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], figures
        assert figures["ok"] > 0
        assert figures["ok"] + figures["non_2xx"] + figures["errors"] == figures["scheduled"]
    assert positive(latency["p99_ratio"])
    assert latency["integrity"]["lost"] == 0


def test_json_says_which_closed_loop_client_ran(quick_run: Any) -> None:
    _, results = quick_run
    environment = results["environment"]
    # wrk counts whole seconds: the quick run's 0.4 s cells are our own client's.
    assert environment["closed_loop_client"] == "python"
    assert environment["quick"] is True
    assert isinstance(environment["closed_loop_note"], str) and environment["closed_loop_note"]
    assert results["rollbackd_alive_at_end"] is True
    headline = results["headline"]
    assert headline["repeated_ratio_10"] == results["throughput"]["repeated"]["10"]["ratio"]
    assert headline["unique_ratio_10"] == results["throughput"]["unique"]["10"]["ratio"]
    assert headline["p99_ms"] == results["latency"]["rollbackd"]["p99_ms"]
