"""The engine: one anyio task group per run, stages joined by memory streams.

::

    journal ─▶ feeder ─▶ submitters (N) ─▶ poller ─▶ collectors (M) ─▶ results file
                             ▲                            │
                             └──── retry attempts ◀───────┘

The submit queue is unbounded on purpose: it holds small ``ShardRecord`` objects (a run has at
most a few thousand), and collectors must never block on it while holding a finished batch,
or a tight token budget could deadlock submitters waiting for budget that only collectors
release. The poller -> collector stream is bounded by ``collect_concurrency``: a slow results
disk slows downloads, not memory.
"""

from __future__ import annotations

import logging
import math
from typing import Final, final

import anyio
from anyio.abc import ObjectReceiveStream

from .._errors import ConfigurationError, ProviderError, configuration_problem
from .._models import BatchInfo, ShardRecord
from .collect import Collector
from .poll import Poller
from .reconcile import Reconciler
from .results import ResultSink
from .runstate import RunContext
from .submit import Submitter

__all__ = ["Engine"]

logger: Final = logging.getLogger("batchpump.engine")

#: Shard states that still need work on resume, and the ones that already have a batch.
_FINISHED: Final = frozenset({"done", "requeued"})
_HAS_BATCH: Final = frozenset({"submitted", "collecting"})


@final
class Engine:
    """Drives every open shard attempt of one run to a final state."""

    def __init__(self, ctx: RunContext, sink: ResultSink) -> None:
        self.ctx = ctx
        self.sink = sink
        self.poller: Poller | None = None
        self.collector: Collector | None = None

    def cancel(self) -> None:
        """Stop submitting, cancel in-flight batches, settle every line (mostly ``Canceled``)."""
        self.ctx.cancelled = True
        if self.poller is not None:
            self.poller.wake()

    async def run(self, shards: list[ShardRecord]) -> None:
        """Work until every attempt in ``shards`` (and every retry it spawns) is settled."""
        ctx = self.ctx
        ctx.started_at = ctx.clock.monotonic()
        ctx.next_index = max((s.index for s in shards), default=-1) + 1
        reconciler = Reconciler(ctx)
        # Batches tagged with this run that the journal lacks (a lost state directory, a create
        # answered late before a crash): adopt those an attempt needs, before creating any.
        try:
            await reconciler.sweep(shards, adopt=True)
        except ProviderError as exc:  # the first call of a run: a wrong setting shows here
            if configuration_problem(exc):
                raise ctx.configuration_error(exc) from exc
            raise
        pending = [s for s in shards if s.state not in _FINISHED]
        if not pending:
            await reconciler.sweep(await ctx.journal.load_shards(ctx.run.run_id), adopt=False)
            return
        ctx.opened(len(pending))
        to_submit, submit_queue = anyio.create_memory_object_stream[ShardRecord](math.inf)
        to_collect, collect_queue = anyio.create_memory_object_stream[
            tuple[ShardRecord, BatchInfo]
        ](ctx.options.collect_concurrency)

        async def resubmit(shard: ShardRecord) -> None:
            ctx.waiting += 1
            await to_submit.send(shard)

        async def done(shard: ShardRecord, batch: BatchInfo) -> None:
            await to_collect.send((shard, batch))

        collector = self.collector = Collector(ctx, self.sink, resubmit=resubmit)
        poller = self.poller = Poller(ctx, on_done=done)
        submitter = Submitter(
            ctx,
            on_submitted=poller.add,
            on_failed=collector.fail,
            on_cancelled=collector.cancel,
            reconciler=reconciler,
        )
        stopped: list[ConfigurationError] = []

        async def submit(shards: ObjectReceiveStream[ShardRecord]) -> None:
            try:
                await submitter.serve(shards)
            except ConfigurationError as exc:  # every shard would fail so: stop the run once
                stopped.append(exc)
                tg.cancel_scope.cancel()

        with to_submit, submit_queue, to_collect, collect_queue:
            async with anyio.create_task_group() as tg:
                for _ in range(ctx.options.submit_concurrency):
                    tg.start_soon(submit, submit_queue.clone())
                for _ in range(ctx.options.collect_concurrency):
                    tg.start_soon(collector.serve, collect_queue.clone())
                tg.start_soon(poller.serve)
                for shard in pending:
                    if shard.state in _HAS_BATCH and shard.batch_id is not None:
                        ctx.budget.take(shard.model, shard.tokens)
                        await poller.add(shard, _placeholder(shard))
                    else:
                        await resubmit(shard)
                await ctx.done.wait()
                tg.cancel_scope.cancel()
        if stopped:
            raise stopped[0]
        # Creates answered too late to be adopted left duplicates: cancel and report them.
        await reconciler.sweep(await ctx.journal.load_shards(ctx.run.run_id), adopt=False)


def _placeholder(shard: ShardRecord) -> BatchInfo:
    """What we know of a batch adopted from the journal until the first sweep reads it."""
    assert shard.batch_id is not None
    return BatchInfo(
        id=shard.batch_id,
        state=shard.batch_state or "pending",
        raw_status="unknown",
        created_at=shard.intent_at,
    )
