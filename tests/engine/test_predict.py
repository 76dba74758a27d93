"""The sweep plan as pure functions: each batch's expected finish and the next sweep's time.

No clock at all: times are plain numbers (the run clock's monotonic seconds).
"""

from __future__ import annotations

import pytest

from batchpump import BatchInfo, PollPolicy
from batchpump._engine import PREDICTION_MARGIN, Progress, RunHistory, plan

POLICY = PollPolicy()  # interval_min 0.5, interval_max 60, latency 1 % with a 1 s floor
WALL = 1_700_000_000.0  # the clock's time() when its monotonic() is 0


def _info(*, state: str = "running", done: int = 0, total: int = 1_000, **kw: float) -> BatchInfo:
    return BatchInfo(
        id="b",
        state=state,  # type: ignore[arg-type]
        raw_status=state,
        created_at=WALL,
        completed=done,
        total=total,
        **kw,  # type: ignore[arg-type]
    )


def _seen(progress: Progress, at: float, **kw: object) -> Progress:
    progress.observe(_info(**kw), now=at, wall=WALL + at)  # type: ignore[arg-type]
    return progress


def test_no_progress_no_history_no_prediction() -> None:
    progress = _seen(Progress(added=0.0), 10.0, state="pending")
    assert progress.run_end() is None
    assert RunHistory().expected(progress) is None


def test_two_samples_give_the_rate() -> None:
    progress = _seen(_seen(Progress(added=0.0), 100.0, done=100), 200.0, done=300)
    # 200 lines per 100 s from 300 of 1,000: 350 s more.
    assert progress.run_end() == pytest.approx(550.0)


def test_one_sample_measures_from_in_progress_at() -> None:
    progress = _seen(Progress(added=0.0), 60.0, done=250, in_progress_at=WALL + 10.0)
    # 250 lines in the 50 s since it started: 150 s more.
    assert progress.started == pytest.approx(10.0)
    assert progress.run_end() == pytest.approx(210.0)


def test_a_start_in_the_future_is_ignored() -> None:
    """A provider clock ahead of ours must not produce a negative run time."""
    progress = _seen(Progress(added=0.0), 60.0, done=250, in_progress_at=WALL + 600.0)
    assert progress.started is None
    assert progress.run_end() is None


def test_finalizing_without_a_rate_is_when_it_was_seen() -> None:
    progress = _seen(_seen(Progress(added=0.0), 10.0, done=10), 20.0, state="finalizing", done=1000)
    assert progress.run_end() == 20.0


def test_history_adds_the_finalizing_tail_and_predicts_idle_batches() -> None:
    history = RunHistory()
    first = _seen(_seen(Progress(added=0.0), 10.0, done=500), 20.0, state="finalizing", done=1000)
    _seen(first, 22.0, state="finalizing", done=1000)
    history.finished(first, now=23.0)  # lines done at 20, finished between 22 and 23
    assert history.duration == pytest.approx(23.0)
    assert history.tail == pytest.approx(2.0)  # the lower bound: an early sweep is cheap
    running = _seen(_seen(Progress(added=5.0), 15.0, done=200), 25.0, done=400)
    assert history.expected(running) == pytest.approx(55.0 + 2.0)
    idle = Progress(added=30.0)  # no counters yet: as long as the finished one took
    assert history.expected(idle) == pytest.approx(53.0)


def test_the_tail_is_the_largest_lower_bound_unless_an_upper_bound_contradicts_it() -> None:
    history = RunHistory()

    def finish(lines_done: float, last_unfinished: float, finished: float) -> None:
        progress = _seen(Progress(added=0.0), lines_done, state="finalizing", done=1000)
        _seen(progress, last_unfinished, state="finalizing", done=1000)
        history.finished(progress, now=finished)

    finish(10.0, 12.0, 13.0)  # tail in [2, 3]
    finish(10.0, 11.0, 12.5)  # tail in [1, 2.5]
    assert history.tail == pytest.approx(2.0)
    finish(10.0, 14.0, 15.0)  # tail in [4, 5]: contradicts the upper bound 2.5
    assert history.tail == pytest.approx(2.5)


def test_counts_that_reach_the_total_end_the_rate_samples() -> None:
    """A finalizing batch's counters (at its total) say nothing about the rate it ran at."""
    progress = _seen(_seen(Progress(added=0.0), 100.0, done=100), 200.0, done=300)
    _seen(progress, 900.0, state="finalizing", done=1000)
    assert progress.last == (200.0, 300)
    assert progress.run_end() == pytest.approx(550.0)  # the rate's, not the sweep's 900


def test_plan_follows_age_when_nothing_is_predicted() -> None:
    history = RunHistory()
    assert plan(POLICY, [Progress(added=0.0)], history, swept_at=0.0) == 0.5
    assert plan(POLICY, [Progress(added=0.0)], history, swept_at=0.7) == pytest.approx(1.4)
    assert plan(POLICY, [Progress(added=0.0)], history, swept_at=50.0) == pytest.approx(51.0)
    assert plan(POLICY, [Progress(added=0.0)], history, swept_at=1_000.0) == pytest.approx(1_010)
    assert plan(POLICY, [Progress(added=0.0)], history, swept_at=1e5) == pytest.approx(1e5 + 60)
    # The youngest batch sets the pace.
    batches = [Progress(added=0.0), Progress(added=900.0)]
    assert plan(POLICY, batches, history, swept_at=1_000.0) == pytest.approx(1_001.0)
    assert plan(POLICY, [], history, swept_at=5.0) == pytest.approx(65.0)


def test_plan_sweeps_just_after_the_earliest_expected_finish() -> None:
    history = RunHistory()
    soon = _seen(_seen(Progress(added=0.0), 1_000.0, done=500), 1_100.0, done=990)
    later = _seen(_seen(Progress(added=0.0), 1_000.0, done=100), 1_100.0, done=200)
    at = plan(POLICY, [later, soon], history, swept_at=1_100.0)
    assert soon.run_end() == pytest.approx(1_100.0 + 10 / 4.9)
    assert at == pytest.approx(1_100.0 + 10 / 4.9 + PREDICTION_MARGIN)


def test_plan_backs_off_by_doubling_once_overdue() -> None:
    history = RunHistory()
    progress = _seen(_seen(Progress(added=0.0), 1_000.0, done=500), 1_100.0, done=990)
    expected = progress.run_end()
    assert expected is not None
    gaps = []
    swept = expected + PREDICTION_MARGIN
    for _ in range(5):
        following = plan(POLICY, [progress], history, swept_at=swept)
        gaps.append(following - swept)
        swept = following
    assert gaps == pytest.approx([0.5, 0.55, 1.1, 2.2, 4.4])


def test_plan_never_sweeps_sooner_than_interval_min() -> None:
    history = RunHistory()
    progress = _seen(_seen(Progress(added=0.0), 10.0, done=10), 20.0, done=999)
    assert plan(POLICY, [progress], history, swept_at=20.0) == pytest.approx(20.5)
