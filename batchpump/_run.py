"""``Run``: one submitted run, followed by the caller (wait, results, statistics, cancel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import final

import anyio

from ._engine import Engine, ResultSink, RunContext, RunStatistics
from ._errors import unwrap_group
from ._models import Result, ResultCounts, ShardRecord

__all__ = ["Run"]


@final
class Run:
    """One submitted run: wait for it, iterate its results, read its statistics."""

    def __init__(self, ctx: RunContext, sink: ResultSink, engine: Engine | None) -> None:
        self._ctx = ctx
        self._sink = sink
        self._engine = engine
        self._finished = anyio.Event()
        self._error: BaseException | None = None
        self._stopped_by: BaseException | None = None

    @property
    def id(self) -> str:
        return self._ctx.run.run_id

    @property
    def results_path(self) -> Path:
        return Path(self._ctx.run.out_path)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def statistics(self) -> RunStatistics:
        """A frozen snapshot of the run's progress."""
        return self._ctx.statistics()

    async def wait(self) -> ResultCounts:
        """Wait until every line has its final result; return the counts.

        Raises:
            BatchpumpError: what stopped the run (an ``AuthenticationError``, a journal error...).
                The run can be resumed once the cause is fixed.
        """
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        return self._ctx.run.counts

    async def results(self) -> AsyncIterator[Result]:
        """Every final result of the run, once each, as they are committed (from the start)."""
        async for result in self._sink.tail(0):
            yield result
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the run: nothing new is sent, in-flight batches are cancelled, lines settle."""
        if self._engine is not None:
            self._engine.cancel()

    def _stop(self, reason: BaseException) -> None:
        """Say why the run is about to be cancelled from outside (``wait`` raises ``reason``)."""
        self._stopped_by = reason

    async def _drive(self, shards: list[ShardRecord]) -> None:
        ctx = self._ctx
        try:
            if self._engine is not None:
                await self._engine.run(shards)
            ctx.run.state = "cancelled" if ctx.cancelled else "done"
            await ctx.journal.commit(run=ctx.run)
        except BaseException as exc:
            self._error = self._stopped_by or unwrap_group(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sink.finish()
            self._finished.set()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Run {self.id} {s.state} {s.results.total}/{s.total_lines} lines>"
