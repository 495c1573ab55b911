"""When the poller asks Prometheus: just after scrapes land, one interval apart."""

from __future__ import annotations

import pytest

from rollbackd.sources.pollgrid import PollGrid, best_phase, landing_margin


class TestBestPhase:
    def test_one_target_is_read_right_after_it_lands(self) -> None:
        assert best_phase([1_700_000_003.25], 1.0) == pytest.approx(0.25)
        assert best_phase([1_700_000_007.5], 15.0) == pytest.approx(1_700_000_007.5 % 15.0)

    def test_targets_in_step_share_a_phase(self) -> None:
        landings = [100.40, 101.41, 102.42]  # the same target over three scrapes, or three in step
        assert best_phase(landings, 1.0) == pytest.approx(0.42)

    def test_the_phase_after_a_cluster_beats_one_before_it(self) -> None:
        # Nine targets land at 0.2 s, one at 0.9 s: polling at 0.2 s reads nine
        # fresh and one 0.3 s old; polling at 0.9 s would read nine 0.7 s old.
        landings = [0.2] * 9 + [0.9]
        assert best_phase(landings, 1.0) == pytest.approx(0.2)

    def test_wrap_around_is_handled(self) -> None:
        # 0.95 and 0.05 are 0.1 s apart across the interval boundary: 0.05 is best.
        assert best_phase([0.95, 0.05], 1.0) == pytest.approx(0.05)

    def test_nothing_scraped_means_no_phase(self) -> None:
        assert best_phase([], 1.0) is None
        assert best_phase([float("nan")], 1.0) is None

    def test_invalid_interval_is_refused(self) -> None:
        with pytest.raises(ValueError, match="interval"):
            best_phase([1.0], 0)


class TestPollGrid:
    def test_without_a_phase_ticks_follow_the_first_start(self) -> None:
        grid = PollGrid(1.0)
        assert grid.next_tick(now=10.3, last_start=10.2) == pytest.approx(11.2)
        assert grid.next_tick(now=11.25, last_start=11.2) == pytest.approx(12.2)

    def test_aligned_ticks_land_just_after_the_scrapes(self) -> None:
        grid = PollGrid(1.0)
        grid.align(0.40)
        margin = landing_margin(1.0)
        tick = grid.next_tick(now=20.0, last_start=19.9)
        assert tick == pytest.approx(20.40 + margin)
        assert grid.next_tick(now=tick + 0.1, last_start=tick) == pytest.approx(tick + 1.0)

    def test_a_slow_cycle_skips_the_ticks_it_overran(self) -> None:
        grid = PollGrid(1.0, phase=0.5)
        # Started at 10.5, finished at 13.2: 11.5, 12.5 are gone; the next is 13.5.
        assert grid.next_tick(now=13.2, last_start=10.5) == pytest.approx(13.5)

    def test_a_moved_phase_never_puts_two_polls_within_half_an_interval(self) -> None:
        grid = PollGrid(1.0, phase=0.9)
        grid.align(0.0)  # the scrapes now land just after each whole second
        tick = grid.next_tick(now=10.92, last_start=10.9)
        assert tick - 10.9 >= 0.5
        assert tick == pytest.approx(12.0 + landing_margin(1.0))

    def test_margin_grows_with_the_interval_within_bounds(self) -> None:
        assert landing_margin(0.1) == pytest.approx(0.05)
        assert landing_margin(1.0) == pytest.approx(0.1)
        assert landing_margin(15.0) == pytest.approx(0.5)
        assert landing_margin(120.0) == pytest.approx(0.5)
