"""How a gate spaces its calls: the re-ratable ``_Pacer`` and the ``_Probe`` of an unknown rate.

``_Pacer`` is aiolimiter's leaky bucket, kept for a gate's whole life and re-rated in place by
AIMD. Its bank holds ``BURST_SECONDS`` of calls: it starts spent, a re-rate keeps what is left
in it, and ``spend`` empties it (after a pause, which banks nothing).

``_Probe`` serves a gate that knows no rate and has had no answer yet: its first call goes
alone and the others wait for that answer (``PROBE_WAIT`` real seconds at most), so the
answer's ``x-ratelimit-limit-requests`` sets the pace before the rest leave.
"""

from __future__ import annotations

from typing import Final, final

import anyio
from aiolimiter import AsyncLimiter

__all__ = ["BURST_SECONDS", "PROBE_WAIT"]

#: Seconds of calls the pacer may bank: late wake-ups are made up instead of lost (a bucket of
#: one call loses every scheduling delay for good), while a quiet spell buys only this burst.
BURST_SECONDS: Final = 0.1
#: While a gate knows no rate and has seen no answer, one call probes and the others wait for
#: its answer (which may teach the limit) this many real seconds at most.
PROBE_WAIT: Final = 1.0


@final
class _Pacer(AsyncLimiter):
    """aiolimiter's leaky bucket, re-rated in place.

    One pacer per gate for its whole life: rebuilding a limiter on every AIMD step would let
    each new one admit a call at once while waiters on the old one kept the old pace, so a gate
    under 429 feedback would stop pacing at all.
    """

    def __init__(self, rate: float) -> None:
        super().__init__(*_shape(rate))
        self._primed = False

    async def acquire(self, amount: float = 1) -> None:
        if not self._primed:
            # Start with the bank spent, not full: the provider's own bucket may be empty (a
            # previous run, another client), and a first burst would only earn 429s. The first
            # call still goes at once.
            self._primed = True
            self.spend(amount)
        await super().acquire(amount)

    def spend(self, keep: float = 0.0) -> None:
        """Empty the bank (but for ``keep`` calls): the next calls are paced, not a burst."""
        self._leak()
        self._level = max(self._level, self.max_rate - keep)

    def set_rate(self, rate: float) -> None:
        self._leak()
        before = self.max_rate
        self.max_rate, self.time_period = _shape(rate)
        # aiolimiter derives its leak rate once, in __init__; keep it in step.
        self._rate_per_sec = self.max_rate / self.time_period
        # The bank is rate x BURST_SECONDS, so it grows and shrinks with the rate; keep what is
        # left in it as it was. Keeping the level instead would turn each step up into
        # immediate room (AIMD climbing back after a 429 would burst into the next 429) and
        # would let a bank spent at a high rate outlast a cut by minutes.
        self._level = max(0.0, self._level + self.max_rate - before)


def _shape(rate: float) -> tuple[float, float]:
    """``(capacity, period)`` pacing ``rate`` calls per second with a ``BURST_SECONDS`` bank."""
    capacity = max(1.0, rate * BURST_SECONDS)
    return capacity, capacity / rate


@final
class _Probe:
    """The first call of a gate that knows no rate goes alone; the others wait for its answer.

    With no rate configured, the first calls of a class would all leave at once and, on a
    provider whose bucket is empty, all come back 429 before the first answer could teach the
    limit. So one call goes first; the others wait for its answer (at most ``PROBE_WAIT``), then
    pace by what it taught, if anything.

    Args:
        needed: ``False`` when the rate is known from the start: nobody probes or waits.
    """

    def __init__(self, *, needed: bool) -> None:
        # Set once the first call has answered (or given up), then dropped.
        self._answered: anyio.Event | None = anyio.Event() if needed else None
        self._claimed = False
        #: Callers waiting for the probe's answer.
        self.waiting = 0

    def claim(self) -> bool:
        """Whether this call is the one that probes (the first, while no answer came)."""
        if self._answered is None or self._claimed:
            return False
        self._claimed = True
        return True

    async def wait(self) -> None:
        """Wait for the probe's answer (``PROBE_WAIT`` at most); at once if there is none."""
        answered = self._answered
        if answered is None:
            return
        self.waiting += 1
        try:
            with anyio.move_on_after(PROBE_WAIT):
                await answered.wait()
        finally:
            self.waiting -= 1

    def end(self) -> None:
        """The answer came (or the rate is known now): release the waiters, for good."""
        if self._answered is not None:
            self._answered.set()
            self._answered = None
