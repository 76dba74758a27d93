"""Cancel is durable: journaled before the first cancel request, finished by a resume, retried,
and a batch stuck in ``cancelling`` is reported instead of polled forever.

Rules: in-memory provider and journal, fast polling; batches are held ``running`` (``stall``)
so they are in flight when the cancel comes; every test bounded by the pytest timeout.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import pytest

from batchpump import Canceled, ConnectError, MemoryJournal, PollPolicy, Pump, RunOptions

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests
from .test_engine import FAST


class Crash(BaseException):
    """Stands in for a kill -9 of ``batchpump cancel`` midway."""


def _all_created(provider: FakeProvider, count: int) -> anyio.Event:
    created = anyio.Event()

    def hook(*_: object) -> None:
        if provider.calls["create"] >= count:
            created.set()

    provider.after_create = hook
    return created


async def test_cancel_killed_midway_then_resume_finishes_the_cancel(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    journal = MemoryJournal()
    provider = FakeProvider(stall=True)
    created = _all_created(provider, 10)
    seen_intent: list[bool] = []

    def crash_on_third(batch_id: str) -> None:
        record = journal._runs  # what the journal holds at the moment of the request
        seen_intent.append(all(b'"cancel_requested":true' in raw for raw in record.values()))
        if provider.calls["cancel"] == 3:
            raise Crash

    provider.before_cancel = crash_on_third

    async def cancel_midway() -> None:
        async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=FAST)
            await created.wait()
            run.cancel()
            await run.wait()

    with pytest.raises(Crash):
        await cancel_midway()
    assert len(seen_intent) == 3
    assert all(seen_intent)  # journaled before the first request
    (record,) = await journal.list_runs()
    assert record.cancel_requested
    assert record.state == "running"

    provider.before_cancel = None
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        resumed = await pump.resume(record.run_id)  # a plain resume, as after a crash
        counts = await resumed.wait()
    assert provider.calls["create"] == 10  # no new batch
    assert all(b.info.state == "cancelled" for b in provider.batches.values())
    results = read_results(resumed.results_path)
    assert_exactly_once(results, ids)
    # The fake finished half of each batch before the cancel took effect.
    assert (counts.canceled, counts.succeeded) == (500, 500)
    assert sum(isinstance(r, Canceled) for r in results) == 500
    stored = await journal.get_run(record.run_id)
    assert stored is not None
    assert stored.state == "cancelled"


async def test_cancel_requests_are_retried(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    provider = FakeProvider(stall=True)
    created = _all_created(provider, 3)
    failed: set[str] = set()

    def fail_once(batch_id: str) -> None:
        if batch_id not in failed:
            failed.add(batch_id)
            raise ConnectError("connection reset")

    provider.before_cancel = fail_once
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=FAST)
        await created.wait()
        run.cancel()
        counts = await run.wait()
    assert failed == set(provider.batches)
    assert provider.calls["cancel"] == 6
    assert counts.canceled + counts.succeeded == 300
    assert_exactly_once(read_results(run.results_path), ids)


async def test_batch_stuck_cancelling_is_reported_not_polled_forever(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    provider = FakeProvider(stall=True, stuck_cancelling=True)
    created = _all_created(provider, 3)
    poll = msgspec.structs.replace(FAST.poll, cancelling_timeout=0.01)
    options = msgspec.structs.replace(FAST, poll=poll)
    assert isinstance(options, RunOptions)
    assert isinstance(poll, PollPolicy)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=options)
        await created.wait()
        run.cancel()
        counts = await run.wait()
    stats = run.statistics()
    assert sorted(stats.stuck_cancelling) == sorted(provider.batches)
    assert all(b.info.state == "cancelling" for b in provider.batches.values())
    assert (counts.canceled, counts.succeeded) == (150, 150)
    assert_exactly_once(read_results(run.results_path), ids)


async def test_resumed_cancel_adopts_a_batch_whose_create_was_not_recorded(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 100)
    journal = MemoryJournal()
    provider = FakeProvider(stall=True)

    def crash(*_: object) -> None:
        raise Crash  # killed after the create reached the provider, before it was recorded

    provider.after_create = crash

    async def start() -> None:
        async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=FAST)
            await run.wait()

    with pytest.raises(Crash):
        await start()
    (record,) = await journal.list_runs()
    (shard,) = await journal.load_shards(record.run_id)
    assert shard.state == "creating"
    assert len(provider.batches) == 1

    provider.after_create = None
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        counts = await pump.cancel(record.run_id)
    (batch,) = provider.batches.values()  # adopted and cancelled, no second batch
    assert batch.info.state == "cancelled"
    assert counts.total == 100
    assert_exactly_once(read_results(tmp_path / "in.results.jsonl"), ids)
