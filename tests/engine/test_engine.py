"""The engine end to end over an in-memory provider and journal.

Rules: no sockets, no timers worth waiting for (poll intervals of a few milliseconds, batches
advance one state per read), every test bounded by the pytest timeout. The invariant checked
everywhere: every input line has exactly one final result, and no shard attempt got two batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from batchpump import (
    BatchInfo,
    Canceled,
    Errored,
    InputError,
    Limits,
    MemoryJournal,
    PollPolicy,
    Pump,
    Rejected,
    RetryPolicy,
    Run,
    RunOptions,
    Succeeded,
    UsageError,
)
from batchpump._models import Capabilities, ShardRecord

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests

FAST = RunOptions(
    max_lines=100,
    poll=PollPolicy(interval_min=0.001, interval_max=0.005),
    retry=RetryPolicy.no_wait(),
    requeue_wait=0.0,
)


class Crash(BaseException):
    """Stands in for a kill -9 at a chosen point (BaseException: nothing may swallow it)."""


async def run_once(
    tmp_path: Path, provider: FakeProvider, ids_count: int = 1_000, **kw: object
) -> tuple[list[str], Path, MemoryJournal]:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, ids_count)
    journal = MemoryJournal()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=RunOptions(**{**_fast_kwargs(), **kw}))  # type: ignore[arg-type]
        await run.wait()
    return ids, src.with_name("in.results.jsonl"), journal


def _fast_kwargs() -> dict[str, object]:
    return {f: getattr(FAST, f) for f in FAST.__struct_fields__ if f != "endpoint"}


async def test_every_line_once_one_batch_per_attempt(tmp_path: Path) -> None:
    provider = FakeProvider()
    ids, out, _ = await run_once(tmp_path, provider)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    assert len(provider.tags) == 10
    assert set(provider.tags.values()) == {1}
    assert set(provider.billed.values()) == {1}


async def test_retryable_lines_go_again_until_max_attempts(tmp_path: Path) -> None:
    provider = FakeProvider(flaky={"req-1": 1, "req-2": 2, "req-3": 9})
    ids, out, _ = await run_once(tmp_path, provider, max_attempts=3)
    results = {r.custom_id: r for r in read_results(out)}
    assert_exactly_once(list(results.values()), ids)
    assert isinstance(results["req-1"], Succeeded)
    assert results["req-1"].attempt == 2
    assert isinstance(results["req-2"], Succeeded)
    assert results["req-2"].attempt == 3
    failed = results["req-3"]
    assert isinstance(failed, Errored)
    assert failed.attempt == 3
    assert failed.retryable
    assert set(provider.tags.values()) == {1}


async def test_expired_batch_unfinished_lines_resubmitted(tmp_path: Path) -> None:
    provider = FakeProvider(expire={1, 2})
    ids, out, _ = await run_once(tmp_path, provider)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    assert set(provider.billed.values()) == {1}
    assert len(provider.tags) == 12  # 10 shards + the second attempt of two expired ones


async def test_queue_limited_batch_is_requeued_not_failed(tmp_path: Path) -> None:
    provider = FakeProvider(queue_limited={1, 2, 3})
    ids, out, journal = await run_once(tmp_path, provider, max_attempts=1)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    (run,) = await journal.list_runs()
    requeued = [s for s in await journal.load_shards(run.run_id) if s.state == "requeued"]
    assert len(requeued) == 3


async def test_lost_create_answer_is_reconciled_not_recreated(tmp_path: Path) -> None:
    provider = FakeProvider(lose_create_answer={1, 4, 5})
    ids, out, _ = await run_once(tmp_path, provider)
    assert_exactly_once(read_results(out), ids)
    assert len(provider.tags) == 10
    assert set(provider.tags.values()) == {1}
    assert provider.calls["reconcile"] == 3


@pytest.mark.parametrize("crash_on", [1, 5])
async def test_crash_between_create_sent_and_recorded_resumes_without_second_batch(
    tmp_path: Path, crash_on: int
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    journal = MemoryJournal()
    created = 0

    def crash(shard: ShardRecord, batch: BatchInfo) -> None:
        nonlocal created
        created += 1
        if created == crash_on:
            raise Crash

    provider = FakeProvider(after_create=crash)

    async def first_process() -> None:
        async with Pump(provider, journal=journal, state_dir=tmp_path / "s") as pump:
            run = await pump.submit(src, options=FAST)
            await run.wait()

    with pytest.raises(Crash):
        await first_process()
    (record,) = await journal.list_runs()
    creating = [s for s in await journal.load_shards(record.run_id) if s.state == "creating"]
    assert creating, "the crash hook fired between create sent and create recorded"

    provider.after_create = None
    async with Pump(provider, journal=journal, state_dir=tmp_path / "s") as pump:
        run = await pump.resume(record.run_id)
        await run.wait()
    assert_exactly_once(read_results(src.with_name("in.results.jsonl")), ids)
    assert len(provider.tags) == 10
    assert set(provider.tags.values()) == {1}
    assert set(provider.billed.values()) == {1}


async def test_same_input_again_resumes_the_finished_run(tmp_path: Path) -> None:
    provider = FakeProvider()
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    journal = MemoryJournal()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "s") as pump:
        first = await pump.submit(src, options=FAST)
        await first.wait()
    async with Pump(provider, journal=journal, state_dir=tmp_path / "s") as pump:
        again = await pump.submit(src, options=FAST)
        assert again.id == first.id
        results = [r async for r in again.results()]
    assert_exactly_once(results, ids)
    assert provider.calls["create"] == 3


async def test_results_iterator_streams_every_line(tmp_path: Path) -> None:
    provider = FakeProvider(flaky={"req-7": 1})
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 500)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "s") as pump:
        run = await pump.submit(src, options=FAST)
        results = [r async for r in run.results()]
        counts = await run.wait()
    assert_exactly_once(results, ids)
    assert counts.succeeded == 500
    stats = run.statistics()
    assert stats.results.succeeded == 500
    assert stats.state == "done"
    assert stats.batches_created == 6


async def test_cancel_settles_every_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    run: Run | None = None

    def cancel_on_second_create(shard: ShardRecord, batch: BatchInfo) -> None:
        # Deterministic: the run is cancelled the moment its second batch exists.
        if batch.id == "batch_2" and run is not None:
            run.cancel()

    provider = FakeProvider(after_create=cancel_on_second_create)
    # One batch at a time (token budget 1): the second exists only once the first is collected.
    opts = RunOptions(max_lines=100, token_budget=1, poll=FAST.poll, retry=FAST.retry)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "s") as pump:
        run = await pump.submit(src, options=opts)
        await run.wait()
    results = read_results(src.with_name("in.results.jsonl"))
    assert_exactly_once(results, ids)
    kinds = Counter(type(r) for r in results)
    assert provider.calls["create"] == 2
    assert provider.calls["cancel"] == 1  # the second batch, cancelled at the provider
    assert kinds[Canceled] >= 800  # the eight shards never sent, plus the cancelled batch's rest
    assert run.statistics().state == "cancelled"


async def test_bad_input_raises_before_any_call(tmp_path: Path) -> None:
    provider = FakeProvider()
    src = tmp_path / "in.jsonl"
    write_requests(src, 10)
    with src.open("ab") as f:
        f.write(b"not json\n")
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "s") as pump:
        with pytest.raises(InputError) as info:
            await pump.submit(src, options=FAST)
    assert info.value.lines == [11]
    assert sum(provider.calls.values()) == 1  # aclose only
    assert provider.calls["aclose"] == 1


async def test_skip_invalid_lines_become_rejected(tmp_path: Path) -> None:
    provider = FakeProvider()
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 50)
    with src.open("ab") as f:
        f.write(b'{"custom_id": "bad", "body": 3}\n')
    opts = RunOptions(on_invalid="skip", max_lines=100, poll=FAST.poll, retry=FAST.retry)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "s") as pump:
        run = await pump.submit(src, options=opts)
        counts = await run.wait()
    results = read_results(src.with_name("in.results.jsonl"))
    assert_exactly_once(results, [*ids, "bad"])
    (rejected,) = [r for r in results if isinstance(r, Rejected)]
    assert rejected.line == 51
    assert counts.rejected == 1
    assert counts.succeeded == 50


async def test_token_budget_holds_back_submissions(tmp_path: Path) -> None:
    peak = 0
    in_flight: set[str] = set()
    provider = FakeProvider(capabilities=Capabilities(max_lines=100))

    def watch(shard: ShardRecord, batch: BatchInfo) -> None:
        nonlocal peak
        in_flight.add(batch.id)
        done = {b for b in in_flight if provider.batches[b].info.terminal}
        in_flight.difference_update(done)
        peak = max(peak, len(in_flight))

    provider.after_create = watch
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    opts = RunOptions(max_lines=100, token_budget=1, poll=FAST.poll, retry=FAST.retry)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "s") as pump:
        run = await pump.submit(src, options=opts)
        await run.wait()
    assert_exactly_once(read_results(src.with_name("in.results.jsonl")), ids)
    assert peak == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RunOptions(max_attempts=0), "max_attempts"),
        (lambda: RunOptions(submit_concurrency=0), "submit_concurrency"),
        (lambda: RunOptions(token_budget=0), "token_budget"),
        (lambda: RetryPolicy(attempts=0), "attempts"),
        (lambda: RetryPolicy(wait_jitter=2), "wait_jitter"),
        (lambda: PollPolicy(interval_min=5, interval_max=1), "interval_max"),
        (lambda: Limits(create_rate=0), "create_rate"),
        (lambda: Limits(poll_concurrency=0), "poll_concurrency"),
    ],
)
def test_invalid_options_raise_usage_error(make: Callable[[], object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make()
