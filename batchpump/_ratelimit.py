"""The rate gate: how many calls of one endpoint class leave, how fast, and when they wait.

Each provider client holds one ``EndpointGate`` per endpoint class (``upload``, ``create``,
``poll``, ``download``, ``item``). A call passes the gate in ``slot()``:

1. the *pause*: after a 429 the whole class waits until the provider's retry-after instant.
   One task sleeps on the ``Clock``; every other caller waits on one ``anyio.Event``, so N
   concurrent 429s cost one sleep;
2. the *concurrency* cap, an ``anyio.CapacityLimiter``;
3. the *rate*, a leaky bucket (``_Pacer``) paced at the current rate, when one is known.
   It starts with its burst bank spent, so a run's first calls are paced too.

While a gate knows no rate and has had no answer yet, its first call goes alone and the others
wait for that answer (``_Probe``, ``PROBE_WAIT`` at most): the answer's
``x-ratelimit-limit-requests`` sets the pace before the rest leave, instead of after they all
came back 429.

With a known ceiling (configured, or learned from ``x-ratelimit-limit-requests`` per minute,
on a success or on the 429 itself) the rate follows AIMD: a 429 halves it (once per congestion
event: only a call started after the last decrease can decrease it again, never below 1/8 of
the ceiling); each success adds ``increase`` x ceiling, never above the ceiling.

When the provider advertises nothing, the gate learns the limit from its answers
(``_Learner``): at a congestion event it paces at what the provider accepted over the last
``LEARN_WINDOW`` seconds, less ``LEARN_BACKOFF``, then probes upward along a cubic curve (flat
near that rate, steeper the longer no 429 comes, so a rate cut by a random storm recovers in
seconds). A 429 without ``Retry-After`` pauses the class for one spacing at the current rate,
doubled per event that brings no success. Every caller waiting out a pause then leaves through
the pacer, one spacing apart, never all at once.

A streak of 429s with no success between them is timed: ``GateStatistics.rate_limited_for``
says how long the class has been held by rate limits, for the progress line.

Rates are per ``Clock`` second. The pacer waits on the gate's clock when that clock runs by
itself (it declares a ``speed``: ``SystemClock``, ``ScaledClock``). A clock without one is, by
the ``Clock`` contract, one that runs at real speed; the pacer waits on the ``SystemClock``
there, so a ``ManualClock``, which moves only when told, does not stall every paced call.

``share`` adds a ``SharedGate`` (``_ratelimit_redis``): each call then also takes a turn that
every worker on the same provider key shares, and a 429's pause is published to all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

import anyio
import msgspec

from ._clock import Clock, SystemClock
from ._errors import UsageError

if TYPE_CHECKING:
    from ._ratelimit_redis import SharedGate

__all__ = [
    "BURST_SECONDS",
    "DEFAULT_INCREASE",
    "DEFAULT_MIN_RATE",
    "ENDPOINT_CLASSES",
    "FLOOR_FRACTION",
    "LEARN_BACKOFF",
    "LEARN_RECOVERY",
    "LEARN_WINDOW",
    "MAX_GUESSED_PAUSE",
    "PROBE_WAIT",
    "EndpointClass",
    "EndpointGate",
    "GateStatistics",
]

EndpointClass: TypeAlias = Literal["upload", "create", "poll", "download", "item"]
ENDPOINT_CLASSES: Final[tuple[EndpointClass, ...]] = (
    "upload",
    "create",
    "poll",
    "download",
    "item",
)

#: The rate AIMD never goes below, in requests per second.
DEFAULT_MIN_RATE: Final = 0.05
#: Nor below this fraction of the ceiling (three halvings): random 429 storms must not crush
#: throughput to a trickle; the shared pause already honours each retry-after.
FLOOR_FRACTION: Final = 1 / 8
#: Additive increase per success, as a fraction of the ceiling (8 successes undo a halving
#: from the ceiling): quick enough that sporadic 429s do not pin the rate at the floor.
DEFAULT_INCREASE: Final = 1 / 16
#: Seconds of calls the pacer may bank: late wake-ups are made up instead of lost (a bucket of
#: one call loses every scheduling delay for good), while a quiet spell buys only this burst.
BURST_SECONDS: Final = 0.1
#: While a gate knows no rate and has seen no answer, one call probes and the others wait for
#: its answer (which may teach the limit) this many real seconds at most.
PROBE_WAIT: Final = 1.0
#: Seconds of answers over which the accepted rate is measured when a 429 comes.
LEARN_WINDOW: Final = 2.0
#: At a congestion event a learned rate drops this fraction below the accepted rate.
LEARN_BACKOFF: Final = 0.1
#: Seconds a learned rate takes to climb back to the accepted rate it was cut from.
LEARN_RECOVERY: Final = 3.0
#: The longest pause a 429 without ``Retry-After`` buys (the doubling stops here).
MAX_GUESSED_PAUSE: Final = 30.0


@final
class GateStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one gate.

    Attributes:
        endpoint: the endpoint class.
        rate: the current rate in requests per second, ``None`` if unlimited.
        ceiling: the configured or learned rate AIMD climbs back to, ``None`` if unknown.
        paused_until: the ``Clock.monotonic()`` instant the pause ends, ``None`` if not paused.
        waiting: callers waiting for the pause, a concurrency slot or the rate.
        in_flight: calls holding a slot.
        rate_limited: 429 answers seen.
        pauses: sleeps taken for pauses (one per pause, however many callers waited).
        learned: ``True`` when ``rate`` was learned from 429s (the provider advertised none).
        rate_limited_for: seconds since the first 429 of the current streak (429s with no
            success since), ``None`` when the last answer was a success.
    """

    endpoint: str
    rate: float | None
    ceiling: float | None
    paused_until: float | None
    waiting: int
    in_flight: int
    rate_limited: int
    pauses: int
    learned: bool = False
    rate_limited_for: float | None = None


@final
class EndpointGate:
    """Rate, concurrency and the shared 429 pause for one endpoint class.

    Args:
        endpoint: the endpoint class this gate guards.
        clock: every pause waits on it.
        concurrency: calls in flight at once (>= 1).
        rate: the configured ceiling in requests per second; ``None`` to learn it.
        min_rate: AIMD's floor in requests per second (default 0.05).
        increase: additive increase per success, a fraction of the ceiling (default 1/16).
    """

    def __init__(
        self,
        endpoint: EndpointClass,
        *,
        clock: Clock,
        concurrency: int,
        rate: float | None = None,
        min_rate: float = DEFAULT_MIN_RATE,
        increase: float = DEFAULT_INCREASE,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be >= 1, got {concurrency!r}")
        self.endpoint: Final = endpoint
        self._clock = clock
        self._capacity = anyio.CapacityLimiter(concurrency)
        self._configured = rate
        self._ceiling = rate
        self._rate = rate
        # A clock that does not run by itself (no ``speed``) would stall the pacer: see top.
        self._pace_clock: Clock = clock if hasattr(clock, "speed") else SystemClock()
        self._limiter: _Pacer | None = None if rate is None else _Pacer(rate, self._pace_clock)
        self._min_rate = min_rate
        self._increase = increase
        self._paused_until = 0.0
        self._resume = anyio.Event()
        self._sleeper = False
        self._pause_waiting = 0
        self._rate_waiting = 0
        self._rate_limited = 0
        self._pauses = 0
        self._tickets = 0
        self._decreased_at_ticket = -1
        self._probe = _Probe(needed=rate is None)
        self._learner = _Learner(clock)
        self._limited_since: float | None = None
        self._fruitless = 0  # congestion events since the last success
        self._shared: SharedGate | None = None
        self._unpublished = False

    def share(self, shared: SharedGate | None) -> None:
        """Also take every call's turn through ``shared``, the limit and the 429 pause this
        class shares with other workers (``None``: this process's limit alone)."""
        self._shared = shared

    # -- passing the gate ---------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Wait for the pause, a concurrency slot and the rate; yield the call's ticket.

        Tickets increase with every call; a failed call hands its ticket back to
        ``on_rate_limited(started=)``.
        """
        await self.wait_unpaused()
        # A gate that knows no rate sends one call first (see ``_Probe``).
        probe = self._limiter is None and self._probe.claim()
        if not probe:
            await self._probe.wait()
        try:
            async with self._capacity:
                await self.wait_unpaused()
                if self._learner.active and self._ceiling is None:
                    self._set_rate(self._learner.rate())  # the climb goes on between answers
                limiter = self._limiter
                if limiter is not None:
                    self._rate_waiting += 1
                    try:
                        await limiter.acquire()
                        # A 429 paused the class meanwhile: wait it out, then take a fresh
                        # turn; every caller leaving together when a pause ends would be a
                        # burst into a bucket that just refilled by one call.
                        while self._paused_until > self._clock.monotonic():
                            await self.wait_unpaused()
                            await limiter.acquire()
                    finally:
                        self._rate_waiting -= 1
                if self._shared is not None:
                    await self._shared_turn(self._shared)
                self._tickets += 1
                yield self._tickets
        finally:
            if probe:
                self._probe.end()

    async def wait_unpaused(self) -> None:
        """Return once the class is not paused; many callers share one sleep."""
        while (remaining := self._paused_until - self._clock.monotonic()) > 0:
            self._pause_waiting += 1
            try:
                if self._sleeper:
                    await self._resume.wait()
                    continue
                self._sleeper = True
                self._pauses += 1
                try:
                    if self._unpublished and self._shared is not None:
                        self._unpublished = False  # our 429: every worker waits it out
                        await self._shared.publish_pause(remaining)
                    await self._clock.sleep(remaining)
                    if self._limiter is not None:
                        self._limiter.spend()  # the pause banked nothing
                finally:
                    self._sleeper = False
                    event, self._resume = self._resume, anyio.Event()
                    event.set()
            finally:
                self._pause_waiting -= 1

    def pause(self, seconds: float) -> None:
        """Pause the whole class for ``seconds`` from now (extends, never shortens, a pause)."""
        until = self._clock.monotonic() + max(0.0, seconds)
        self._paused_until = max(self._paused_until, until)

    # -- feedback -------------------------------------------------------------------------------

    def on_rate_limited(
        self,
        wait: float | None = None,
        *,
        started: int | None = None,
        limit_requests: float | None = None,
        longest_guess: float = MAX_GUESSED_PAUSE,
    ) -> float:
        """Record a 429: pause the class and slow down (once per congestion event).

        Args:
            wait: seconds to pause, the provider's retry-after; ``None`` when it said nothing:
                the gate then pauses one spacing at its rate, doubled per fruitless event.
            started: the ticket ``slot()`` yielded for the failed call; a call that entered
                before the last decrease does not decrease again (one decrease per event).
            limit_requests: the 429's ``x-ratelimit-limit-requests`` (per minute), if sent.
            longest_guess: the longest pause a 429 without retry-after buys (the caller's
                backoff for the event).

        Returns:
            the seconds the class is paused from now.
        """
        now = self._clock.monotonic()
        self._rate_limited += 1
        if self._limited_since is None:
            self._limited_since = now
        self._unpublished = self._shared is not None
        self._learn(limit_requests)
        self._probe.end()
        new_event = started is None or started > self._decreased_at_ticket
        if new_event:
            self._decreased_at_ticket = self._tickets
            if self._ceiling is not None:
                if self._rate is not None:
                    self._set_rate(self._rate / 2.0)
            else:
                self._set_rate(self._learner.cut(self._rate, wait))
            self._fruitless += 1
        if wait is None:
            # One spacing at the (new) rate, doubled per event that brought no success.
            spacing = 1.0 / self._rate if self._rate else PROBE_WAIT
            guess = spacing * 2.0 ** max(0, self._fruitless - 1)
            wait = min(MAX_GUESSED_PAUSE, longest_guess, guess)
        self.pause(wait)
        return max(0.0, self._paused_until - now)

    def on_success(self, *, limit_requests: float | None = None) -> None:
        """Record a success: learn the ceiling from a header, then creep the rate up.

        Args:
            limit_requests: the provider's ``x-ratelimit-limit-requests`` (per minute), if sent.
        """
        self._limited_since = None
        self._fruitless = 0
        self._learn(limit_requests)
        self._probe.end()
        self._learner.accepted()
        if self._ceiling is None:
            if self._learner.active and self._rate is not None:
                self._set_rate(self._learner.rate())
            return
        if self._rate is not None and self._rate < self._ceiling:
            self._set_rate(self._rate + self._ceiling * self._increase)

    def paused_for(self) -> float:
        """Seconds until the class's pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock.monotonic())

    def _learn(self, limit_requests: float | None) -> None:
        """Take the provider's advertised limit as the ceiling (capped by the configured one)."""
        if limit_requests is None or limit_requests <= 0:
            return
        learned = limit_requests / 60.0
        ceiling = learned if self._configured is None else min(self._configured, learned)
        self._ceiling = ceiling
        self._learner.active = False
        if self._rate is None or self._rate > ceiling:
            self._set_rate(ceiling)

    def statistics(self) -> GateStatistics:
        """A frozen snapshot of this gate."""
        until = self._paused_until
        since = self._limited_since
        return GateStatistics(
            endpoint=self.endpoint,
            rate=self._rate,
            ceiling=self._ceiling,
            paused_until=until if until > self._clock.monotonic() else None,
            waiting=self._pause_waiting
            + self._probe.waiting
            + self._capacity.statistics().tasks_waiting
            + self._rate_waiting,
            in_flight=self._capacity.borrowed_tokens,
            rate_limited=self._rate_limited,
            pauses=self._pauses,
            learned=self._learner.active,
            rate_limited_for=None if since is None else self._clock.monotonic() - since,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"EndpointGate({self.endpoint!r}, rate={s.rate!r}, ceiling={s.ceiling!r}, "
            f"in_flight={s.in_flight}, waiting={s.waiting}, paused_until={s.paused_until!r})"
        )

    # -- internals ------------------------------------------------------------------------------

    async def _shared_turn(self, shared: SharedGate) -> None:
        """Take the call's turn among every worker; a pause another one saw pauses us too."""
        self._rate_waiting += 1
        try:
            wait, paused = await shared.turn(self._rate)
            if paused > 0:
                self.pause(paused)
            if wait > 0:
                await self._clock.sleep(wait)
        finally:
            self._rate_waiting -= 1

    def _set_rate(self, rate: float) -> None:
        ceiling = self._ceiling if self._ceiling is not None else rate
        floor = max(self._min_rate, ceiling * FLOOR_FRACTION)
        rate = max(floor, min(rate, ceiling))
        if rate == self._rate and self._limiter is not None:
            return
        self._rate = rate
        self._probe.end()  # known now: callers waiting for the probe pace instead
        if self._limiter is None:
            self._limiter = _Pacer(rate, self._pace_clock)
        else:
            self._limiter.set_rate(rate)


@final
class _Pacer:
    """A leaky bucket on a ``Clock``, re-rated in place; callers take their turns in order.

    Its bank holds ``BURST_SECONDS`` of calls: it starts spent (on the first call), a re-rate
    keeps what is left in it, and ``spend`` empties it (after a pause, which banks nothing).
    One pacer per gate for its whole life: rebuilding one on every AIMD step would let each new
    one admit a call at once while waiters on the old one kept the old pace, so a gate under
    429 feedback would stop pacing at all.

    Args:
        rate: calls per second of ``clock``.
        clock: what the bucket leaks and its callers wait on.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        self._clock = clock
        self.rate = rate
        #: Calls the bank holds.
        self.capacity = _capacity(rate)
        self._level = 0.0
        self._checked = clock.monotonic()
        self._primed = False
        self._turn = anyio.Lock()  # FIFO: one caller at a time waits for room

    @property
    def level(self) -> float:
        """Calls in the bucket now (``capacity`` means full: the next call waits)."""
        return self._leak()

    def has_capacity(self) -> bool:
        """Whether a call could leave now."""
        return self._leak() + 1.0 <= self.capacity

    async def acquire(self) -> None:
        """Wait for this caller's turn and for room in the bucket, then take one call."""
        async with self._turn:
            if not self._primed:
                # Start with the bank spent, not full: the provider's own bucket may be empty
                # (a previous run, another client), and a first burst would only earn 429s.
                # The first call still goes at once.
                self._primed = True
                self.spend(keep=1.0)
            while (short := self._leak() + 1.0 - self.capacity) > _EPSILON:
                await self._clock.sleep(short / self.rate)
            self._level += 1.0

    def spend(self, keep: float = 0.0) -> None:
        """Empty the bank (but for ``keep`` calls): the next calls are paced, not a burst."""
        self._level = max(self._leak(), self.capacity - keep)

    def set_rate(self, rate: float) -> None:
        """Pace at ``rate`` from now on."""
        level = self._leak()
        before = self.capacity
        self.rate = rate
        self.capacity = _capacity(rate)
        # The bank is rate x BURST_SECONDS, so it grows and shrinks with the rate; keep what is
        # left in it as it was. Keeping the level instead would turn each step up into
        # immediate room (AIMD climbing back after a 429 would burst into the next 429) and
        # would let a bank spent at a high rate outlast a cut by minutes.
        self._level = max(0.0, level + self.capacity - before)

    def _leak(self) -> float:
        """Drain the bucket for the time since the last look; return its level."""
        now = self._clock.monotonic()
        self._level = max(0.0, self._level - (now - self._checked) * self.rate)
        self._checked = now
        return self._level


#: Calls per second a climb starts from when the first 429 said nothing and nothing was
#: measured yet (a cold start against a provider that states no limit and no retry-after).
_COLD_GUESS: Final = 10.0
#: How much a rate learned from no measurement grows per second until the next 429.
_SLOW_START: Final = 4.0
#: The highest rate a learned climb reaches (calls per second): no limit in practice.
_MAX_RATE: Final = 1e9
#: Room short of one call that counts as room (float noise must not cost a sleep).
_EPSILON: Final = 1e-9


def _capacity(rate: float) -> float:
    """Calls a bank of ``BURST_SECONDS`` holds at ``rate`` (one at least)."""
    return max(1.0, rate * BURST_SECONDS)


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


@final
class _Learner:
    """The rate of a gate whose provider advertises no limit, learned from its answers.

    Until the first 429 nothing is paced (a provider that never rate-limits is never slowed).
    The learner keeps the times of the successes of the last ``LEARN_WINDOW`` seconds. At a
    congestion event (``cut``) with that window full, the rate becomes what the provider
    accepted over it, less ``LEARN_BACKOFF``; that accepted rate is the *peak*. From there
    ``rate()`` climbs along a cubic in the time since the cut: back to the peak after
    ``LEARN_RECOVERY`` seconds, flat around it, then ever steeper, so the gate spends its time
    just under the limit and probes past it only slowly, while a cut caused by a random storm
    (not a quota) is undone within seconds. At a cold start (the window not yet full, or too
    few answers to measure) the cut takes what was accepted, half the current rate, or one
    call per retry-after, and the climb multiplies the rate by ``_SLOW_START`` each second
    until the next 429.

    Args:
        clock: what the window and the climb are measured on.
    """

    #: Successes needed in the window for the accepted rate to count as measured.
    _MIN_SAMPLES: Final = 4
    #: The shortest span the accepted rate is measured over (a burst at one instant).
    _MIN_SPAN: Final = 0.25

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._times: deque[float] = deque()
        self._first: float | None = None
        self._peak = 0.0
        self._cut_at = 0.0
        self._start_rate = 0.0
        self._doubling = False
        #: Whether the gate's rate is the learner's (set by ``cut``, cleared by a known limit).
        self.active = False

    def accepted(self) -> None:
        """Count one success now."""
        now = self._clock.monotonic()
        if self._first is None:
            self._first = now
        self._times.append(now)
        self._trim(now)

    def accepted_rate(self) -> float | None:
        """Successes per second over the last window, ``None`` while too few to tell."""
        now = self._clock.monotonic()
        self._trim(now)
        if len(self._times) < self._MIN_SAMPLES or self._first is None:
            return None
        span = now - max(now - LEARN_WINDOW, self._first)
        return len(self._times) / max(span, self._MIN_SPAN)

    def cut(self, rate: float | None, wait: float | None) -> float:
        """The rate to pace at after a congestion event (``rate``: the current one)."""
        self.active = True
        now = self._clock.monotonic()
        measured = self.accepted_rate()
        settled = self._first is not None and now - self._first >= LEARN_WINDOW
        if self._doubling and rate is not None:
            if now - self._cut_at < 1.0 and not settled:
                # The climb is younger than a second: it crossed nothing new, the provider's
                # bucket was empty. Climb again from half the rate.
                self._peak = self._start_rate = rate / 2.0
                self._cut_at = now
                return self._start_rate
            if not settled or measured is None:
                # The climb crossed the limit within its last second: somewhere between a
                # quarter of the rate and the rate; a short window mostly sees the climb.
                measured = max(measured or 0.0, rate / 2.0)
        elif measured is not None and not settled:
            # A cold start: what the provider accepted in a fraction of a second is no
            # measure of its limit, only a floor. Climb from there.
            self._doubling = True
            self._peak = self._start_rate = measured
            self._cut_at = now
            return self._start_rate
        if measured is not None:
            if rate is not None:
                measured = min(measured, rate)
            self._doubling = False
            self._peak = measured
            self._start_rate = measured * (1.0 - LEARN_BACKOFF)
        else:
            if rate is not None:
                guess = rate / 2.0
            elif wait:
                guess = 1.0 / max(wait, 0.01)  # one call per retry-after
            else:
                guess = _COLD_GUESS

            self._doubling = True
            self._peak = self._start_rate = guess
        self._cut_at = now
        return self._start_rate

    def rate(self) -> float:
        """The rate now, on the climb from the last cut."""
        t = self._clock.monotonic() - self._cut_at
        if self._doubling:
            return min(_MAX_RATE, self._start_rate * float(_SLOW_START ** min(t, 16.0)))
        # peak * (1 + c (t - K)^3), with K = LEARN_RECOVERY and c so that t = 0 is the start.
        k = LEARN_RECOVERY
        c = LEARN_BACKOFF / k**3
        return min(_MAX_RATE, max(self._start_rate, self._peak * (1.0 + c * (t - k) ** 3)))

    def _trim(self, now: float) -> None:
        times = self._times
        while times and times[0] < now - LEARN_WINDOW:
            times.popleft()
