"""The poller's interval: growth while quiet, short again near a batch's deadline.

Rules: no sockets and no real waiting. ``JumpClock.sleep`` moves its clock forward at once, so
the poller runs through hours of sweeps in a few milliseconds and every sweep's clock time is
exact; the provider records when each sweep happened.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
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

POLICY = PollPolicy(interval_min=2.0, interval_max=60.0)
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


def _context(provider: QuietProvider, tmp_path: Path) -> RunContext:
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
        options=RunOptions(poll=POLICY),
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
    provider: QuietProvider, tmp_path: Path, *, expires_in: float | None
) -> tuple[list[float], list[float]]:
    """Track one batch until it is done or ``provider.stop_after`` sweeps ran.

    Returns the sweep times and the times ``on_done`` was called (monotonic clock seconds)."""
    done_at: list[float] = []
    finished = anyio.Event()

    async def on_done(shard: ShardRecord, info: BatchInfo) -> None:
        done_at.append(provider.clock.monotonic())
        finished.set()

    poller = Poller(_context(provider, tmp_path), on_done=on_done)
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
    assert gaps[0] == pytest.approx(POLICY.interval_min * 1.5)
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
