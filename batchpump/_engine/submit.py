"""Submitters: turn ready shard attempts into provider batches, exactly once each.

The hot path of the control plane. Only protocols here (``Provider``, ``Journal``, ``Clock``):
no aiohttp, no sqlite3. Each step is written to the journal *before* the action it enables:

``ready`` --prepare--> (input_ref) --intent--> ``creating`` (input_ref, tag, intent_at)
--create--> ``submitted`` (batch_id)

(``uploaded`` is still understood on resume: a requeued attempt starts there, reusing its file.)

A create that fails ambiguously (timeout, reset, 5xx after the request was sent) is never simply
sent again: the provider is first asked whether a batch with this attempt's tag exists
(``Provider.reconcile``), and that batch is adopted if so. The same reconcile runs on resume for
attempts the journal left in ``creating``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, final

from anyio.abc import ObjectReceiveStream

from .._errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ProviderUnavailableError,
    RateLimitedError,
    TransportError,
)
from .._models import BatchInfo, ShardRecord
from .._provider import shard_tag
from .._retry import backoff
from .runstate import RunContext

__all__ = ["Submitter"]

logger: Final = logging.getLogger("batchpump.submit")

#: Seconds before the recorded intent that a reconcile still looks at (provider clock skew).
RECONCILE_SLACK: Final = 300.0

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
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        on_submitted: BatchAdded,
        on_failed: ShardFailure,
        on_cancelled: Callable[[ShardRecord], Awaitable[None]],
    ) -> None:
        self._ctx = ctx
        self._on_submitted = on_submitted
        self._on_failed = on_failed
        self._on_cancelled = on_cancelled
        self._rng = random.Random()

    async def serve(self, shards: ObjectReceiveStream[ShardRecord]) -> None:
        """Submit shard attempts from ``shards`` until the stream closes."""
        async with shards:
            async for shard in shards:
                self._ctx.waiting -= 1
                await self.submit(shard)

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
        if self._cancelled():
            await self._on_cancelled(shard)
            return
        try:
            batch = await self._submit(shard)
        except (BadRequestError, ConflictError, NotFoundError) as exc:
            await ctx.budget.release(shard.model, shard.tokens)
            logger.warning("shard %s attempt %s rejected: %s", shard.index, shard.attempt, exc)
            await self._on_failed(shard, exc.code or f"http_{exc.status}", str(exc))
            return
        except BaseException:
            await ctx.budget.release(shard.model, shard.tokens)
            raise
        shard.batch_id = batch.id
        shard.batch_state = batch.state
        shard.state = "submitted"
        await ctx.commit(shard)
        ctx.batch_created(shard, batch)
        await self._on_submitted(shard, batch)

    def _cancelled(self) -> bool:
        # A call, not the attribute: the run can be cancelled across any await above.
        return self._ctx.cancelled

    async def _submit(self, shard: ShardRecord) -> BatchInfo:
        ctx = self._ctx
        if shard.state == "creating":
            adopted = await self._reconcile(shard)
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
            try:
                return await ctx.provider.create(
                    shard, endpoint=ctx.options.endpoint, tag=shard.tag
                )
            except RateLimitedError as exc:
                # A 429 proves nothing was created: wait as told and send again.
                await ctx.clock.sleep(exc.retry_after or self._wait(tries))
                continue
            except (TransportError, ProviderUnavailableError) as exc:
                # Sent, but no clear answer: the batch may exist. Look before sending again.
                logger.info(
                    "create of shard %s attempt %s ended ambiguously (%s); reconciling",
                    shard.index,
                    shard.attempt,
                    type(exc).__name__,
                )
                adopted = await self._reconcile(shard)
                if adopted is not None:
                    return adopted
                if tries >= ctx.options.retry.attempts:
                    raise
                ctx.retries += 1
                await ctx.clock.sleep(self._wait(tries))

    async def _reconcile(self, shard: ShardRecord) -> BatchInfo | None:
        since = shard.intent_at - RECONCILE_SLACK
        found = await self._ctx.provider.reconcile(shard, since=since)
        if found is not None:
            logger.info("adopted batch %s for shard %s attempt %s", found.id, *shard.key)
        return found

    def _wait(self, tries: int) -> float:
        return backoff(tries - 1, self._ctx.options.retry, self._rng)
