"""EndpointGate: one shared 429 pause, concurrency, AIMD.

Rules: no network; a ManualClock drives every pause (no real sleeping); tasks are checked with
``anyio.wait_all_tasks_blocked``; each test is bounded by a hard timeout.
"""

from __future__ import annotations

import itertools

import anyio
import pytest

from batchpump import UsageError
from batchpump._clock import ManualClock
from batchpump._ratelimit import (
    LEARN_BACKOFF,
    LEARN_RECOVERY,
    MAX_GUESSED_PAUSE,
    EndpointGate,
)

pytestmark = pytest.mark.timeout(10)


class CountingClock:
    """A ManualClock that counts the sleeps taken through it."""

    def __init__(self) -> None:
        self.inner = ManualClock()
        self.sleeps = 0

    def time(self) -> float:
        return self.inner.time()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await self.inner.sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.inner.advance(seconds)


async def test_one_pause_is_shared_by_every_waiter() -> None:
    clock = CountingClock()
    # A rate so high its pacing is instant: the pause is what this test watches.
    gate = EndpointGate("poll", clock=clock, concurrency=100, rate=1e7)
    gate.on_rate_limited(30.0)
    entered: list[int] = []

    async def caller(i: int) -> None:
        async with gate.slot():
            entered.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(caller, i)
        await anyio.wait_all_tasks_blocked()
        stats = gate.statistics()
        assert entered == []
        assert stats.waiting == 50
        assert stats.paused_until == 30.0
        clock.advance(29.0)
        await anyio.wait_all_tasks_blocked()
        assert entered == []
        clock.advance(1.0)
    assert sorted(entered) == list(range(50))
    assert clock.sleeps == 1
    assert gate.statistics().pauses == 1
    assert gate.statistics().paused_until is None


async def test_concurrent_429s_do_not_stack_sleeps_or_halvings() -> None:
    clock = CountingClock()
    gate = EndpointGate("create", clock=clock, concurrency=10, rate=1000.0)
    starts = []
    for _ in range(10):
        async with gate.slot() as started:
            starts.append(started)
    for started in starts:
        gate.on_rate_limited(5.0, started=started)
    stats = gate.statistics()
    assert stats.rate_limited == 10
    assert stats.rate == 500.0  # halved once, not ten times
    assert stats.paused_until == 5.0

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(gate.wait_unpaused)
        await anyio.wait_all_tasks_blocked()
        clock.advance(5.0)
    assert clock.sleeps == 1


async def test_pause_extended_while_waiting_costs_one_more_sleep() -> None:
    clock = CountingClock()
    gate = EndpointGate("poll", clock=clock, concurrency=4)
    gate.pause(5.0)
    done = anyio.Event()

    async def waiter() -> None:
        await gate.wait_unpaused()
        done.set()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        clock.advance(3.0)
        gate.pause(10.0)  # now until t=13
        clock.advance(2.0)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()
        clock.advance(8.0)
    assert done.is_set()
    assert clock.sleeps == 2


async def test_cancelled_sleeper_hands_the_pause_to_another_waiter() -> None:
    clock = CountingClock()
    gate = EndpointGate("poll", clock=clock, concurrency=4)
    gate.pause(5.0)
    finished: list[str] = []
    scope = anyio.CancelScope()

    async def sleeper() -> None:
        with scope:
            await gate.wait_unpaused()

    async def waiter() -> None:
        await gate.wait_unpaused()
        finished.append("second")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert clock.sleeps == 1
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert clock.sleeps == 2  # the waiter took over the one sleep
        clock.advance(5.0)
    assert finished == ["second"]


async def test_aimd_halves_then_creeps_back_to_the_ceiling() -> None:
    clock = ManualClock()
    gate = EndpointGate("poll", clock=clock, concurrency=2, rate=10.0, increase=0.1)
    gate.on_rate_limited(0.0)
    assert gate.statistics().rate == 5.0
    gate.on_success()
    assert gate.statistics().rate == pytest.approx(6.0)
    for _ in range(20):
        gate.on_success()
    stats = gate.statistics()
    assert stats.rate == 10.0
    assert stats.ceiling == 10.0


async def test_aimd_never_goes_below_the_floor() -> None:
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=1, rate=1.0, min_rate=0.25)
    for _ in range(10):
        gate.on_rate_limited(0.0)  # started=None: each counts as a new congestion event
    assert gate.statistics().rate == 0.25
    fast = EndpointGate("poll", clock=ManualClock(), concurrency=1, rate=80.0)
    for _ in range(10):
        fast.on_rate_limited(0.0)
    assert fast.statistics().rate == 10.0  # 1/8 of the ceiling


async def test_rate_learned_from_limit_header() -> None:
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=2)
    assert gate.statistics().rate is None
    gate.on_success(limit_requests=600.0)  # per minute
    stats = gate.statistics()
    assert stats.rate == 10.0
    assert stats.ceiling == 10.0

    capped = EndpointGate("poll", clock=ManualClock(), concurrency=2, rate=4.0)
    capped.on_success(limit_requests=600.0)
    assert capped.statistics().ceiling == 4.0


async def test_a_429_without_an_advertised_limit_paces_at_the_accepted_rate() -> None:
    """No configured or advertised limit: the first 429 paces at what the provider accepted
    over the last window (less the backoff margin), then the rate probes upward."""
    clock = ManualClock()
    gate = EndpointGate("create", clock=clock, concurrency=8)
    for _ in range(50):  # 20 accepted per second for two and a half seconds
        clock.advance(0.05)
        gate.on_success()
    paused = gate.on_rate_limited(0.05)
    stats = gate.statistics()
    assert paused == pytest.approx(0.05)
    assert stats.learned
    assert stats.ceiling is None
    assert stats.rate == pytest.approx(20.0 * (1 - LEARN_BACKOFF), rel=0.03)
    cut = stats.rate
    assert cut is not None
    clock.advance(LEARN_RECOVERY)
    gate.on_success()
    back = gate.statistics().rate
    assert back == pytest.approx(20.0, rel=0.03)  # back at the accepted rate
    clock.advance(LEARN_RECOVERY * 2)
    gate.on_success()
    probing = gate.statistics().rate
    assert probing is not None
    assert back is not None
    assert probing > back  # and probing past it


async def test_a_burst_of_429s_is_one_congestion_signal() -> None:
    clock = ManualClock()
    gate = EndpointGate("create", clock=clock, concurrency=8)
    for _ in range(50):
        clock.advance(0.05)
        gate.on_success()
    tickets: list[int] = []
    for _ in range(6):  # six calls in flight together
        async with gate.slot() as ticket:
            tickets.append(ticket)
    for ticket in tickets:  # all come back 429
        gate.on_rate_limited(0.05, started=ticket)
    once = gate.statistics().rate
    assert once == pytest.approx(20.0 * (1 - LEARN_BACKOFF), rel=0.03)
    assert gate.statistics().rate_limited == 6


async def test_a_429_without_retry_after_pauses_one_spacing_doubled_per_fruitless_event() -> None:
    clock = ManualClock()
    gate = EndpointGate("create", clock=clock, concurrency=8)
    for _ in range(50):
        clock.advance(0.05)
        gate.on_success()
    first = gate.on_rate_limited(None)
    rate = gate.statistics().rate
    assert rate is not None
    assert first == pytest.approx(1.0 / rate)
    clock.advance(first)
    async with gate.slot() as ticket:
        pass
    second = gate.on_rate_limited(None, started=ticket)  # no success in between
    assert second > first
    assert second <= MAX_GUESSED_PAUSE
    clock.advance(second)
    gate.on_success()
    assert gate.statistics().rate_limited_for is None


async def test_rate_limited_for_counts_the_streak_without_success() -> None:
    clock = ManualClock()
    gate = EndpointGate("poll", clock=clock, concurrency=2, rate=10.0)
    assert gate.statistics().rate_limited_for is None
    gate.on_rate_limited(5.0)
    clock.advance(4.0)
    gate.on_rate_limited(5.0, started=10**6)
    assert gate.statistics().rate_limited_for == pytest.approx(4.0)
    gate.on_success()
    assert gate.statistics().rate_limited_for is None


async def test_waiters_leave_a_pause_one_spacing_apart_when_the_rate_was_learned() -> None:
    """After a 429 on a gate with no advertised limit, the callers waiting out the pause do
    not all wake at once: the learned rate paces them."""
    clock = RunningClock()
    gate = EndpointGate("poll", clock=clock, concurrency=32)
    for _ in range(30):  # 10 accepted per second
        clock.advance(0.1)
        gate.on_success()
    gate.on_rate_limited(1.0)
    rate = gate.statistics().rate
    assert rate == pytest.approx(10.0 * (1 - LEARN_BACKOFF), rel=0.03)
    entered: list[float] = []

    async def caller() -> None:
        async with gate.slot():
            entered.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        clock.advance(1.0)  # the pause ends
        await anyio.wait_all_tasks_blocked()
        assert len(entered) <= 1
        for _ in range(40):
            clock.advance(0.05)
            await anyio.wait_all_tasks_blocked()
    assert len(entered) == 10
    gaps = [b - a for a, b in itertools.pairwise(entered)]
    assert min(gaps) >= 0.05 - 1e-9


async def test_a_429_teaches_the_limit_it_advertises() -> None:
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=8)
    gate.on_rate_limited(0.5, limit_requests=600.0)
    stats = gate.statistics()
    assert stats.ceiling == 10.0
    assert stats.rate == 5.0  # learned, then halved for this 429


async def test_concurrency_is_capped() -> None:
    # A rate so high its pacing is instant: the concurrency cap is what this test watches.
    gate = EndpointGate("download", clock=ManualClock(), concurrency=3, rate=1e7)
    peak = 0
    release = anyio.Event()

    async def caller() -> None:
        nonlocal peak
        async with gate.slot():
            peak = max(peak, gate.statistics().in_flight)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        stats = gate.statistics()
        assert stats.in_flight == 3
        assert stats.waiting == 7
        release.set()
    assert peak == 3


async def test_first_call_of_an_unknown_class_probes_alone() -> None:
    """With no rate known, one call goes first; its answer's limit paces the rest."""
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=8)
    answer = anyio.Event()
    started: list[int] = []

    async def caller(first: bool) -> None:
        async with gate.slot() as ticket:
            started.append(ticket)
            if first:
                await answer.wait()
                gate.on_rate_limited(0.0, started=ticket, limit_requests=600.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, True)
        await anyio.wait_all_tasks_blocked()
        for _ in range(5):
            tg.start_soon(caller, False)
        await anyio.wait_all_tasks_blocked()
        assert started == [1]  # the others wait for the probe's answer
        assert gate.statistics().waiting == 5
        answer.set()
    assert len(started) == 6
    assert gate.statistics().ceiling == pytest.approx(10.0)  # 600 per minute, learned


async def test_pacer_starts_with_its_bank_spent() -> None:
    """A told rate paces from the first call: no opening burst into an empty bucket."""
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=50, rate=100.0)
    async with gate.slot():
        pass
    pacer = gate._limiter
    assert pacer is not None
    # A bank of 10 calls (0.1 s at 100/s): a fresh bank would hold 1 after this call, with
    # room for 9 more at once; a spent one is (nearly) full, so the next call waits.
    assert pacer.level > pacer.capacity / 2
    assert not pacer.has_capacity()


async def test_a_cut_rate_does_not_inherit_a_spent_high_rate_bank() -> None:
    """A bank spent at 100,000/s (10,000 calls) holds one bank after the cut, not 100 s."""
    gate = EndpointGate("item", clock=ManualClock(), concurrency=4, rate=100_000.0)
    async with gate.slot():
        pass
    gate.on_rate_limited(0.0, limit_requests=6_000.0)  # learns 100/s, then halves it
    pacer = gate._limiter
    assert pacer is not None
    assert pacer.level <= pacer.capacity == pytest.approx(5.0)  # 0.1 s at 50/s


async def test_climbing_back_after_a_429_is_no_burst() -> None:
    """AIMD steps up keep the bank as spent as it was: a step is not room for calls at once."""
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=4, rate=100.0)
    async with gate.slot() as ticket:
        pass
    gate.on_rate_limited(0.0, started=ticket)  # 50/s
    for _ in range(8):
        gate.on_success()  # back to 100/s: the bank grows from 5 to 10 calls
    pacer = gate._limiter
    assert pacer is not None
    assert gate.statistics().rate == pytest.approx(100.0)
    assert not pacer.has_capacity()  # still paced: the next call waits its turn


async def test_rate_changes_re_rate_one_pacer_in_place() -> None:
    """AIMD steps keep one pacer (a rebuilt limiter would admit its first caller at once)."""
    gate = EndpointGate("poll", clock=ManualClock(), concurrency=4, rate=100.0)
    pacer = gate._limiter
    assert pacer is not None
    gate.on_rate_limited(0.0)
    assert gate._limiter is pacer
    assert pacer.rate == pytest.approx(50.0)
    for _ in range(20):
        gate.on_success()
    assert gate._limiter is pacer
    assert pacer.rate == pytest.approx(100.0)


def test_a_gate_without_concurrency_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="concurrency must be >= 1"):
        EndpointGate("poll", clock=ManualClock(), concurrency=0)


class RunningClock:
    """A ManualClock that declares a ``speed``: the gate's pacer waits on it, by hand."""

    speed = 1.0

    def __init__(self) -> None:
        self.inner = ManualClock()

    def time(self) -> float:
        return self.inner.time()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def advance(self, seconds: float) -> None:
        self.inner.advance(seconds)


async def test_the_pacer_spaces_calls_on_the_gates_clock() -> None:
    """10/s with a bank of one call: the first call goes at once, then one per 0.1 clock s."""
    clock = RunningClock()
    gate = EndpointGate("poll", clock=clock, concurrency=10, rate=10.0)
    entered: list[float] = []

    async def caller() -> None:
        async with gate.slot():
            entered.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert entered == [0.0]
        assert gate.statistics().waiting == 2
        clock.advance(0.05)
        await anyio.wait_all_tasks_blocked()
        assert len(entered) == 1
        clock.advance(0.05)
        await anyio.wait_all_tasks_blocked()
        assert len(entered) == 2
        clock.advance(0.1)
    assert entered == pytest.approx([0.0, 0.1, 0.2])


async def test_a_pause_banks_nothing_for_the_pacer() -> None:
    """When a pause ends, the waiters are paced from a spent bank: no burst at the resume."""
    clock = RunningClock()
    gate = EndpointGate("poll", clock=clock, concurrency=10, rate=10.0)
    async with gate.slot():
        pass
    gate.pause(1.0)
    entered: list[float] = []

    async def caller() -> None:
        async with gate.slot():
            entered.append(clock.monotonic())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        clock.advance(1.0)  # the pause ends; a second of quiet banked no calls
        await anyio.wait_all_tasks_blocked()
        assert entered == []
        for _ in range(3):
            clock.advance(0.1)
            await anyio.wait_all_tasks_blocked()
    assert entered == pytest.approx([1.1, 1.2, 1.3])
