"""The engine's stages for a stream: shards keep arriving, the work never "ends".

A file run hands the engine every shard up front (``_engine.Engine``). A stream's run gets a
shard each time a segment is cut, for as long as the stream is open, so this wires the same
stages (``Submitter``, ``Poller``, ``Collector``: the same write-ahead intent, tag reconcile,
retries and requeues) around a submit queue that a *creator* feeds:

::

    cut segments ─▶ creator ─▶ submitters (N) ─▶ poller ─▶ collectors (M) ─▶ results file
                    (shard record                  ▲                            │
                     in the journal)               └──── retry attempts ◀───────┘

The creator commits the stream's store durably (every id accepted so far in its index: the
segment's file is removed once its shard is finished, and with it what a restart could read
back), then writes the segment's shard record to the journal, then forgets the segment in the
store, so after a crash a segment is made a shard exactly once: one the journal already has is
only forgotten. On open, the run's unfinished shard attempts are picked up as
``Engine.run`` does (batches in flight polled, the rest submitted).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, final

import anyio

from .._engine import Collector, Poller, Reconciler, ResultSink, RunContext, Submitter
from .._fileio import run_io
from .._models import BatchInfo, ShardRecord
from .log import Segment
from .store import StreamStore

__all__ = ["Pipeline", "leftover_files", "remove_files"]

logger: Final = logging.getLogger("batchpump.stream")

_FINISHED: Final = frozenset({"done", "requeued"})
_HAS_BATCH: Final = frozenset({"submitted", "collecting"})


@final
class Pipeline:
    """Creates, submits, polls and collects the shards of one stream's run.

    Args:
        ctx: the run's shared state.
        sink: the stream's results file.
        store: the stream's store (segments are forgotten there once they are shards).
        settle: commits the store durably (called before a segment becomes a shard).
    """

    def __init__(
        self,
        ctx: RunContext,
        sink: ResultSink,
        store: StreamStore,
        *,
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        self._ctx = ctx
        self._settle = settle
        self._sink = sink
        self._store = store
        self._to_submit, self._submit_queue = anyio.create_memory_object_stream[ShardRecord](
            math.inf
        )
        self._to_create, self._create_queue = anyio.create_memory_object_stream[Segment](math.inf)
        self.created = 0

    def close(self) -> None:
        """Close the queues (idempotent; ``serve`` closes them too)."""
        for end in (self._to_create, self._create_queue, self._to_submit, self._submit_queue):
            end.close()

    def cut(self, segment: Segment) -> None:
        """Hand a sealed segment to the creator (never blocks)."""
        self._to_create.send_nowait(segment)

    async def serve(self, shards: list[ShardRecord], known: set[int]) -> None:
        """Run the stages until cancelled.

        Args:
            shards: the run's shard attempts in the journal (unfinished ones are picked up).
            known: indexes of shards in the journal: sealed segments with one are only
                forgotten.
        """
        ctx = self._ctx
        ctx.started_at = ctx.clock.monotonic()
        # Batches tagged with this stream that the journal lacks (a create answered late
        # before a crash): adopt those an attempt needs before creating any, as a file run does.
        reconciler = Reconciler(ctx)
        await reconciler.sweep(shards, adopt=True)
        # Made after the sweep, whose await may be the last (a stream closed at once): every
        # queue made is closed below.
        to_collect, collect_queue = anyio.create_memory_object_stream[
            tuple[ShardRecord, BatchInfo]
        ](ctx.options.collect_concurrency)

        async def done(shard: ShardRecord, batch: BatchInfo) -> None:
            await to_collect.send((shard, batch))

        collector = Collector(ctx, self._sink, resubmit=self._resubmit)
        poller = Poller(ctx, on_done=done)
        submitter = Submitter(
            ctx,
            on_submitted=poller.add,
            on_failed=collector.fail,
            on_cancelled=collector.cancel,
            reconciler=reconciler,
        )
        # Each stage task gets its own clone of its queue, closed here too: a task cancelled
        # before its first step (a stream closed at once) never closes its own.
        submit_queues = [self._submit_queue.clone() for _ in range(ctx.options.submit_concurrency)]
        collect_queues = [collect_queue.clone() for _ in range(ctx.options.collect_concurrency)]
        with contextlib.ExitStack() as queues:
            queues.enter_context(self._to_create)
            queues.enter_context(self._to_submit)
            queues.enter_context(to_collect)
            for submit_queue in (self._submit_queue, *submit_queues):
                queues.enter_context(submit_queue)
            for done_queue in (collect_queue, *collect_queues):
                queues.enter_context(done_queue)
            async with anyio.create_task_group() as tg:
                for submit_queue in submit_queues:
                    tg.start_soon(submitter.serve, submit_queue)
                for done_queue in collect_queues:
                    tg.start_soon(collector.serve, done_queue)
                tg.start_soon(poller.serve)
                pending = [s for s in shards if s.state not in _FINISHED]
                ctx.opened(len(pending))
                for shard in pending:
                    if shard.state in _HAS_BATCH and shard.batch_id is not None:
                        ctx.budget.take(shard.model, shard.tokens)
                        await poller.add(shard, _adopted(shard))
                    else:
                        await self._resubmit(shard)
                await self._create(known)

    async def _resubmit(self, shard: ShardRecord) -> None:
        self._ctx.waiting += 1
        await self._to_submit.send(shard)

    async def _create(self, known: set[int]) -> None:
        ctx = self._ctx
        with self._create_queue:
            async for segment in self._create_queue:
                if segment.index in known:  # made a shard before a crash
                    await self._store.forget_segment(segment.index)
                    continue
                shard = ShardRecord(
                    run_id=ctx.run.run_id,
                    index=segment.index,
                    attempt=1,
                    path=str(segment.path),
                    lines=segment.lines,
                    bytes=segment.size,
                    model=None if segment.mixed else segment.model,
                    tokens=segment.body_bytes // 4,
                )
                await self._settle()
                ctx.run.total_lines += shard.lines
                await ctx.commit(shard, run=True)
                await self._store.forget_segment(segment.index)
                self.created += 1
                ctx.opened()
                await self._resubmit(shard)


def leftover_files(shards: list[ShardRecord]) -> list[Path]:
    """Files of finished attempts that no unfinished attempt uses (left by a crash between
    the commit that finished them and their removal)."""
    live = {s.path for s in shards if s.state not in _FINISHED}
    return [Path(s.path) for s in shards if s.state == "done" and s.path not in live]


async def remove_files(paths: list[Path]) -> None:
    """Remove files, missing ones included, off the event loop."""
    if paths:
        await run_io(_unlink_all, paths)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _adopted(shard: ShardRecord) -> BatchInfo:
    """What we know of a batch adopted from the journal until the first sweep reads it."""
    assert shard.batch_id is not None
    return BatchInfo(
        id=shard.batch_id,
        state=shard.batch_state or "pending",
        raw_status="unknown",
        created_at=shard.intent_at,
    )
