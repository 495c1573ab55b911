"""``bench/mttr.py --quick`` runs the whole loop and times every step of each bad rollout.

Nothing is judged against a clock here; the test checks that each run rolled
its bad rollout back to completion, that every step was observed in order,
and that the Prometheus+Alertmanager floor was measured in every run.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench._quick import run_quick

# A benchmark: scripts/test.sh runs it beside the other tests, one file per worker.
pytestmark = pytest.mark.bench

ORDER = ("bad_ready", "first_bad_sample", "patch", "rollback_ready", "completed")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_quick("mttr", tmp_path_factory)[1]


def test_every_run_rolls_back_every_bad_rollout(quick_run: dict[str, Any]) -> None:
    runs = quick_run["runs"]
    assert set(runs) == {"loop", "poller", "slow"}
    assert runs["loop"]["scrape_interval_s"] == runs["poller"]["scrape_interval_s"] == 1
    assert runs["slow"]["scrape_interval_s"] > 1
    assert runs["poller"]["alert_rules"] is False and runs["loop"]["alert_rules"] is True
    for run in runs.values():
        assert run["rollouts"], run
        assert run["completed"] == len(run["rollouts"])
        for rollout in run["rollouts"]:
            assert rollout["phase"] == "ROLLBACK_COMPLETED"
            assert rollout["trigger"] in ("poller", "alertmanager")


def test_every_step_is_observed_in_order(quick_run: dict[str, Any]) -> None:
    for run in quick_run["runs"].values():
        for rollout in run["rollouts"]:
            times = rollout["times"]
            stamps = [times[step] for step in ORDER]
            assert all(isinstance(t, float) for t in stamps), times
            # The first bad sample may be scraped before the last bad pod is Ready.
            assert times["first_bad_pod_ready"] <= times["bad_ready"] < times["patch"]
            assert times["first_bad_sample"] < times["patch"] < times["rollback_ready"]
            assert times["rollback_ready"] < times["completed"]
            assert times["poller_firing"] is not None


def test_the_alert_floor_is_measured_in_every_run(quick_run: dict[str, Any]) -> None:
    runs = quick_run["runs"]
    for run in runs.values():
        floor = run["summary"]["first_bad_sample_to_floor_alert"]
        assert floor["n"] == len(run["rollouts"]) and floor["median_s"] > 0
    for rollout in runs["poller"]["rollouts"]:
        assert rollout["times"]["webhook"] is None  # no alert rules for rollbackd, no webhook


def test_summaries_and_verdicts_are_written(quick_run: dict[str, Any]) -> None:
    assert quick_run["targets"] == {"ready_to_patch_median_s": 2.5, "ready_to_completed_s": 8.0}
    for run in quick_run["runs"].values():
        summary = run["summary"]["ready_to_patch"]
        assert summary["n"] == len(run["rollouts"])
        assert 0 < summary["min_s"] <= summary["median_s"] <= summary["max_s"]
    assert len(quick_run["verdicts"]) == 5  # two targets, and the floor of each run
    assert quick_run["environment"]["quick"] is True
