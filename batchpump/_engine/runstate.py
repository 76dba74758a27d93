"""What the engine's stages share for one run: its live state, token budget and journal commit.

The stages (submit, poll, collect) receive one ``RunContext``. It holds only protocols
(``Provider``, ``Journal``, ``Clock``), so the hot loop never imports aiohttp or sqlite3 and
benchmarks can drive it with in-memory fakes. ``RunStatistics`` is its frozen snapshot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

import anyio
import msgspec

from .._clock import Clock
from .._config import RunOptions
from .._models import BatchInfo, ResultCounts, RunRecord, ShardRecord
from .._provider import Provider

if TYPE_CHECKING:
    from .._journal import Journal

__all__ = ["RunContext", "RunStatistics", "TokenBudget"]

logger: Final = logging.getLogger("batchpump.engine")


class RunStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a run's progress (``Run.statistics()``)."""

    run_id: str
    state: str
    total_lines: int
    results: ResultCounts
    shards_waiting: int
    shards_in_flight: int
    shards_done: int
    batches_created: int
    retries: int
    requeues: int
    elapsed: float

    @property
    def done_lines(self) -> int:
        return self.results.total


@final
class TokenBudget:
    """Enqueued-token budget per model: ``acquire`` waits while a shard would exceed it.

    A shard larger than the whole budget still goes when nothing else of its model is in
    flight, so a run never deadlocks on one big shard.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight: dict[str | None, int] = {}
        self._changed = anyio.Condition()

    def in_flight(self, model: str | None) -> int:
        return self._in_flight.get(model, 0)

    async def acquire(self, model: str | None, tokens: int) -> None:
        if self.limit is None:
            self._in_flight[model] = self.in_flight(model) + tokens
            return
        async with self._changed:
            while self.in_flight(model) and self.in_flight(model) + tokens > self.limit:
                await self._changed.wait()
            self._in_flight[model] = self.in_flight(model) + tokens

    def take(self, model: str | None, tokens: int) -> None:
        """Count tokens already in flight (batches adopted on resume) without waiting."""
        self._in_flight[model] = self.in_flight(model) + tokens

    async def release(self, model: str | None, tokens: int) -> None:
        self._in_flight[model] = max(0, self.in_flight(model) - tokens)
        if self.limit is not None:
            async with self._changed:
                self._changed.notify_all()


@dataclass(eq=False)
class RunContext:
    """Everything the stages share for one run."""

    provider: Provider
    journal: Journal
    clock: Clock
    run: RunRecord
    options: RunOptions
    work_dir: anyio.Path
    budget: TokenBudget
    cancelled: bool = False
    started_at: float = 0.0
    batches_created: int = 0
    retries: int = 0
    requeues: int = 0
    open_attempts: int = 0
    shards_done: int = 0
    in_flight: dict[str, ShardRecord] = field(default_factory=dict)
    waiting: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)

    async def commit(self, *shards: ShardRecord, run: bool = False) -> None:
        """Write shard attempts (and the run record, if asked) in one transaction."""
        await self.journal.commit(run=self.run if run else None, shards=shards)

    async def commit_results(
        self, length: int, shards: list[ShardRecord], counts: ResultCounts
    ) -> None:
        """Record new results: the results file's length, the shards they settle, their counts,
        in one transaction (the ``ResultSink`` commit)."""
        self.run.out_offset = length
        self.run.counts.merge(counts)
        await self.commit(*shards, run=True)

    def opened(self, count: int = 1) -> None:
        self.open_attempts += count

    def closed(self) -> None:
        """One shard attempt reached ``done`` or ``requeued``; the run ends at zero."""
        self.open_attempts -= 1
        self.shards_done += 1
        if self.open_attempts <= 0:
            self.done.set()

    def batch_created(self, shard: ShardRecord, batch: BatchInfo) -> None:
        self.batches_created += 1
        logger.debug("shard %s attempt %s is batch %s", shard.index, shard.attempt, batch.id)

    def statistics(self) -> RunStatistics:
        counts = ResultCounts()
        counts.merge(self.run.counts)
        return RunStatistics(
            run_id=self.run.run_id,
            state="cancelling" if self.cancelled and not self.done.is_set() else self.run.state,
            total_lines=self.run.total_lines,
            results=counts,
            shards_waiting=self.waiting,
            shards_in_flight=len(self.in_flight),
            shards_done=self.shards_done,
            batches_created=self.batches_created,
            retries=self.retries,
            requeues=self.requeues,
            elapsed=self.clock.monotonic() - self.started_at,
        )
