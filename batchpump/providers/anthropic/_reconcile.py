"""Finding the Anthropic batch an interrupted create made, without a metadata tag.

Anthropic batches carry no metadata, so :meth:`Reconciler.find` identifies the batch an
ambiguous create made by its content:

1. list batches newest first, down to ``since`` (the recorded intent time minus slack);
2. keep candidates with exactly ``shard.lines`` requests, not created or adopted by this
   client for another shard attempt, and not ended before ``since`` (ours cannot have);
3. confirm a candidate only by its results: the set of ``custom_id``\\s must equal the
   shard's. Candidates still processing are re-read (via the clock, with a growing interval)
   until they end (at most 24 h after creation, when Anthropic expires them) and then checked.

What is left at risk: (a) a shard attempt with *exactly* the same lines as an earlier attempt
of the same shard (only when a whole batch expired or was cancelled and is retried), created
after a process restart within ``since`` of that earlier batch's end, can adopt the earlier
batch; its lines then come back as expired/cancelled once more and are retried again, and if
the create had in fact reached Anthropic, that orphaned batch runs (and bills) once more; (b) a
batch whose results are archived (29 days) cannot be confirmed and is never adopted; (c) the
submitter that reconciles waits until the candidates end, which can take hours in production.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Final, final

from ..._clock import Clock
from ..._errors import ProviderError
from ..._fileio import run_io_sized
from ..._input import load_ids
from ..._models import BatchInfo, Result, ShardRecord
from ._wire import WireBatch, to_batch_info

__all__ = ["RECONCILE_GRACE", "RECONCILE_WAIT_MAX", "RECONCILE_WAIT_MIN", "Reconciler"]

logger: Final = logging.getLogger("batchpump.providers.anthropic")

#: First and longest wait between re-reads of a still-processing candidate (s).
RECONCILE_WAIT_MIN: Final = 1.0
RECONCILE_WAIT_MAX: Final = 60.0
#: A candidate still processing this long after its ``expires_at`` is dropped.
RECONCILE_GRACE: Final = 3600.0


@final
class Reconciler:
    """Finds the batch of an interrupted create among the batches no attempt has ``claimed``.

    Args:
        walk: every batch, newest first.
        retrieve: one batch, read again.
        results: an ended batch's results.
        clock: the waits between re-reads go through it.
    """

    def __init__(
        self,
        *,
        walk: Callable[[], AsyncGenerator[WireBatch, None]],
        retrieve: Callable[[str], Awaitable[WireBatch]],
        results: Callable[[BatchInfo], AsyncGenerator[Result, None]],
        clock: Clock,
    ) -> None:
        self._walk = walk
        self._retrieve = retrieve
        self._results = results
        self._clock = clock
        self._claimed: set[str] = set()  # batches this client created or adopted

    def claim(self, batch_id: str) -> None:
        """Mark a batch as some shard attempt's: it is never adopted by another."""
        self._claimed.add(batch_id)

    async def find(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Find the batch an interrupted ``create`` made, by size and then by its results."""
        candidates: list[WireBatch] = []
        async with aclosing(self._walk()) as walk:
            async for wire in walk:
                if wire.created_at.timestamp() < since:
                    break
                ended_early = wire.ended_at is not None and wire.ended_at.timestamp() < since
                if (
                    wire.id in self._claimed
                    or wire.request_counts.total != shard.lines
                    or ended_early
                    or wire.archived_at is not None
                ):
                    continue
                candidates.append(wire)
        if not candidates:
            return None
        expected = await run_io_sized(shard.bytes, load_ids, Path(shard.path))
        wait = RECONCILE_WAIT_MIN
        while candidates:
            pending: list[WireBatch] = []
            for wire in candidates:
                if wire.processing_status != "ended":
                    if self._clock.time() < _deadline(wire):
                        pending.append(wire)
                    continue
                if await self._holds(wire, expected):
                    self._claimed.add(wire.id)
                    return to_batch_info(wire)
            if not pending:
                return None
            logger.info("reconcile: waiting for %d candidate batch(es) to end", len(pending))
            await self._clock.sleep(wait)
            wait = min(wait * 2, RECONCILE_WAIT_MAX)
            candidates = [await self._retrieve(w.id) for w in pending]
        return None

    async def _holds(self, wire: WireBatch, expected: set[str]) -> bool:
        """Whether the ended batch's results are exactly the ``custom_id``\\s ``expected``."""
        seen = 0
        try:
            async with aclosing(self._results(to_batch_info(wire))) as results:
                async for result in results:
                    if result.custom_id not in expected:
                        return False
                    seen += 1
        except ProviderError as exc:
            logger.info("reconcile: results of %s unreadable (%s)", wire.id, exc)
            return False
        return seen == len(expected)


def _deadline(wire: WireBatch) -> float:
    expires = wire.expires_at.timestamp() if wire.expires_at is not None else None
    base = expires if expires is not None else wire.created_at.timestamp() + 86_400.0
    return base + RECONCILE_GRACE
