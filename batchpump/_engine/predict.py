"""When to sweep next: each batch's expected finish, from its progress and the run's history.

A list sweep refreshes every in-flight batch at once, so the question is only *when*. Three
things bound the answer (``PollPolicy`` has the knobs; ``plan`` is the rule, a pure function):

- **latency**: a batch must not stay unseen after it finished for more than
  ``max(latency_floor, latency_share * age)`` (and never more than its own age: a new batch is
  swept at ``interval_min``, then at 1 s, 2 s...). This holds whatever the predictions say.
- **prediction**: a running batch whose ``completed + failed`` grew is expected to reach
  ``total`` at the rate it grew (measured over the longest baseline seen: from its first
  progress, or from the provider's ``in_progress_at`` when only one sample shows progress),
  then to take the finalizing time the run's earlier batches took. Each finished batch bounds
  its own finalizing time: at least the last time it was seen unfinished, at most the time it
  was seen finished, after its lines were done; the estimate is the largest recent lower
  bound that no recent upper bound contradicts (else the smallest recent upper bound): an
  early sweep costs one request, a late one costs latency. A batch without progress is
  expected to take as long as the run's completed batches did (their median). The next sweep
  comes just after the earliest expected finish; a batch still unfinished past it is swept
  again at doubling intervals from it (``interval_min``, then the time overdue).
- **cost** and the deadline rule stay with the poller (``poll``).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from .._config import PollPolicy
from .._models import BatchInfo

__all__ = ["PREDICTION_MARGIN", "Progress", "RunHistory", "plan"]

#: Seconds after an expected finish that the sweep comes (the answer must be there to read).
PREDICTION_MARGIN: Final = 0.05
#: Completed batches the run's history keeps (durations and finalizing tails).
HISTORY: Final = 64
#: The finalizing estimate is the smallest of this many most recent tails.
RECENT_TAILS: Final = 5


@final
@dataclass(slots=True)
class Progress:
    """What the poller saw of one batch: when it was added, and its counters over time.

    Times are the run clock's ``monotonic()`` seconds; ``started`` is the provider's
    ``in_progress_at`` moved onto that clock.
    """

    added: float
    total: int = 0
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    started: float | None = None
    ran_at: float | None = None
    unfinished_at: float | None = None

    def observe(self, info: BatchInfo, *, now: float, wall: float) -> None:
        """Record a sweep's view of the batch (``now`` monotonic, ``wall`` the clock's time)."""
        done = info.completed + info.failed
        if info.total > 0:
            self.total = info.total
        if not info.terminal:
            self.unfinished_at = now
        if info.in_progress_at is not None and self.started is None:
            started = now - (wall - info.in_progress_at)
            if started <= now:
                self.started = started
        ran = info.state != "running" or (self.total > 0 and done >= self.total)
        if ran:
            if self.ran_at is None and info.state in ("finalizing", "completed"):
                self.ran_at = now
            return
        if done > 0:  # progress samples only while running: they give the rate
            sample = (now, done)
            if self.first is None:
                self.first = sample
            self.last = sample

    def run_end(self) -> float | None:
        """When ``completed + failed`` reaches ``total``: expected at the rate seen while it
        ran, or (no rate) when it was first seen done running."""
        rated = self._rated_end()
        return self.ran_at if rated is None else rated

    def _rated_end(self) -> float | None:
        if self.last is None or self.total <= 0:
            return None
        t1, d1 = self.last
        assert self.first is not None
        t0, d0 = self.first
        if d1 <= d0 or t1 <= t0:  # one sample of progress: measure from the start, if known
            if self.started is None or t1 <= self.started:
                return None
            t0, d0 = self.started, 0
        rate = (d1 - d0) / (t1 - t0)
        end = t1 + (self.total - d1) / rate
        return end if self.ran_at is None else min(end, self.ran_at)


@final
class RunHistory:
    """What the run's finished batches say about the others: durations and finalizing tails."""

    def __init__(self) -> None:
        self._durations: deque[float] = deque(maxlen=HISTORY)
        self._tails: deque[tuple[float, float]] = deque(maxlen=HISTORY)
        self._duration: float | None = None

    def finished(self, progress: Progress, *, now: float) -> None:
        """A batch was seen finished at ``now``."""
        self._durations.append(now - progress.added)
        self._duration = statistics.median(self._durations)
        run_end = progress.run_end()
        if run_end is not None:
            seen = progress.unfinished_at if progress.unfinished_at is not None else run_end
            high = max(0.0, now - run_end)
            self._tails.append((min(high, max(0.0, seen - run_end)), high))

    @property
    def duration(self) -> float | None:
        """The median time the run's batches took from being added to being seen finished."""
        return self._duration

    @property
    def tail(self) -> float:
        """The finalizing time to expect after a batch's counters reach its total."""
        if not self._tails:
            return 0.0
        recent = list(self._tails)[-RECENT_TAILS:]
        low = max(lo for lo, _ in recent)
        high = min(hi for _, hi in recent)
        return low if low <= high else high

    def expected(self, progress: Progress) -> float | None:
        """When ``progress``'s batch is expected to be finished (monotonic), if anything says."""
        run_end = progress.run_end()
        if run_end is not None:
            return run_end + self.tail
        if self._duration is not None:
            return progress.added + self._duration
        return None


def plan(
    policy: PollPolicy, batches: Iterable[Progress], history: RunHistory, *, swept_at: float
) -> float:
    """The monotonic time of the next sweep after one that started at ``swept_at``.

    The latency bound and the predictions of the module docstring, kept within
    ``[interval_min, interval_max]`` of ``swept_at``; ``swept_at + interval_max`` when nothing
    is tracked.
    """
    floor = policy.interval_min
    best = swept_at + policy.interval_max
    for progress in batches:
        age = max(0.0, swept_at - progress.added)
        bound = max(policy.latency_floor, policy.latency_share * age)
        want = swept_at + min(age, bound)
        expected = history.expected(progress)
        if expected is not None:
            if expected + PREDICTION_MARGIN > swept_at:
                want = min(want, expected + PREDICTION_MARGIN)
            else:  # overdue: back off from the expected finish by doubling
                want = min(want, swept_at + max(floor, swept_at - expected))
        best = min(best, want)
    return max(swept_at + floor, best)
