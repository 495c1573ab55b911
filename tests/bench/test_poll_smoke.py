"""``bench/poll.py --quick`` runs end to end and reports every figure beside its baseline.

The numbers are not judged here (nothing is a timed test); what is checked
is that the bench starts kubesim, the real Prometheus, the daemon and the
baselines, sees every Deployment in every query, measures each cell, and
writes JSON a later run can be compared with.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench._quick import positive, run_quick

# A benchmark: scripts/test.sh runs it beside the other tests, one file per worker.
pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    done, results = run_quick("poll", tmp_path_factory)
    assert "targets at" in done.stdout
    return results


def _cells(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    cells = [(int(size), cell) for size, cell in results["sizes"].items()]
    assert cells, "no fleet size was measured"
    return cells


def test_a_healthy_fleets_cycle_is_one_query_per_signal_that_sees_the_whole_fleet(
    quick_run: dict[str, Any],
) -> None:
    for size, cell in _cells(quick_run):
        cpu = cell["cpu"]
        # Nothing breaches or is tracked: no traffic query has a verdict to gate.
        assert cpu["queries_per_cycle"] == 2
        assert cell["deployments"] == size + 5  # the fleet and the five the alerts name
        # The minimal poller runs all four (values and traffic) and sees every Deployment.
        assert cpu["deployments_per_query"] == [cell["deployments"]] * 4
        assert cpu["signals_emitted"] == 0  # a healthy fleet raises nothing


def test_cpu_per_cycle_is_reported_beside_the_minimal_poller(quick_run: dict[str, Any]) -> None:
    for _, cell in _cells(quick_run):
        cpu = cell["cpu"]
        assert positive(cpu["rollbackd_cpu_ms"]) and positive(cpu["minimal_cpu_ms"])
        assert cpu["ratio"] == pytest.approx(cpu["rollbackd_cpu_ms"] / cpu["minimal_cpu_ms"])
        assert len(cpu["rollbackd_cpu_ms_rounds"]) == len(cpu["minimal_cpu_ms_rounds"])
        assert len(cpu["rollbackd_cpu_ms_rounds"]) == cpu["rounds"] >= 1


def test_stall_memory_and_start_up_have_their_baselines(quick_run: dict[str, Any]) -> None:
    for _, cell in _cells(quick_run):
        stall, memory = cell["stall"], cell["memory"]
        assert positive(stall["rollbackd_longest_stall_ms"])
        assert positive(stall["idle_longest_stall_ms"])
        assert stall["cycles"] >= 1
        assert positive(memory["rollbackd_rss_mb"]) and positive(memory["bare_list_rss_mb"])
        assert memory["ratio"] == pytest.approx(
            memory["rollbackd_rss_mb"] / memory["bare_list_rss_mb"]
        )
        # Deployments, their ReplicaSets (v1 and v2 for the five rolled out) and pods.
        assert memory["objects_listed"] >= 3 * cell["deployments"]
        assert positive(memory["rollbackd_startup_s"]) and positive(memory["bare_list_s"])


def test_ack_latency_is_measured_while_the_daemon_polls(quick_run: dict[str, Any]) -> None:
    for _, cell in _cells(quick_run):
        ack = cell["ack"]
        assert ack["alerts_per_s"] == 500 and ack["alerts_per_body"] == 10
        for server in ("rollbackd", "baseline"):
            figures = ack[server]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], figures
            assert figures["ok"] == figures["scheduled"] > 0
        for server in ("rollbackd_not_polling",):
            figures = ack[server]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], figures
        assert ack["rollbackd"]["poll_cycles_during_run"] >= 1
        assert ack["rollbackd_not_polling"]["poll_cycles_during_run"] < 1
        assert ack["rollbackd_not_polling"]["bench_poll_cycles_during_run"] >= 1
        assert ack["p99_ratio"] == pytest.approx(
            ack["rollbackd"]["p99_ms"] / ack["baseline"]["p99_ms"]
        )
        assert cell["rollbackd_alive_at_end"] is True


def test_verdicts_name_every_target(quick_run: dict[str, Any]) -> None:
    verdicts = quick_run["verdicts"]
    assert verdicts["at_deployments"] == max(size for size, _ in _cells(quick_run))
    assert set(verdicts["met"]) == {"cpu_ratio", "rss_ratio", "rss_mb", "stall_ms", "ack_p99_ms"}
    assert all(isinstance(met, bool) for met in verdicts["met"].values())
    assert quick_run["targets"]["stall_ms_max"] == 50
    assert quick_run["environment"]["quick"] is True
