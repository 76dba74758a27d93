"""Collectors: stream a finished batch's results, join them by ``custom_id``, decide each line.

For every line of the shard attempt exactly one of these happens:

- a final result (``Succeeded``, a non-retryable ``Errored``, or anything on the last allowed
  try) is written to the results file;
- the line goes into the next attempt of the shard (retryable errors, and the unfinished lines
  of expired or cancelled batches), written as a new shard file of the original line bytes.

A line the provider never reported counts as unfinished. A result for an unknown or already
joined ``custom_id`` is ignored (and counted), so a provider bug cannot produce a second result.
The part file, the new attempt and the results-file length are committed together.

Two provider answers never loop forever. A result file with malformed lines is downloaded again
up to ``MALFORMED_DOWNLOADS`` times, then each such line is settled as ``Errored``
(``code="malformed_output"``). A batch failed by a queue or enqueued-token limit is requeued
with backoff, and the token budget learns to keep that model below what was in flight; when
nothing else of its model was in flight (the shard alone exceeds the quota) it is split in
halves instead, and after ``MAX_REQUEUES`` requeues its lines settle as ``Errored``
(``code="queue_limit_exceeded"``) with a message naming ``--token-budget`` and ``--max-lines``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Final, final

from anyio.abc import ObjectReceiveStream

from .._errors import MalformedLine, MalformedOutputError, TransportError
from .._fileio import run_io, run_io_sized
from .._input import load_ids, write_retry_shard
from .._models import (
    BatchInfo,
    Canceled,
    Errored,
    Expired,
    Result,
    ResultCounts,
    ShardRecord,
    Succeeded,
)
from .._retry import backoff
from .results import PartWriter, ResultSink
from .runstate import RunContext

__all__ = ["Collector"]

logger: Final = logging.getLogger("batchpump.collect")

Resubmit = Callable[[ShardRecord], Awaitable[None]]

#: Downloads of a result file with malformed lines before those lines are settled as errored.
MALFORMED_DOWNLOADS: Final = 3
#: Queue-limit requeues of one shard before its lines are settled as errored.
MAX_REQUEUES: Final = 8


@final
class Collector:
    """Turns terminal batches into final results and retry attempts."""

    def __init__(self, ctx: RunContext, sink: ResultSink, *, resubmit: Resubmit) -> None:
        self._ctx = ctx
        self._sink = sink
        self._resubmit = resubmit
        self.ignored = 0
        self._rng = random.Random()
        self._parts = Path(ctx.work_dir) / "parts"

    async def serve(self, batches: ObjectReceiveStream[tuple[ShardRecord, BatchInfo]]) -> None:
        async with batches:
            async for shard, batch in batches:
                await self.collect(shard, batch)

    async def collect(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """Settle every line of a terminal batch."""
        ctx = self._ctx
        queued = ctx.budget.in_flight(shard.model)
        await ctx.budget.release(shard.model, shard.tokens)
        shard.batch_state = batch.state
        if batch.state == "failed" and ctx.provider.failure_is_transient(batch):
            ctx.budget.learn(shard.model, queued)
            await self._requeue(shard, batch)
            return
        if batch.state == "failed":
            error = batch.errors[0] if batch.errors else None
            code = error.code if error else "batch_failed"
            message = error.message if error else "the provider failed the batch"
            await self.settle_all(shard, lambda cid: _errored(cid, shard, batch, code, message))
            return
        failures = malformed = 0
        while True:
            try:
                await self._join(shard, batch, lenient=malformed >= MALFORMED_DOWNLOADS)
                return
            except MalformedOutputError as exc:
                malformed += 1
                logger.warning(
                    "batch %s: %s; downloading it again (%d/%d)",
                    batch.id,
                    exc,
                    malformed,
                    MALFORMED_DOWNLOADS,
                )
            except TransportError as exc:
                failures += 1
                if failures >= ctx.options.retry.attempts:
                    raise
                logger.warning("download of batch %s failed (%s); again", batch.id, exc)
            ctx.retries += 1
            tries = failures + malformed - 1
            await ctx.clock.sleep(backoff(tries, ctx.options.retry, self._rng))

    async def _join(self, shard: ShardRecord, batch: BatchInfo, *, lenient: bool) -> None:
        ctx = self._ctx
        expected = await run_io_sized(shard.bytes, load_ids, Path(shard.path))
        part = PartWriter(self._part_path(shard))
        retry: list[str] = []
        counts = ResultCounts()
        last_try = shard.tries >= ctx.options.max_attempts or ctx.cancelled
        malformed: list[MalformedLine] = []
        async with aclosing(ctx.provider.results(batch, attempt=shard.attempt)) as results:
            try:
                async for result in results:
                    if result.custom_id not in expected:
                        self.ignored += 1  # unknown, or a second result for a joined line
                        logger.warning(
                            "batch %s: ignored a result for %r (not pending in this attempt)",
                            batch.id,
                            result.custom_id,
                        )
                        continue
                    expected.discard(result.custom_id)
                    if not last_try and _retryable(result, ctx.cancelled):
                        retry.append(result.custom_id)
                        continue
                    if isinstance(result, Canceled | Expired) and ctx.cancelled:
                        result = Canceled(
                            custom_id=result.custom_id, batch_id=batch.id, attempt=shard.attempt
                        )
                    part.add(result)
                    counts.add(result)
                    if isinstance(result, Succeeded) and result.usage is not None:
                        ctx.add_usage(shard.model, result.usage)
                    if part.full:
                        await part.flush()
            except MalformedOutputError as exc:
                if not lenient:
                    raise
                malformed = exc.lines  # every good line was read; settle the bad ones
        for line in malformed:
            if line.custom_id is None or line.custom_id not in expected:
                logger.warning(
                    "batch %s: malformed output line %d names no pending line; its line counts "
                    "as unreported",
                    batch.id,
                    line.number,
                )
                continue
            expected.discard(line.custom_id)
            bad = _errored(
                line.custom_id,
                shard,
                batch,
                "malformed_output",
                f"line {line.number} of batch {batch.id}'s output could not be read in "
                f"{MALFORMED_DOWNLOADS + 1} downloads: {line.problem}",
            )
            part.add(bad)
            counts.add(bad)
        for custom_id in sorted(expected):  # never reported: unfinished
            if not last_try:
                retry.append(custom_id)
                continue
            missing = _unfinished(custom_id, shard, batch, cancelled=ctx.cancelled)
            part.add(missing)
            counts.add(missing)
        await self._settle(shard, part, counts, retry)

    async def settle_all(self, shard: ShardRecord, make: Callable[[str], Result]) -> None:
        """Give every line of ``shard`` the final result ``make(custom_id)``."""
        part = PartWriter(self._part_path(shard))
        counts = ResultCounts()
        for custom_id in await run_io_sized(shard.bytes, load_ids, Path(shard.path)):
            result = make(custom_id)
            part.add(result)
            counts.add(result)
            if part.full:
                await part.flush()
        await self._settle(shard, part, counts, [])

    async def fail(self, shard: ShardRecord, code: str, message: str) -> None:
        """The provider refused the shard for good: every line is ``Errored``."""
        await self.settle_all(shard, lambda cid: _errored(cid, shard, None, code, message))

    async def cancel(self, shard: ShardRecord) -> None:
        """The run was cancelled before this attempt was sent: every line is ``Canceled``."""
        await self.settle_all(
            shard, lambda cid: Canceled(custom_id=cid, batch_id=None, attempt=shard.attempt)
        )

    async def _settle(
        self, shard: ShardRecord, part: PartWriter, counts: ResultCounts, retry: list[str]
    ) -> None:
        ctx = self._ctx
        follow_up = await self._next_attempt(shard, retry) if retry else None
        shard.state = "done"
        await self._sink.publish(part, [shard, *([follow_up] if follow_up else [])], counts)
        if follow_up is not None:
            ctx.retries += 1
            ctx.opened()
            await self._resubmit(follow_up)
        ctx.closed()

    async def _next_attempt(self, shard: ShardRecord, custom_ids: list[str]) -> ShardRecord:
        attempt = shard.attempt + 1
        dest = Path(shard.path).with_name(f"{shard.index:05d}.a{attempt}.jsonl")
        lines, size = await run_io(write_retry_shard, Path(shard.path), dest, frozenset(custom_ids))
        tokens = shard.tokens * size // shard.bytes if shard.bytes else 0
        return ShardRecord(
            run_id=shard.run_id,
            index=shard.index,
            attempt=attempt,
            path=str(dest),
            lines=lines,
            bytes=size,
            model=shard.model,
            tokens=tokens,
            requeues=shard.requeues,
        )

    async def _requeue(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """A queue or token limit failed the batch: same lines, new attempt, after a wait.

        Nothing else of its model in flight means the shard alone exceeds the quota: it is
        split in halves. (The budget learned the limit, so shards of a model that failed
        together now go one at a time and meet it alone.) A shard requeued ``MAX_REQUEUES``
        times settles as errored.
        """
        ctx = self._ctx
        if shard.lines > 1 and ctx.budget.in_flight(shard.model) == 0:
            await self._split(shard, batch)
            return
        if shard.requeues >= MAX_REQUEUES:
            message = (
                f"batch {batch.id} hit the provider's queue or enqueued-token limit "
                f"{shard.requeues + 1} times; gave up on it. Queue fewer tokens at once "
                "(a lower --token-budget, RunOptions.token_budget) or make batches smaller "
                "(a lower --max-lines, RunOptions.max_lines), and submit again"
            )
            logger.warning("shard %s: %s", shard.index, message)
            code = "queue_limit_exceeded"
            await self.settle_all(shard, lambda cid: _errored(cid, shard, batch, code, message))
            return
        wait = ctx.options.requeue_wait * 2 ** min(shard.requeues, 4)
        follow_up = ShardRecord(
            run_id=shard.run_id,
            index=shard.index,
            attempt=shard.attempt + 1,
            path=shard.path,
            lines=shard.lines,
            bytes=shard.bytes,
            model=shard.model,
            tokens=shard.tokens,
            input_ref=None,
            requeues=shard.requeues + 1,
            not_before=ctx.clock.time() + wait,
        )
        follow_up.input_ref = shard.input_ref  # the uploaded file is still good
        follow_up.state = "uploaded" if shard.input_ref else "ready"
        shard.state = "requeued"
        logger.info("batch %s hit a provider queue limit; requeued in %.0f s", batch.id, wait)
        await ctx.commit(shard, follow_up)
        ctx.requeues += 1
        ctx.opened()
        await self._resubmit(follow_up)
        ctx.closed()

    async def _split(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """The shard alone exceeds the provider's quota: resubmit its lines as two shards."""
        ctx = self._ctx
        ids = sorted(await run_io_sized(shard.bytes, load_ids, Path(shard.path)))
        attempt = shard.attempt + 1
        halves: list[ShardRecord] = []
        for part in (ids[: len(ids) // 2], ids[len(ids) // 2 :]):
            index = ctx.new_index()
            dest = Path(shard.path).with_name(f"{index:05d}.a{attempt}.jsonl")
            lines, size = await run_io(write_retry_shard, Path(shard.path), dest, frozenset(part))
            halves.append(
                ShardRecord(
                    run_id=shard.run_id,
                    index=index,
                    attempt=attempt,
                    path=str(dest),
                    lines=lines,
                    bytes=size,
                    model=shard.model,
                    tokens=shard.tokens * size // shard.bytes if shard.bytes else 0,
                    requeues=shard.requeues + 1,
                )
            )
        shard.state = "requeued"
        logger.info(
            "batch %s alone exceeds the provider's queue limit; its %d lines go again as shards "
            "%d and %d",
            batch.id,
            shard.lines,
            halves[0].index,
            halves[1].index,
        )
        await ctx.commit(shard, *halves)
        ctx.requeues += 1
        ctx.splits += 1
        ctx.opened(len(halves))
        for half in halves:
            await self._resubmit(half)
        ctx.closed()

    def _part_path(self, shard: ShardRecord) -> Path:
        return self._parts / f"{shard.index:05d}.a{shard.attempt}.part"


def _retryable(result: Result, cancelled: bool) -> bool:
    match result:
        case Errored(retryable=retryable):
            return retryable and not cancelled
        case Expired() | Canceled():
            return not cancelled
        case _:
            return False


def _unfinished(custom_id: str, shard: ShardRecord, batch: BatchInfo, *, cancelled: bool) -> Result:
    if cancelled or batch.state == "cancelled":
        return Canceled(custom_id=custom_id, batch_id=batch.id, attempt=shard.attempt)
    if batch.state == "expired":
        return Expired(custom_id=custom_id, batch_id=batch.id, attempt=shard.attempt)
    return Errored(
        custom_id=custom_id,
        batch_id=batch.id,
        attempt=shard.attempt,
        code="missing_result",
        message=f"batch {batch.id} ended {batch.raw_status!r} without a result for this line",
        retryable=True,
    )


def _errored(
    custom_id: str, shard: ShardRecord, batch: BatchInfo | None, code: str, message: str
) -> Errored:
    return Errored(
        custom_id=custom_id,
        batch_id=batch.id if batch else None,
        attempt=shard.attempt,
        code=code,
        message=message,
    )
