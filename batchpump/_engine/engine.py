"""The engine: one anyio task group per run, stages joined by memory streams.

::

    journal ─▶ feeder ─▶ submitters (N) ─▶ poller ─▶ collectors (M) ─▶ results file
                             ▲                            │
                             └──── retry attempts ◀───────┘

With several workers on one run (``AttemptClaims``, given by the caller: the engine knows no
database), the journal's open attempts are not handed over at the start: a *feeder* keeps up
to ``2 * submit_concurrency`` claimed attempts waiting for (or in) a create and claims more as
they are created or settle (or every ``wait_seconds`` while other workers hold the rest, to
take over a claim that lapses). Attempts with a batch do not count against that bound.
Retries that collectors spawn go back to the pool, claimable by any worker. The run ends for
this worker when nothing is left to claim, no other worker holds an open attempt, and every
attempt it claimed is settled.

The submit queue is unbounded on purpose: it holds small ``ShardRecord`` objects (a run has at
most a few thousand), and collectors must never block on it while holding a finished batch,
or a tight token budget could deadlock submitters waiting for budget that only collectors
release. The poller -> collector stream is bounded by ``collect_concurrency``: a slow results
disk slows downloads, not memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, Protocol, final

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

__all__ = ["AttemptClaims", "Engine"]

logger: Final = logging.getLogger("batchpump.engine")

#: Shard states that still need work on resume, and the ones that already have a batch.
_FINISHED: Final = frozenset({"done", "requeued"})
_HAS_BATCH: Final = frozenset({"submitted", "collecting"})


class AttemptClaims(Protocol):
    """Where a worker sharing a run takes its shard attempts from (``_workers`` implements it
    on a PostgreSQL journal)."""

    @property
    def wait_seconds(self) -> float:
        """Clock seconds between claims while other workers hold every open attempt."""
        ...

    async def claim(self, limit: int) -> tuple[list[ShardRecord], int]:
        """Claim up to ``limit`` open attempts nobody holds; return them (as the journal holds
        them) and how many open attempts of the run are left that this worker does not hold."""
        ...


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

    async def run(self, shards: list[ShardRecord], claims: AttemptClaims | None = None) -> None:
        """Work until every attempt in ``shards`` (and every retry it spawns) is settled; with
        ``claims``, until every attempt of the run is (``shards`` is then ignored: attempts
        come from ``claims``, and ``ctx.next_index`` must be set to indexes of this worker's
        own for the halves of split shards)."""
        ctx = self.ctx
        ctx.started_at = ctx.clock.monotonic()
        reconciler = Reconciler(ctx)
        if claims is None:
            ctx.next_index = max((s.index for s in shards), default=-1) + 1
            # Batches tagged with this run that the journal lacks (a lost state directory, a
            # create answered late before a crash): adopt those an attempt needs, before
            # creating any. (Claimed attempts are looked for one by one: a submitter finds an
            # attempt left ``creating`` by its tag before it creates.)
            try:
                await reconciler.sweep(shards, adopt=True)
            except ProviderError as exc:  # the first call of a run: a wrong setting shows here
                if configuration_problem(exc):
                    raise ctx.configuration_error(exc) from exc
                raise
        pending = [s for s in shards if s.state not in _FINISHED] if claims is None else []
        if not pending and claims is None:
            await reconciler.sweep(await ctx.journal.load_shards(ctx.run.run_id), adopt=False)
            return
        ctx.feeding = claims is not None
        ctx.opened(len(pending))
        to_submit, submit_queue = anyio.create_memory_object_stream[ShardRecord](math.inf)
        to_collect, collect_queue = anyio.create_memory_object_stream[
            tuple[ShardRecord, BatchInfo]
        ](ctx.options.collect_concurrency)

        async def resubmit(shard: ShardRecord) -> None:
            ctx.waiting += 1
            await to_submit.send(shard)

        async def release(shard: ShardRecord) -> None:
            # A retry a collector spawned: committed unclaimed, any worker's feeder claims it.
            ctx.open_attempts -= 1
            ctx.freed.set()

        async def dispatch(shard: ShardRecord) -> None:
            if shard.state in _HAS_BATCH and shard.batch_id is not None:
                ctx.budget.take(shard.model, shard.tokens)
                await poller.add(shard, _placeholder(shard))
            else:
                await resubmit(shard)

        async def done(shard: ShardRecord, batch: BatchInfo) -> None:
            await to_collect.send((shard, batch))

        collector = self.collector = Collector(
            ctx, self.sink, resubmit=resubmit if claims is None else release
        )
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
                if claims is not None:
                    tg.start_soon(self._feed, claims, dispatch)
                for shard in pending:
                    await dispatch(shard)
                await ctx.done.wait()
                tg.cancel_scope.cancel()
        if stopped:
            raise stopped[0]
        # Creates answered too late to be adopted left duplicates: cancel and report them.
        await reconciler.sweep(await ctx.journal.load_shards(ctx.run.run_id), adopt=False)

    async def _feed(
        self, claims: AttemptClaims, dispatch: Callable[[ShardRecord], Awaitable[None]]
    ) -> None:
        """Claim attempts while this worker has room for them; end the run when none is left
        open anywhere and this worker's own are settled."""
        ctx = self.ctx
        bound = 2 * ctx.options.submit_concurrency
        while True:
            ctx.freed = anyio.Event()
            # Only attempts not yet brought to a batch count: those with a batch cost this
            # worker a line in its sweeps, and leaving them unclaimed would only hold the run
            # back (a run of a thousand shards must not go in waves of ``bound``).
            room = bound - ctx.waiting - ctx.submitting
            if room > 0:
                claimed, elsewhere = await claims.claim(room)
                ctx.opened(len(claimed))
                for shard in claimed:
                    await dispatch(shard)
                if not claimed and elsewhere == 0 and ctx.open_attempts <= 0:
                    ctx.done.set()
                    return
                if claimed and (len(claimed) == room or elsewhere):
                    continue  # more may be free: claim again at once (room is counted anew)
            await _first_of(ctx.freed, partial(ctx.clock.sleep, claims.wait_seconds))


async def _first_of(event: anyio.Event, timer: Callable[[], Awaitable[None]]) -> None:
    """Wait until ``event`` is set or ``timer()`` ends."""
    async with anyio.create_task_group() as tg:

        async def wait_event() -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        async def wait_timer() -> None:
            await timer()
            tg.cancel_scope.cancel()

        tg.start_soon(wait_event)
        tg.start_soon(wait_timer)


def _placeholder(shard: ShardRecord) -> BatchInfo:
    """What we know of a batch adopted from the journal until the first sweep reads it."""
    assert shard.batch_id is not None
    return BatchInfo(
        id=shard.batch_id,
        state=shard.batch_state or "pending",
        raw_status="unknown",
        created_at=shard.intent_at,
    )
