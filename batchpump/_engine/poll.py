"""The poller: one list sweep refreshes every in-flight batch of a run.

Polling batches one by one burns the rate limit (10,000 batches x one GET every few seconds).
A sweep instead walks ``Provider.list_batches()`` newest first and stops as soon as every
in-flight batch was seen or the walk is older than the oldest of them; a batch the walk missed
is read on its own. Since one sweep costs about one request per hundred batches, sweeping
early and often is cheap, and the poller uses that to see each batch finish as soon as it can.

When to sweep next is planned after each sweep (``predict.plan``): soon after a create, then
within ``max(latency_floor, latency_share * age)`` of every tracked batch, and just after the
earliest finish its progress (or the run's finished batches) predicts. An ``add`` wakes the
poller at once (never sooner than ``interval_min`` after the last sweep started).

Two bounds apply on top. **Cost**: a sweep that took ``T`` seconds is followed by a rest of at
least ``T * (1 - sweep_share) / sweep_share``: the pages of a sweep go one after another through
the poll class's rate gate, so sweeps use at most ``sweep_share`` of that class's rate, known or
learned. **Deadlines**: a batch's deadline is its ``BatchInfo.expires_at`` (the provider's end
of the completion window; batches without one have no known deadline). After each sweep the
interval is capped at ``DEADLINE_SHARE`` (a quarter) of the time between now and the tracked
deadline nearest to now, before or after it, and never below ``interval_min``. So "near" means
within ``4 * interval_max`` of a deadline: sweeps close in on it geometrically, run at
``interval_min`` within ``4 * interval_min`` either side, and relax again past it, so a provider
slow to flag the expiry is not polled at the floor forever. ``expires_at`` is epoch seconds, so
it is compared with ``ctx.clock.time()`` (the run clock's wall time: the system clock, or the
fake one tests and the emulator share), never with ``monotonic()``; a provider's clock skew
only shifts the short stretch by that skew.

Terminal batches are handed to the collectors in the order a sweep sees them. Two provider
behaviours are not trusted: ``completed`` with no result file at all (re-read for
``missing_output_grace`` before its lines count as unfinished) and a batch stuck in
``finalizing`` past ``finalizing_timeout`` (cancelled where the provider can, then collected
like any cancelled batch). A cancel request that fails is sent again at the next sweep; a batch
still ``cancelling`` after ``cancelling_timeout`` is reported and collected as cancelled, not
polled forever.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final, final

import anyio

from .._config import PollPolicy
from .._models import BatchInfo, ShardRecord
from .predict import Progress, RunHistory, plan
from .runstate import RunContext

__all__ = ["Poller"]

logger: Final = logging.getLogger("batchpump.poll")

#: A sweep walks this many seconds past the oldest in-flight batch's creation time before it
#: gives up on the list and reads the missing batches one by one.
SWEEP_SLACK: Final = 120.0
#: Near a deadline the interval is at most this share of the time to (or since) it.
DEADLINE_SHARE: Final = 0.25

BatchDone = Callable[[ShardRecord, BatchInfo], Awaitable[None]]


@dataclass(eq=False)
class _Tracked:
    shard: ShardRecord
    info: BatchInfo
    progress: Progress
    finalizing_since: float | None = None
    empty_since: float | None = None
    cancel_sent: bool = False
    cancelling_since: float | None = None


@final
class Poller:
    """Keeps every in-flight batch of a run fresh and hands terminal ones to ``on_done``."""

    def __init__(self, ctx: RunContext, *, on_done: BatchDone) -> None:
        self._ctx = ctx
        self._on_done = on_done
        self._tracked: dict[str, _Tracked] = {}
        self._wake = anyio.Event()
        self._history = RunHistory()
        self.sweeps = 0
        self.retrieves = 0
        #: How long the last sweep spent on the provider (clock seconds; not counting the
        #: hand-offs to collectors, which wait while every collector is busy).
        self.sweep_seconds = 0.0
        self._handing = 0.0

    def wake(self) -> None:
        """Sweep now (the run was cancelled, or a batch was added)."""
        self._wake.set()

    def __len__(self) -> int:
        return len(self._tracked)

    async def add(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """Track a newly created (or adopted) batch."""
        progress = Progress(added=self._ctx.clock.monotonic())
        self._tracked[batch.id] = _Tracked(shard, batch, progress)
        self._ctx.in_flight[batch.id] = shard
        self._wake.set()

    async def serve(self) -> None:
        """Sweep until cancelled by the engine (which does so once the run is done)."""
        clock = self._ctx.clock
        while True:
            if not self._tracked:
                await self._wake.wait()
            self._wake = anyio.Event()
            started = clock.monotonic()
            self._handing = 0.0
            await self.sweep()
            ended = clock.monotonic()
            self.sweep_seconds = ended - started - self._handing
            await self._nap(started, self.next_sweep(started, ended, busy=self.sweep_seconds))

    def next_sweep(self, started: float, ended: float, *, busy: float) -> float:
        """The monotonic time of the sweep after one that ran from ``started`` to ``ended``
        and spent ``busy`` seconds of it on the provider: the plan (latency, predictions), the
        deadline cap, then the cost bound."""
        policy = self._ctx.options.poll
        at = plan(
            policy, (t.progress for t in self._tracked.values()), self._history, swept_at=started
        )
        deadlines = (t.info.expires_at for t in self._tracked.values())
        at = min(at, started + deadline_cap(policy, deadlines, self._ctx.clock.time()))
        rest = max(0.0, busy) * (1.0 - policy.sweep_share) / policy.sweep_share
        return max(at, ended + rest)

    async def _nap(self, started: float, until: float) -> None:
        """Sleep until ``until``; an ``add`` cuts it short, but never below ``interval_min``."""
        clock, policy = self._ctx.clock, self._ctx.options.poll
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def wake() -> None:
                    await self._wake.wait()
                    scope.cancel()

                tg.start_soon(wake)
                await clock.sleep(until - clock.monotonic())
                scope.cancel()
        rest = policy.interval_min - (clock.monotonic() - started)
        if rest > 0:
            await clock.sleep(rest)

    async def sweep(self) -> bool:
        """Refresh every tracked batch once; return whether any changed state."""
        if not self._tracked:
            return False
        self.sweeps += 1
        provider = self._ctx.provider
        missing = set(self._tracked)
        changed = False
        if provider.capabilities.list_batches:
            oldest = min(t.info.created_at for t in self._tracked.values()) - SWEEP_SLACK
            async with aclosing(provider.list_batches()) as batches:
                async for info in batches:
                    if info.id in missing:
                        missing.discard(info.id)
                        changed |= await self._update(info)
                        if not missing:
                            break
                    if info.created_at < oldest:
                        break
        for batch_id in missing:
            if batch_id in self._tracked:
                self.retrieves += 1
                changed |= await self._update(await provider.retrieve(batch_id))
        await self._chase()
        return changed

    async def _update(self, info: BatchInfo) -> bool:
        tracked = self._tracked[info.id]
        changed = info.state != tracked.info.state or info.completed != tracked.info.completed
        tracked.info = info
        self._ctx.batch_progress(tracked.shard, info)
        now = self._ctx.clock.monotonic()
        tracked.progress.observe(info, now=now, wall=self._ctx.clock.time())
        policy = self._ctx.options.poll
        if info.state == "finalizing":
            tracked.finalizing_since = tracked.finalizing_since or now
        if info.state == "cancelling":
            tracked.cancelling_since = tracked.cancelling_since or now
            if now - tracked.cancelling_since > policy.cancelling_timeout:
                info = self._ctx.gave_up_cancelling(info)
        if info.terminal:
            if _no_result_files(info):
                tracked.empty_since = tracked.empty_since or now
                if now - tracked.empty_since < policy.missing_output_grace:
                    logger.warning("batch %s is completed with no result file; re-reading", info.id)
                    return changed
            del self._tracked[info.id]
            self._ctx.in_flight.pop(info.id, None)
            if info.state == "completed":
                self._history.finished(tracked.progress, now=now)
            handing = self._ctx.clock.monotonic()
            await self._on_done(tracked.shard, info)
            self._handing += self._ctx.clock.monotonic() - handing
            return True
        return changed

    async def _chase(self) -> None:
        """Cancel what must stop: every batch of a cancelled run, and stuck finalizers."""
        ctx = self._ctx
        if not ctx.provider.capabilities.cancel:
            return
        now = ctx.clock.monotonic()
        timeout = ctx.options.poll.finalizing_timeout
        for tracked in list(self._tracked.values()):
            if tracked.cancel_sent or tracked.info.state in ("cancelling", "cancelled"):
                continue
            stuck = (
                tracked.finalizing_since is not None and now - tracked.finalizing_since > timeout
            )
            if ctx.cancelled or stuck:
                if stuck:
                    logger.warning("batch %s stuck in finalizing; cancelling it", tracked.info.id)
                if (info := await ctx.request_cancel(tracked.info)) is not None:
                    tracked.cancel_sent = True
                    tracked.info = info


def deadline_cap(policy: PollPolicy, deadlines: Iterable[float | None], now: float) -> float:
    """The longest interval the deadline nearest to ``now`` allows (epoch seconds, ``None``
    for unknown): ``DEADLINE_SHARE`` of the time to or since it, within the policy's bounds."""
    gap = min((abs(d - now) for d in deadlines if d is not None), default=math.inf)
    return max(policy.interval_min, min(policy.interval_max, gap * DEADLINE_SHARE))


def _no_result_files(info: BatchInfo) -> bool:
    """``completed`` with lines done but neither file: a provider glitch users report."""
    return (
        info.state == "completed"
        and info.output_ref is None
        and info.error_ref is None
        and (info.completed > 0 or info.failed > 0 or info.total > 0)
    )
