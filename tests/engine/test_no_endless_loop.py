"""No endless loop: a shard over the provider's quota is split, requeues are bounded, and a
malformed output line settles as ``Errored`` after a bounded number of downloads.

Rules: in-memory provider and journal, fast polling, no requeue wait; every test bounded by
the pytest timeout.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from batchpump import Errored, MemoryJournal, Pump, Succeeded
from batchpump._engine import TokenBudget
from batchpump._engine.collect import MALFORMED_DOWNLOADS, MAX_REQUEUES

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests
from .test_engine import FAST


async def _run(tmp_path: Path, provider: FakeProvider, lines: int) -> tuple[list[str], Path]:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, lines)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=FAST)
        await run.wait()
    return ids, run.results_path


async def test_shard_over_the_quota_alone_is_split_and_resubmitted(tmp_path: Path) -> None:
    provider = FakeProvider(quota_lines=30)  # one 100-line shard never fits; 25 lines do
    ids, out = await _run(tmp_path, provider, 100)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    sizes = sorted(len(b.ids) for b in provider.batches.values())
    # 100 -> 2 x 50 (both in flight together: each requeued once, then split) -> 4 x 25
    assert sizes.count(100) == 1
    assert sizes.count(25) == 4
    assert set(sizes) == {25, 50, 100}
    assert set(provider.tags.values()) == {1}


async def test_requeues_are_bounded_and_name_the_flags(tmp_path: Path) -> None:
    provider = FakeProvider(quota_lines=0)  # not even one line fits
    ids, out = await _run(tmp_path, provider, 1)
    (result,) = read_results(out)
    assert_exactly_once([result], ids)
    assert isinstance(result, Errored)
    assert result.code == "queue_limit_exceeded"
    assert "--token-budget" in result.message
    assert "--max-lines" in result.message
    assert len(provider.batches) == MAX_REQUEUES + 1


async def test_malformed_output_line_settles_as_errored_after_bounded_downloads(
    tmp_path: Path,
) -> None:
    provider = FakeProvider(malformed={"req-7": 1_000})  # always malformed
    ids, out = await _run(tmp_path, provider, 100)
    results = {r.custom_id: r for r in read_results(out)}
    assert_exactly_once(list(results.values()), ids)
    bad = results["req-7"]
    assert isinstance(bad, Errored)
    assert bad.code == "malformed_output"
    assert not bad.retryable
    assert all(isinstance(r, Succeeded) for k, r in results.items() if k != "req-7")
    assert list(provider.downloads.values()) == [MALFORMED_DOWNLOADS + 1]
    assert len(provider.batches) == 1  # nothing billed again


async def test_a_transiently_malformed_download_is_read_again(tmp_path: Path) -> None:
    provider = FakeProvider(malformed={"req-7": 1})  # the first download only
    ids, out = await _run(tmp_path, provider, 100)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    assert list(provider.downloads.values()) == [2]


async def test_token_budget_learns_from_a_queue_limit() -> None:
    budget = TokenBudget(None)
    await budget.acquire("m", 600)
    await budget.acquire("m", 600)
    budget.learn("m", 1_200)  # a batch failed with 1,200 tokens queued
    assert budget.limit_of("m") == 1_199
    assert budget.limit_of("other") is None
    await budget.release("m", 600)
    with anyio.move_on_after(0.05) as scope:  # the second 600 no longer fits beside the first
        await budget.acquire("m", 600)
    assert scope.cancelled_caught
    await budget.release("m", 600)
    await budget.acquire("m", 1_500)  # alone, a bigger shard still goes (and may be split)
    assert budget.in_flight("m") == 1_500
