"""Finding the batches a provider made that the journal does not hold, in the provider's time.

A create whose answer never came may still take effect, seconds or minutes later; a crash can
fall between "create sent" and "create recorded"; a run can start over with a lost or a second
state directory (tags are deterministic, so its batches carry the same tags). ``Reconciler``
answers all three by listing the provider's batches and reading their tags:

- ``find`` looks once for the batch of one shard attempt (``Provider.reconcile``);
  ``settle`` keeps looking for ``RetryPolicy.create_settle`` seconds after an ambiguous create
  before the submitter may create again;
- ``sweep`` walks the list once for every batch tagged with this run: at the start of a run
  (and so on every resume) it adopts a batch that carries an attempt the journal still has to
  create, and at the end of a run it finds the rest. A tagged batch the journal does not hold
  and no attempt needs is a duplicate: it is cancelled while it can be, and counted
  (``RunRecord.duplicates_found`` / ``duplicates_cancelled``).

Reconcile windows are in the provider's time, never the local clock against the provider's:
``ProviderClock`` learns the offset between the two from the ``created_at`` of this run's own
batches (each made after its attempt's recorded intent), and until it has one the window
reaches back ``UNKNOWN_OFFSET_SLACK``. Providers whose batches carry no tag (Together names the
input file, Anthropic reconciles by content) keep their own ``reconcile`` and are not swept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import aclosing
from typing import Final, final

import msgspec

from .._models import BatchInfo, ShardRecord
from .._provider import parse_tag, run_tag_prefix
from .runstate import RunContext

__all__ = [
    "RECONCILE_SLACK",
    "SWEEP_LOOKBACK",
    "UNKNOWN_OFFSET_SLACK",
    "ProviderClock",
    "Reconciler",
]

logger: Final = logging.getLogger("batchpump.reconcile")

#: Seconds before an attempt's intent (in the provider's time) that a reconcile still looks at:
#: whole-second ``created_at`` values, and the spread of the offset samples.
RECONCILE_SLACK: Final = 300.0
#: How far back a reconcile looks while the provider's clock offset is still unknown: further
#: than any real clock skew.
UNKNOWN_OFFSET_SLACK: Final = 86_400.0
#: How far back (provider time, from its newest batch) a run-start sweep looks for batches
#: tagged with the run: as long as providers keep batches listed that matter (their output
#: files expire after 30 days).
SWEEP_LOOKBACK: Final = 30 * 86_400.0
#: States the journal still has to create a batch for.
_NEEDS_BATCH: Final = frozenset({"ready", "uploading", "uploaded", "creating"})
_CANCELLABLE: Final = frozenset({"pending", "running"})


@final
class ProviderClock:
    """The offset between the provider's clock and ours, learned from our own batches.

    Each batch is made after its attempt's intent was recorded, so ``created_at - intent_at``
    is the offset plus the create's latency (less up to a second of ``created_at`` rounding);
    the smallest sample is the best estimate.
    """

    def __init__(self) -> None:
        self.offset: float | None = None

    def observe(self, intent_at: float, batch: BatchInfo) -> None:
        """Take one sample: a batch and the local time its create was intended."""
        if intent_at <= 0 or batch.created_at <= 0:
            return
        sample = batch.created_at - intent_at
        if self.offset is None or sample < self.offset:
            self.offset = sample

    def since(self, intent_at: float) -> float:
        """The provider-time instant a reconcile for an intent at ``intent_at`` looks back to."""
        if self.offset is None:
            return intent_at - UNKNOWN_OFFSET_SLACK
        return intent_at + self.offset - RECONCILE_SLACK


class SweepReport(msgspec.Struct, kw_only=True):
    """What one sweep saw."""

    tagged: int = 0
    adopted: int = 0
    duplicates: int = 0
    cancelled: int = 0


@final
class Reconciler:
    """Looks for batches by tag: one attempt's (``find``, ``settle``) or the run's (``sweep``).

    Args:
        ctx: the run's shared state.
        clock: the provider-clock estimate (one per run, shared with the submitters).
    """

    def __init__(self, ctx: RunContext, clock: ProviderClock | None = None) -> None:
        self._ctx = ctx
        self.clock = clock or ProviderClock()

    @property
    def sweeps(self) -> bool:
        """Whether the provider's batches carry our tags and can be listed."""
        caps = self._ctx.provider.capabilities
        return caps.metadata_tag and caps.list_batches

    def observe(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """Learn the provider's clock from a batch of this run."""
        self.clock.observe(shard.intent_at, batch)

    async def find(self, shard: ShardRecord) -> BatchInfo | None:
        """Look once for the batch of ``shard``'s attempt."""
        found = await self._ctx.provider.reconcile(shard, since=self.clock.since(shard.intent_at))
        if found is not None:
            self.observe(shard, found)
            logger.info("adopted batch %s for shard %s attempt %s", found.id, *shard.key)
        return found

    async def settle(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Look for the batch of ``shard``'s attempt until ``create_settle`` seconds after
        ``since`` (the local time its create became ambiguous); ``None`` if it never showed."""
        ctx = self._ctx
        until = since + ctx.options.retry.create_settle
        interval = max(ctx.options.poll.interval_min, 0.001)
        while True:
            found = await self.find(shard)
            if found is not None:
                return found
            remaining = until - ctx.clock.time()
            if remaining <= 0 or ctx.cancelled:
                return None
            await ctx.clock.sleep(min(interval, remaining))
            interval = min(interval * 2.0, max(ctx.options.poll.interval_max, interval))

    async def sweep(self, shards: Iterable[ShardRecord], *, adopt: bool) -> SweepReport:
        """Walk the provider's batches once for every batch tagged with this run.

        Args:
            shards: every attempt the journal holds for the run (adopted ones are changed in
                place and committed).
            adopt: adopt a batch for an attempt that still needs one (at the start of a run);
                ``False`` at the end, when nothing does.
        """
        report = SweepReport()
        if not self.sweeps:
            return report
        ctx = self._ctx
        by_key = {shard.key: shard for shard in shards}
        held = {shard.batch_id for shard in by_key.values() if shard.batch_id is not None}
        prefix = run_tag_prefix(ctx.run.run_id)
        horizon = self._horizon(by_key.values(), adopt=adopt)
        duplicates: list[BatchInfo] = []
        newest: float | None = None
        async with aclosing(ctx.provider.list_batches()) as batches:
            async for batch in batches:
                if newest is None:
                    newest = batch.created_at
                if batch.created_at < (horizon if horizon is not None else newest - SWEEP_LOOKBACK):
                    break
                if batch.tag is None or not batch.tag.startswith(prefix):
                    continue
                report.tagged += 1
                key = parse_tag(batch.tag)
                shard = by_key.get(key) if key is not None else None
                if batch.id in held:
                    if shard is not None and shard.batch_id == batch.id:
                        self.observe(shard, batch)
                    continue
                if adopt and shard is not None and shard.state in _NEEDS_BATCH:
                    await self._adopt(shard, batch)
                    held.add(batch.id)
                    report.adopted += 1
                    continue
                duplicates.append(batch)
        for batch in duplicates:
            report.duplicates += 1
            if await self._cancel(batch):
                report.cancelled += 1
        await self._record(report)
        return report

    def _horizon(self, shards: Iterable[ShardRecord], *, adopt: bool) -> float | None:
        """Where an end-of-run sweep may stop (provider time); ``None``: the full lookback."""
        if adopt or self.clock.offset is None:
            return None
        intents = [s.intent_at for s in shards if s.intent_at > 0]
        if not intents:
            return None
        return self.clock.since(min(intents))

    async def _adopt(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """Make ``batch`` the batch of ``shard``'s attempt (journaled before it is polled)."""
        logger.info(
            "shard %s attempt %s already has batch %s at the provider: adopted",
            shard.index,
            shard.attempt,
            batch.id,
        )
        shard.tag = batch.tag
        shard.batch_id = batch.id
        shard.batch_state = batch.state
        if shard.intent_at <= 0:
            shard.intent_at = self._ctx.clock.time()
        shard.state = "submitted"
        await self._ctx.commit(shard)
        self._ctx.batches_adopted += 1

    async def _cancel(self, batch: BatchInfo) -> bool:
        """Cancel a duplicate while it can be; whether it is (being) cancelled now."""
        logger.warning(
            "batch %s (%s) is a duplicate the journal does not hold; state %s",
            batch.id,
            batch.tag,
            batch.state,
        )
        if batch.state in ("cancelling", "cancelled"):
            return True
        if batch.state not in _CANCELLABLE or not self._ctx.provider.capabilities.cancel:
            return False
        try:
            after = await self._ctx.provider.cancel(batch.id)
        except Exception as exc:  # reported, never fatal: the run's own lines are settled
            logger.warning("could not cancel duplicate batch %s: %s", batch.id, exc)
            return False
        return after.state in ("cancelling", "cancelled")

    async def _record(self, report: SweepReport) -> None:
        """Keep the largest counts any sweep saw (each sweep sees every duplicate again)."""
        run = self._ctx.run
        found = max(run.duplicates_found, report.duplicates)
        cancelled = max(run.duplicates_cancelled, report.cancelled)
        if (found, cancelled) == (run.duplicates_found, run.duplicates_cancelled):
            return
        run.duplicates_found, run.duplicates_cancelled = found, cancelled
        await self._ctx.commit(run=True)
