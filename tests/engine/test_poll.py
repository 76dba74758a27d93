"""The poller's schedule: eager after a create, in proportion to age while quiet, just after a
predicted finish, short again near a batch's deadline, and within its share of time.

Rules: no sockets and no real waiting. ``JumpClock.sleep`` moves its clock forward at once, so
the poller runs through hours of sweeps in a few milliseconds and every sweep's clock time is
exact; the provider records when each sweep happened.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from batchpump import BatchInfo, MemoryJournal, PollPolicy, RunOptions
from batchpump._engine import Poller, RunContext, TokenBudget, deadline_cap
from batchpump._models import RunRecord, ShardRecord

from ..fakes import FakeBatch, FakeProvider

pytestmark = pytest.mark.timeout(30)

#: The deadline rule alone: no latency bound below interval_max, so quiet gaps double to it.
POLICY = PollPolicy(interval_min=2.0, interval_max=60.0, latency_share=0.0, latency_floor=60.0)
START = 1_700_000_000.0
EPS = 1e-9


class JumpClock:
    """A clock whose ``sleep`` returns at once, having moved the clock by the time asked."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return START + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


@dataclass
class QuietProvider(FakeProvider):
    """A ``FakeProvider`` whose batches keep their state until their ``expires_at``, then expire
    (or, with ``late``, keep running past it: a provider slow to flag the expiry)."""

    clock: JumpClock = field(default_factory=JumpClock)
    late: bool = False
    #: the clock's monotonic time at each list sweep.
    sweeps: list[float] = field(default_factory=list)
    swept: anyio.Event = field(default_factory=anyio.Event)
    stop_after: int = 1_000

    def _read(self, batch: FakeBatch) -> BatchInfo:
        info = batch.info
        expired = info.expires_at is not None and self.clock.time() >= info.expires_at
        if expired and not self.late:
            info = msgspec.structs.replace(
                info, state="expired", raw_status="expired", output_ref=f"out-{info.id}"
            )
            batch.info = info
        return info

    async def retrieve(self, batch_id: str) -> BatchInfo:
        self.calls["retrieve"] += 1
        return self._read(self.batches[batch_id])

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        self.calls["list"] += 1
        self.sweeps.append(self.clock.monotonic())
        if len(self.sweeps) >= self.stop_after:
            self.swept.set()
        for batch in sorted(self.batches.values(), key=lambda b: -b.info.created_at):
            yield self._read(batch)


def _context(provider: QuietProvider, tmp_path: Path, policy: PollPolicy = POLICY) -> RunContext:
    run = RunRecord(
        run_id="run-poll",
        provider=provider.name,
        base_url=provider.base_url,
        endpoint="/v1/chat/completions",
        input_path=str(tmp_path / "in.jsonl"),
        out_path=str(tmp_path / "in.results.jsonl"),
        created_at=START,
    )
    return RunContext(
        provider=provider,
        journal=MemoryJournal(),
        clock=provider.clock,
        run=run,
        options=RunOptions(poll=policy),
        work_dir=anyio.Path(tmp_path),
        budget=TokenBudget(None),
    )


def _batch(provider: QuietProvider, *, expires_in: float | None) -> tuple[ShardRecord, BatchInfo]:
    """A running batch, created now, whose window ends ``expires_in`` seconds from now."""
    now = provider.clock.time()
    info = BatchInfo(
        id="batch_1",
        state="running",
        raw_status="in_progress",
        created_at=now,
        total=10,
        expires_at=None if expires_in is None else now + expires_in,
    )
    provider.batches[info.id] = FakeBatch(info, [f"req-{i}" for i in range(10)])
    shard = ShardRecord(run_id="run-poll", index=0, attempt=1, path="unused", lines=10, bytes=0)
    return shard, info


async def _poll(
    provider: QuietProvider,
    tmp_path: Path,
    *,
    expires_in: float | None,
    policy: PollPolicy = POLICY,
) -> tuple[list[float], list[float]]:
    """Track one batch until it is done or ``provider.stop_after`` sweeps ran.

    Returns the sweep times and the times ``on_done`` was called (monotonic clock seconds)."""
    done_at: list[float] = []
    finished = anyio.Event()

    async def on_done(shard: ShardRecord, info: BatchInfo) -> None:
        done_at.append(provider.clock.monotonic())
        finished.set()

    poller = Poller(_context(provider, tmp_path, policy), on_done=on_done)
    await poller.add(*_batch(provider, expires_in=expires_in))
    with anyio.fail_after(10):  # a guard against a hang, never reached when the test passes
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.serve)

            async def stop_on_done() -> None:
                await finished.wait()
                provider.swept.set()

            tg.start_soon(stop_on_done)
            await provider.swept.wait()
            tg.cancel_scope.cancel()
    return provider.sweeps, done_at


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(times)]


def _growing(values: list[float]) -> bool:
    return all(b >= a - EPS for a, b in pairwise(values))


def _shrinking(values: list[float]) -> bool:
    return all(b <= a + EPS for a, b in pairwise(values))


# --- the rule, as a function ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadlines", "expected"),
    [
        ([], 60.0),  # no deadline known
        ([None], 60.0),  # a provider without expires_at
        ([START + 86_400], 60.0),  # a day away
        ([START + 240], 60.0),  # "near" starts at 4 * interval_max
        ([START + 100], 25.0),  # a quarter of the time left
        ([START + 8], 2.0),  # interval_min from 4 * interval_min before...
        ([START + 1], 2.0),  # ...never below it...
        ([START], 2.0),  # ...at the deadline...
        ([START - 5], 2.0),  # ...and just past it
        ([START - 100], 25.0),  # relaxes again past it
        ([START - 3_600], 60.0),  # a provider slow to flag the expiry is polled at the max
        ([START + 86_400, None, START + 40, START - 3_600], 10.0),  # the nearest one counts
    ],
)
def test_deadline_cap(deadlines: list[float | None], expected: float) -> None:
    assert deadline_cap(POLICY, deadlines, START) == pytest.approx(expected)


def test_deadline_cap_never_below_interval_min_nor_above_max() -> None:
    policy = PollPolicy(interval_min=5.0, interval_max=7.0)
    for offset in (-1e6, -30.0, -1.0, -1e-9, 0.0, 1e-9, 1.0, 30.0, 1e6):
        cap = deadline_cap(policy, [START + offset], START)
        assert policy.interval_min <= cap <= policy.interval_max


# --- the poller, sweep by sweep ------------------------------------------------------------


async def test_interval_grows_while_quiet_far_from_the_deadline(tmp_path: Path) -> None:
    provider = QuietProvider(stop_after=14)
    sweeps, done_at = await _poll(provider, tmp_path, expires_in=24 * 3600.0)
    gaps = _gaps(sweeps[:14])
    assert not done_at
    assert gaps[:6] == pytest.approx([2.0, 2.0, 4.0, 8.0, 16.0, 32.0])  # doubling from the create
    assert _growing(gaps), gaps
    assert gaps[-3:] == pytest.approx([POLICY.interval_max] * 3)


async def test_interval_grows_when_the_batch_has_no_deadline(tmp_path: Path) -> None:
    provider = QuietProvider(stop_after=14)
    sweeps, _ = await _poll(provider, tmp_path, expires_in=None)
    assert _gaps(sweeps[:14])[-3:] == pytest.approx([POLICY.interval_max] * 3)


async def test_interval_returns_to_min_near_the_deadline(tmp_path: Path) -> None:
    deadline = 1_800.0  # monotonic clock time of expires_at (the clock starts at 0)
    provider = QuietProvider()
    sweeps, done_at = await _poll(provider, tmp_path, expires_in=deadline)
    gaps = _gaps(sweeps)
    # Far from the deadline the poller settled at interval_max...
    far = [g for t, g in zip(sweeps, gaps, strict=False) if t + g <= deadline - 4 * 60.0]
    assert far[-1] == pytest.approx(POLICY.interval_max)
    # ...then every gap shrank as the deadline came near, down to interval_min...
    near = [g for t, g in zip(sweeps, gaps, strict=False) if t >= deadline - 4 * 60.0]
    assert _shrinking(near), near
    assert near[-1] == pytest.approx(POLICY.interval_min)
    # ...never below it...
    assert min(gaps) >= POLICY.interval_min - EPS
    # ...so the expiry was seen within interval_min of the deadline, not up to a minute late.
    assert done_at == [sweeps[-1]]
    assert deadline <= done_at[0] <= deadline + POLICY.interval_min + EPS
    assert len(sweeps) < 100


async def test_interval_relaxes_after_the_deadline_passes(tmp_path: Path) -> None:
    """A batch the provider leaves running past its deadline is not polled at the floor forever."""
    provider = QuietProvider(stop_after=60, late=True)
    sweeps, done_at = await _poll(provider, tmp_path, expires_in=300.0)
    assert not done_at
    gaps = _gaps(sweeps[:60])
    assert min(gaps) == pytest.approx(POLICY.interval_min)  # short around the deadline...
    after = [g for t, g in zip(sweeps, gaps, strict=False) if t > 300.0 + 8.0]
    assert after, gaps  # ...then longer and longer past it
    assert _growing(after), after
    assert after[-1] == pytest.approx(POLICY.interval_max)
    assert min(gaps) >= POLICY.interval_min - EPS


# --- eager and predictive sweeps (the default policy) -----------------------------------------


@dataclass
class TimedProvider(QuietProvider):
    """A ``QuietProvider`` whose one batch runs on the clock: ``running`` from ``start`` to
    ``run_end`` with ``completed`` growing linearly (unless ``counts`` is off), ``finalizing``
    until ``done``, then ``completed``. ``list_cost`` clock seconds pass during each list."""

    start: float = 0.0
    run_end: float = 0.0
    done: float = 0.0
    counts: bool = True
    list_cost: float = 0.0
    lines: int = 1_000

    def _read(self, batch: FakeBatch) -> BatchInfo:
        t = self.clock.monotonic()
        total = self.lines
        if t >= self.done:
            info = msgspec.structs.replace(
                batch.info, state="completed", raw_status="completed", output_ref="out"
            )
        elif t >= self.run_end:
            info = msgspec.structs.replace(batch.info, state="finalizing", raw_status="finalizing")
        else:
            frac = max(0.0, (t - self.start) / (self.run_end - self.start))
            info = msgspec.structs.replace(batch.info, state="running", raw_status="in_progress")
            if self.counts:
                info = msgspec.structs.replace(info, completed=int(total * frac), total=total)
        if self.counts and t >= self.run_end:
            info = msgspec.structs.replace(info, completed=total, total=total)
        batch.info = info
        return info

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        await self.clock.sleep(self.list_cost)
        async with aclosing(super().list_batches()) as batches:
            async for info in batches:
                yield info


async def _detect(provider: TimedProvider, tmp_path: Path) -> tuple[list[float], float]:
    """Poll one batch of ``provider`` with the default policy; sweep times and the delay from
    its completion to ``on_done``."""
    provider.stop_after = 100_000
    sweeps, done_at = await _poll(provider, tmp_path, expires_in=None, policy=PollPolicy())
    assert len(done_at) == 1
    return sweeps, done_at[0] - provider.done


async def test_a_new_batch_is_swept_eagerly_then_in_proportion_to_its_age(
    tmp_path: Path,
) -> None:
    provider = TimedProvider(start=1.0, run_end=7200.0, done=7201.0, counts=False)
    sweeps, delay = await _detect(provider, tmp_path)
    gaps = _gaps(sweeps)
    assert sweeps[:6] == pytest.approx([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])  # 0.5 s, then each second
    for at, gap in zip(sweeps, gaps, strict=False):  # later: 1 % of the age, at most a minute
        assert gap <= max(1.0, min(0.01 * at, 60.0)) + EPS, (at, gap)
    assert gaps[-1] == pytest.approx(60.0)  # age 2 h: interval_max
    # Without progress counters, the latency bound alone: seen within 1 % of its age.
    assert 0.0 <= delay <= 0.01 * provider.done + EPS


async def test_growing_counts_predict_the_finish_of_an_hour_long_batch(tmp_path: Path) -> None:
    provider = TimedProvider(start=2.0, run_end=3598.0, done=3600.0)
    sweeps, delay = await _detect(provider, tmp_path)
    blind = TimedProvider(start=2.0, run_end=3598.0, done=3600.0, counts=False)
    blind_sweeps, blind_delay = await _detect(blind, tmp_path)
    # The counters say when the lines are done (to within a line's time): a sweep follows,
    # then sweeps back off from it by doubling through the (unknown) finalizing time.
    assert any(0 <= t - provider.run_end <= 1.0 for t in sweeps)
    assert 0.0 <= delay <= 1.0
    assert blind_delay > 1.0  # the age bound alone (36 s) would have been later
    assert len(sweeps) <= len(blind_sweeps) + 10  # and the prediction cost a few sweeps


async def test_a_thirty_second_batch_is_seen_within_a_second(tmp_path: Path) -> None:
    provider = TimedProvider(start=1.0, run_end=29.0, done=30.0)
    _, delay = await _detect(provider, tmp_path)
    assert 0.0 <= delay <= 1.0


async def test_sweeps_take_at_most_their_share_of_time(tmp_path: Path) -> None:
    """Each list takes 2 s of the clock; sweep_share 0.25 leaves 6 s of rest after it."""
    provider = TimedProvider(start=1.0, run_end=100.0, done=101.0, list_cost=2.0, stop_after=12)
    policy = PollPolicy(sweep_share=0.25)
    sweeps, _ = await _poll(provider, tmp_path, expires_in=None, policy=policy)
    starts = [t - provider.list_cost for t in sweeps]  # the provider records after its cost
    assert all(gap >= 8.0 - EPS for gap in _gaps(starts)), _gaps(starts)
    busy = provider.list_cost * len(starts)
    assert busy / (starts[-1] + provider.list_cost - starts[0]) <= 0.25 + 0.25 / len(starts)


@dataclass
class DueProvider(QuietProvider):
    """Batches complete at fixed clock times (``due``: batch id -> monotonic time)."""

    due: dict[str, float] = field(default_factory=dict)

    def _read(self, batch: FakeBatch) -> BatchInfo:
        if self.clock.monotonic() >= self.due[batch.info.id] and not batch.info.terminal:
            batch.info = msgspec.structs.replace(
                batch.info, state="completed", raw_status="completed", output_ref="out"
            )
        return batch.info


async def test_a_slow_hand_off_does_not_count_as_sweep_time(tmp_path: Path) -> None:
    """Handing batch 1 to a collector waits 30 s (all collectors busy); that wait is not the
    provider's time, so it earns no rest: batch 2 is still seen within the latency bound."""
    provider = DueProvider(due={"batch_1": 10.0, "batch_2": 50.0})
    poller_ctx = _context(provider, tmp_path, PollPolicy())
    seen: dict[str, float] = {}
    both = anyio.Event()

    async def on_done(shard: ShardRecord, info: BatchInfo) -> None:
        if info.id == "batch_1":
            await provider.clock.sleep(30.0)
        seen[info.id] = provider.clock.monotonic()
        if len(seen) == 2:
            both.set()

    poller = Poller(poller_ctx, on_done=on_done)
    for n in (1, 2):
        info = BatchInfo(
            id=f"batch_{n}", state="running", raw_status="in_progress", created_at=START
        )
        provider.batches[info.id] = FakeBatch(info, ["r"])
        shard = ShardRecord(run_id="run-poll", index=n, attempt=1, path="-", lines=1, bytes=0)
        await poller.add(shard, info)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.serve)
            await both.wait()
            tg.cancel_scope.cancel()
    assert 40.0 <= seen["batch_1"] <= 41.0 + EPS  # seen by 11 s, handed off 30 s later
    assert 50.0 <= seen["batch_2"] <= 51.0 + EPS  # within 1 s (its age is 50 s)
