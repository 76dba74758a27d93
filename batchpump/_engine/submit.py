"""Submitters: turn ready shard attempts into provider batches, exactly once each.

The hot path of the control plane. Only protocols here (``Provider``, ``Journal``, ``Clock``):
no aiohttp, no sqlite3. Each step is written to the journal *before* the action it enables:

``ready`` --prepare--> (input_ref) --intent--> ``creating`` (input_ref, tag, intent_at)
--create--> ``submitted`` (batch_id)

Of these commits the promise needs two durable at once: the intent before the create (a
resume must know a batch may exist, and look for it by tag instead of creating another) and,
later, the collector's settle after the results are durable. The batch id only saves a resume
that look: while more shards wait to be submitted, it is handed to a journal that can
``defer`` it and rides along with the next transaction (another shard's intent, typically)
instead of taking a transaction and a thread hand-off of its own; otherwise it is committed
and waited for. A crash before it is written leaves the attempt ``creating``: found by tag.

(``uploaded`` is still understood on resume: a requeued attempt starts there, reusing its file.)

A create that fails ambiguously (timeout, reset, 5xx after the request was sent, 408, 409) is
never simply sent again: the provider may make the batch after the client gave up, so the
submitter keeps looking for a batch with this attempt's tag for ``RetryPolicy.create_settle``
seconds (``Reconciler.settle``) and adopts it if it shows. On resume, an attempt the journal
left in ``creating`` is looked for once (beside the run-start sweep): the crash may have come
before the request left, and a batch made later still is a duplicate the end-of-run sweep
cancels. A 429 never reaches here: the HTTP layer waits it out (it proves nothing was created).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, final, runtime_checkable

from anyio.abc import ObjectReceiveStream

from .._errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderUnavailableError,
    TransportError,
    configuration_problem,
)
from .._models import BatchInfo, RunRecord, ShardRecord
from .._provider import shard_tag
from .._retry import backoff
from .reconcile import Reconciler
from .runstate import RunContext

__all__ = ["DeferringJournal", "Submitter", "is_ambiguous"]

logger: Final = logging.getLogger("batchpump.submit")


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a create that raised ``exc`` may still have made its batch.

    No answer (timeout, reset), a 5xx after the body was sent, a 408 or a 409: none of them
    proves the batch was not made. Only a 4xx that refuses the request itself (400, 401, 403,
    404, 422) does, and a 429 (which the HTTP layer waits out and sends again).
    """
    if isinstance(exc, TransportError | ProviderUnavailableError | ConflictError):
        return True
    return isinstance(exc, ProviderError) and exc.status == 408


@runtime_checkable
class DeferringJournal(Protocol):
    """A journal that can queue a record to ride along with its next transaction
    (``SqliteJournal.defer``)."""

    def defer(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None: ...


ShardFailure = Callable[[ShardRecord, str, str], Awaitable[None]]
BatchAdded = Callable[[ShardRecord, BatchInfo], Awaitable[None]]


@final
class Submitter:
    """Uploads and creates batches for shard attempts received on a stream.

    Args:
        ctx: the run's shared state.
        on_submitted: called with each created (or adopted) batch; hands it to the poller.
        on_failed: called when a shard attempt cannot be submitted for a reason retrying will
            not fix (the provider rejected the file); its lines become ``Errored`` results.
        on_cancelled: called for shard attempts reached after the run was cancelled.
        reconciler: finds batches by tag (shared with the run's sweeps); a new one if omitted.
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        on_submitted: BatchAdded,
        on_failed: ShardFailure,
        on_cancelled: Callable[[ShardRecord], Awaitable[None]],
        reconciler: Reconciler | None = None,
    ) -> None:
        self._ctx = ctx
        self._reconciler = reconciler or Reconciler(ctx)
        self._on_submitted = on_submitted
        self._on_failed = on_failed
        self._on_cancelled = on_cancelled
        self._rng = random.Random()
        journal = ctx.journal
        self._defer = journal.defer if isinstance(journal, DeferringJournal) else None

    async def serve(self, shards: ObjectReceiveStream[ShardRecord]) -> None:
        """Submit shard attempts from ``shards`` until the stream closes."""
        async with shards:
            async for shard in shards:
                ctx = self._ctx
                ctx.waiting -= 1
                ctx.submitting += 1
                try:
                    await self.submit(shard)
                finally:
                    ctx.submitting -= 1
                    if ctx.feeding:  # room for the feeder to claim another attempt
                        ctx.freed.set()

    async def submit(self, shard: ShardRecord) -> None:
        """Take one shard attempt from wherever the journal left it to ``submitted``."""
        ctx = self._ctx
        delay = shard.not_before - ctx.clock.time()
        if delay > 0 and not self._cancelled():
            await ctx.clock.sleep(delay)
        if not self._cancelled():
            await ctx.budget.acquire(shard.model, shard.tokens)
            if self._cancelled():  # cancelled while waiting for budget
                await ctx.budget.release(shard.model, shard.tokens)
        found: BatchInfo | None = None
        if self._cancelled():
            # A create that may have reached the provider: adopt its batch so it is cancelled.
            found = await self._reconciler.find(shard) if shard.state == "creating" else None
            if found is None:
                await self._on_cancelled(shard)
                return
        try:
            batch = found or await self._submit(shard)
        except (AuthenticationError, BadRequestError, ConflictError, NotFoundError) as exc:
            await ctx.budget.release(shard.model, shard.tokens)
            if configuration_problem(exc):  # every shard would fail so: stop, settle nothing
                raise ctx.configuration_error(exc) from exc
            logger.warning("shard %s attempt %s rejected: %s", shard.index, shard.attempt, exc)
            await self._on_failed(shard, exc.code or f"http_{exc.status}", str(exc))
            return
        except BaseException:
            await ctx.budget.release(shard.model, shard.tokens)
            raise
        shard.batch_id = batch.id
        shard.batch_state = batch.state
        shard.state = "submitted"
        if self._defer is not None and ctx.waiting > 0:
            self._defer(shards=(shard,))  # another shard's intent commit follows soon
        else:
            await ctx.commit(shard)
        ctx.batch_created(shard, batch)
        await self._on_submitted(shard, batch)

    def _cancelled(self) -> bool:
        # A call, not the attribute: the run can be cancelled across any await above.
        return self._ctx.cancelled

    async def _submit(self, shard: ShardRecord) -> BatchInfo:
        ctx = self._ctx
        if shard.state == "creating":
            # Resumed mid-create: the batch may exist. One look (the run-start sweep looked
            # too); one made later still is a duplicate the end-of-run sweep cancels.
            adopted = await self._reconciler.find(shard)
            if adopted is not None:
                return adopted
        if shard.input_ref is None or shard.state in ("ready", "uploading"):
            # Not committed on its own: the create intent below records input_ref too. A crash
            # in between leaves the attempt "ready", and it uploads again (an orphan file
            # costs nothing; a second batch would).
            shard.input_ref = await ctx.provider.prepare(shard)
            shard.state = "uploaded"
        try:
            return await self._create(shard)
        except NotFoundError:
            # The uploaded input expired or was deleted (files outlive runs only so long):
            # upload again once, then create under the same tag.
            logger.info("input of shard %s is gone; uploading it again", shard.index)
            shard.input_ref = await ctx.provider.prepare(shard)
            await ctx.commit(shard)
            return await self._create(shard)

    async def _create(self, shard: ShardRecord) -> BatchInfo:
        ctx = self._ctx
        if shard.state != "creating" or shard.tag is None:
            shard.tag = shard_tag(ctx.run.run_id, shard.index, shard.attempt)
            shard.intent_at = ctx.clock.time()
            shard.state = "creating"
            await ctx.commit(shard)  # write-ahead: the intent is durable before the request
        tries = 0
        while True:
            tries += 1
            ctx.check_create(shard)  # a claim that may have lapsed creates nothing
            try:
                batch = await ctx.provider.create(
                    shard, endpoint=ctx.options.endpoint, tag=shard.tag
                )
            except (TransportError, ProviderError) as exc:
                if not is_ambiguous(exc):
                    raise
                # Sent, but no clear answer: the batch may exist now or soon. Look before
                # sending again, for as long as a late create can take.
                logger.info(
                    "create of shard %s attempt %s ended ambiguously (%s); reconciling",
                    shard.index,
                    shard.attempt,
                    type(exc).__name__,
                )
                adopted = await self._reconciler.settle(shard, since=ctx.clock.time())
                if adopted is not None:
                    return adopted
                if tries >= ctx.options.retry.attempts:
                    raise
                ctx.retries += 1
                await ctx.clock.sleep(self._wait(tries))
            else:
                self._reconciler.observe(shard, batch)
                return batch

    def _wait(self, tries: int) -> float:
        return backoff(tries - 1, self._ctx.options.retry, self._rng)
