"""What the engine's stages share for one run: its live state, token budget and journal commit.

The stages (submit, poll, collect) receive one ``RunContext``. It holds only protocols
(``Provider``, ``Journal``, ``Clock``), so the hot loop never imports aiohttp or sqlite3 and
benchmarks can drive it with in-memory fakes. ``RunStatistics`` is its frozen snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

import anyio
import msgspec

from .._clock import Clock
from .._config import RunOptions
from .._errors import (
    ConfigurationError,
    ConflictError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransportError,
)
from .._models import BatchInfo, ResultCounts, RunRecord, ShardRecord, Usage
from .._provider import Provider, RateLimitedProvider

if TYPE_CHECKING:
    from .._journal import Journal

__all__ = ["RunContext", "RunStatistics", "TokenBudget"]

logger: Final = logging.getLogger("batchpump.engine")


class RunStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a run's progress (``Run.statistics()``).

    ``rate_limited_for`` is how long the provider's calls have been held by rate limits
    (``None`` when they are not), ``rate_limit_timeout`` the bound after which a call gives
    up; ``batches_adopted`` counts batches found by tag instead of created;
    ``duplicates_found``/``duplicates_cancelled`` count batches tagged with this run that the
    journal does not hold (a create answered late, a second state directory); ``splits``
    counts requeues that split a shard over the provider's quota in halves (each one batch
    more than a plain requeue).
    """

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
    stuck_cancelling: tuple[str, ...] = ()
    lines_reported: int = 0
    usage: dict[str, Usage] = msgspec.field(default_factory=dict)
    batches_adopted: int = 0
    duplicates_found: int = 0
    duplicates_cancelled: int = 0
    rate_limited_for: float | None = None
    rate_limit_timeout: float | None = None
    splits: int = 0

    @property
    def done_lines(self) -> int:
        return self.results.total

    @property
    def progress_lines(self) -> int:
        """Lines with a result, plus lines the providers report done in batches in flight."""
        return min(self.results.total + self.lines_reported, self.total_lines)


@final
class TokenBudget:
    """Enqueued-token budget per model: ``acquire`` waits while a shard would exceed it.

    A shard larger than the whole budget still goes when nothing else of its model is in
    flight, so a run never deadlocks on one big shard. A provider's queue limit that failed a
    batch teaches the budget (``learn``): that model then keeps below what was in flight.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight: dict[str | None, int] = {}
        self._learned: dict[str | None, int] = {}
        self._changed = anyio.Condition()

    def in_flight(self, model: str | None) -> int:
        return self._in_flight.get(model, 0)

    def limit_of(self, model: str | None) -> int | None:
        """The budget of ``model``: the configured one, or less if a queue limit taught so."""
        learned = self._learned.get(model)
        if learned is None or (self.limit is not None and self.limit <= learned):
            return self.limit
        return learned

    def learn(self, model: str | None, queued: int) -> None:
        """A queue limit failed a batch while ``queued`` tokens of ``model`` were in flight."""
        if queued > 0:
            self._learned[model] = min(self._learned.get(model, queued), queued - 1)

    async def acquire(self, model: str | None, tokens: int) -> None:
        limit = self.limit_of(model)
        if limit is None:
            self._in_flight[model] = self.in_flight(model) + tokens
            return
        async with self._changed:
            while self.in_flight(model) and self.in_flight(model) + tokens > limit:
                await self._changed.wait()
                limit = self.limit_of(model) or limit
            self._in_flight[model] = self.in_flight(model) + tokens

    def take(self, model: str | None, tokens: int) -> None:
        """Count tokens already in flight (batches adopted on resume) without waiting."""
        self._in_flight[model] = self.in_flight(model) + tokens

    async def release(self, model: str | None, tokens: int) -> None:
        self._in_flight[model] = max(0, self.in_flight(model) - tokens)
        if self.limit is not None or self._learned:
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
    splits: int = 0
    batches_adopted: int = 0
    open_attempts: int = 0
    shards_done: int = 0
    in_flight: dict[str, ShardRecord] = field(default_factory=dict)
    waiting: int = 0
    #: Attempts a submitter took and has not yet brought to a batch (or failed, or settled).
    submitting: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_failures: int = 0
    next_index: int = 0
    stuck_cancelling: list[str] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    #: Attempts come from a feeder (``AttemptClaims``): the feeder, not ``closed``, ends the
    #: run, and ``closed`` wakes it (``freed``) to claim more.
    feeding: bool = False
    freed: anyio.Event = field(default_factory=anyio.Event)
    #: Called right before each batch create; raises if this worker may no longer create the
    #: attempt's batch (its claim may have lapsed: ``AttemptClaims.check``).
    create_guard: Callable[[ShardRecord], None] | None = None

    async def commit(self, *shards: ShardRecord, run: bool = False) -> None:
        """Write shard attempts (and the run record, if asked) in one transaction."""
        if run:
            self.run.updated_at = self.clock.time()
        await self.journal.commit(run=self.run if run else None, shards=shards)

    async def commit_results(
        self, length: int, shards: list[ShardRecord], counts: ResultCounts
    ) -> None:
        """Record new results: the results file's length, the shards they settle, their counts,
        in one transaction (the ``ResultSink`` commit)."""
        self.run.out_offset = length
        self.run.counts.merge(counts)
        await self.commit(*shards, run=True)

    async def record_cancel(self) -> None:
        """Journal the run's cancel intent (once), so a resume finishes the cancel."""
        if self.cancelled and not self.run.cancel_requested:
            self.run.cancel_requested = True
            await self.commit(run=True)

    async def request_cancel(self, info: BatchInfo) -> BatchInfo | None:
        """Ask the provider to cancel a batch, the run's intent journaled first; ``None`` if
        the request failed for now (the poller asks again at its next sweep)."""
        await self.record_cancel()
        try:
            return await self.provider.cancel(info.id)
        except ConflictError:  # already ended or cancelling: nothing left to ask
            return info
        except (TransportError, ProviderUnavailableError, RateLimitedError) as exc:
            self.cancel_failures += 1
            logger.warning("cancel of batch %s failed (%s); asking again next sweep", info.id, exc)
            return None

    def gave_up_cancelling(self, info: BatchInfo) -> BatchInfo:
        """A batch stuck in ``cancelling`` past the timeout: report it, treat it as cancelled."""
        self.stuck_cancelling.append(info.id)
        logger.warning(
            "batch %s is still cancelling after %g s; no longer polled. Its unfinished lines "
            "settle as cancelled here; check it at the provider (it may still bill)",
            info.id,
            self.options.poll.cancelling_timeout,
        )
        return msgspec.structs.replace(
            info, state="cancelled", raw_status=f"{info.raw_status} (gave up cancelling)"
        )

    def configuration_error(self, exc: ProviderError) -> ConfigurationError:
        """``exc`` as the error that stops the run, naming the setting to fix."""
        name, url = self.provider.name, self.provider.base_url
        if exc.status in (401, 403):
            setting = (
                f"the {name} API key (--api-key or the provider's key variable) and its access"
            )
        elif exc.status == 404:
            setting = (
                f"the base URL {url} (--base-url or the provider's base-URL variable; it must "
                "include the provider's path, such as /v1)"
            )
        else:
            setting = (
                "the setting the answer names (--endpoint, --work-flow-id, --config-id, the "
                "project id...)"
            )
        logger.error("stopping run %s: %s", self.run.run_id, exc)
        return ConfigurationError(exc, setting=setting)

    def new_index(self) -> int:
        """A shard index no attempt of this run uses yet (for the halves of a split shard)."""
        index, self.next_index = self.next_index, self.next_index + 1
        return index

    def opened(self, count: int = 1) -> None:
        self.open_attempts += count

    def closed(self) -> None:
        """One shard attempt reached ``done`` or ``requeued``; the run ends at zero (unless a
        feeder brings more)."""
        self.open_attempts -= 1
        self.shards_done += 1
        if self.feeding:
            self.freed.set()
        elif self.open_attempts <= 0:
            self.done.set()

    def check_create(self, shard: ShardRecord) -> None:
        """Right before a create: raise if this worker may no longer create ``shard``'s batch."""
        if self.create_guard is not None:
            self.create_guard(shard)

    def batch_created(self, shard: ShardRecord, batch: BatchInfo) -> None:
        self.batches_created += 1
        logger.debug("shard %s attempt %s is batch %s", shard.index, shard.attempt, batch.id)

    def batch_progress(self, shard: ShardRecord, batch: BatchInfo) -> None:
        """Note how many of ``shard``'s lines the provider says are done in ``batch`` (its
        request counts, or a percentage as ``completed`` of ``total == 100``)."""
        if batch.terminal or batch.total <= 0:
            self.reported.pop(batch.id, None)
            return
        share = min(1.0, (batch.completed + batch.failed) / batch.total)
        self.reported[batch.id] = int(shard.lines * share)

    def add_usage(self, model: str | None, usage: Usage) -> None:
        """Count one result's tokens for its model."""
        key = model or "?"
        seen = self.usage.get(key)
        self.usage[key] = Usage(
            input_tokens=usage.input_tokens + (seen.input_tokens if seen else 0),
            output_tokens=usage.output_tokens + (seen.output_tokens if seen else 0),
        )

    def statistics(self) -> RunStatistics:
        counts = ResultCounts()
        counts.merge(self.run.counts)
        limited = (
            self.provider.rate_limit_wait()
            if isinstance(self.provider, RateLimitedProvider)
            else None
        )
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
            splits=self.splits,
            elapsed=self.clock.monotonic() - self.started_at,
            stuck_cancelling=tuple(self.stuck_cancelling),
            lines_reported=sum(self.reported.values()),
            usage=dict(self.usage),
            batches_adopted=self.batches_adopted,
            duplicates_found=self.run.duplicates_found,
            duplicates_cancelled=self.run.duplicates_cancelled,
            rate_limited_for=None if limited is None else limited.seconds,
            rate_limit_timeout=None if limited is None else limited.timeout,
        )
