"""What the durable steps of a batch cost in journal commits and transactions (counts, never
timings), and that a batch id that rode along and was lost in a crash costs no second batch.

One-line-shard runs through the engine with the real ``SqliteJournal`` (wrapped to count what
the engine asks of it) and the in-memory ``FakeProvider``. The promise needs two commits a
caller waits for per batch: the intent before the create and the settle after the results are
durable. The batch id rides along with the next transaction while other shards wait to be
submitted (``defer``), and the writer thread groups what is queued while it is busy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from batchpump import BatchInfo, PollPolicy, Pump, RetryPolicy, RunOptions, Succeeded
from batchpump._engine.submit import DeferringJournal
from batchpump._journal import SqliteJournal
from batchpump._models import RunRecord, ShardRecord

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests

BATCHES = 120
CONCURRENCY = 8


class CountingJournal:
    """A ``SqliteJournal`` that counts the shard states of the commits the engine waits for
    and of the records it defers."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.awaited: Counter[str] = Counter()
        self.deferred: Counter[str] = Counter()
        self.calls = 0  # commit calls waited for

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        return await self.journal.open_run(run)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.journal.get_run(run_id)

    async def list_runs(self) -> list[RunRecord]:
        return await self.journal.list_runs()

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        return await self.journal.load_shards(run_id)

    async def delete_run(self, run_id: str) -> bool:
        return await self.journal.delete_run(run_id)

    async def commit(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None:
        self.awaited.update(shard.state for shard in shards)
        self.calls += 1
        await self.journal.commit(run=run, shards=shards)

    def defer(self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()) -> None:
        self.deferred.update(shard.state for shard in shards)
        self.journal.defer(run=run, shards=shards)

    async def aclose(self) -> None:
        await self.journal.aclose()


async def test_a_batch_costs_two_awaited_commits_and_the_batch_id_rides_along(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, BATCHES)
    journal = CountingJournal(await SqliteJournal.open(tmp_path / "journal.sqlite3"))
    assert isinstance(journal, DeferringJournal)
    options = RunOptions(
        max_lines=1,
        submit_concurrency=CONCURRENCY,
        collect_concurrency=CONCURRENCY,
        poll=PollPolicy(interval_min=0.001, interval_max=0.005),
        retry=RetryPolicy.no_wait(),
    )
    try:
        async with Pump(FakeProvider(), journal=journal, state_dir=tmp_path / "s") as pump:
            run = await pump.submit(src, options=options)
            await run.wait()
            stats = journal.journal.statistics()
    finally:
        await journal.aclose()
    results = read_results(src.with_name("in.results.jsonl"))
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)

    # Intent: one awaited commit per batch, before its create.
    assert journal.awaited["creating"] == BATCHES
    # Batch id: deferred while other shards waited; awaited only for the last few.
    assert journal.awaited["submitted"] + journal.deferred["submitted"] == BATCHES
    assert journal.awaited["submitted"] <= 2 * CONCURRENCY
    assert stats.deferred == journal.deferred["submitted"] >= BATCHES - CONCURRENCY
    # Settle: one awaited commit per publication; concurrent publications share one.
    assert journal.awaited["done"] == BATCHES
    assert stats.commits == journal.calls + stats.deferred
    assert journal.calls <= 2 * BATCHES + CONCURRENCY + 5  # + the run's own records
    # Deferred records take no transaction of their own: they ride with awaited commits, and
    # awaited commits queued together share one.
    assert stats.transactions <= journal.calls


class Crash(BaseException):
    """Stands in for a kill -9 at a chosen point (BaseException: nothing may swallow it)."""


class ForgetfulJournal(CountingJournal):
    """Loses every deferred record, as a process killed before they were written would."""

    def defer(self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()) -> None:
        self.deferred.update(shard.state for shard in shards)


async def test_batch_ids_lost_in_a_crash_are_found_by_tag_not_created_again(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 40)
    path = tmp_path / "journal.sqlite3"
    options = RunOptions(
        max_lines=1,
        submit_concurrency=4,
        poll=PollPolicy(interval_min=0.001, interval_max=0.005),
        retry=RetryPolicy.no_wait(),
    )
    created = 0

    def crash(shard: ShardRecord, batch: BatchInfo) -> None:
        nonlocal created
        created += 1
        if created == 30:
            raise Crash

    provider = FakeProvider(after_create=crash)
    journal = ForgetfulJournal(await SqliteJournal.open(path))

    async def first_process() -> None:
        async with Pump(provider, journal=journal, state_dir=tmp_path / "s") as pump:
            run = await pump.submit(src, options=options)
            await run.wait()

    try:
        with pytest.raises(Crash):
            await first_process()
    finally:
        await journal.aclose()
    assert journal.deferred["submitted"] > 0
    async with await SqliteJournal.open(path) as reopened:
        (record,) = await reopened.list_runs()
        creating = [s for s in await reopened.load_shards(record.run_id) if s.state == "creating"]
        assert creating, "created batches whose ids never reached the journal"
        provider.after_create = None
        async with Pump(provider, journal=reopened, state_dir=tmp_path / "s") as pump:
            run = await pump.resume(record.run_id)
            await run.wait()
    assert_exactly_once(read_results(src.with_name("in.results.jsonl")), ids)
    assert len(provider.tags) == 40
    assert set(provider.tags.values()) == {1}  # no attempt got a second batch
    assert len(provider.batches) == 40
