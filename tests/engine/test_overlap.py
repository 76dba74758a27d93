"""Downloads overlap the rest of the run, and results reach the file in order of arrival.

A finished batch goes to a collector as soon as a sweep sees it, while other shards are still
being uploaded or created, and the batch that finishes first is first in the results file,
whatever its place in the input. In memory (``FakeProvider``), no timers: the orderings are
forced with events and held batches, and a hang would be caught by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from batchpump import (
    BatchInfo,
    MemoryJournal,
    PollPolicy,
    Pump,
    Result,
    RetryPolicy,
    RunOptions,
    Succeeded,
)
from batchpump._models import ShardRecord

from ..fakes import FakeBatch, FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests

SHARD = 100  # lines per shard
FAST = RunOptions(
    max_lines=SHARD,
    poll=PollPolicy(interval_min=0.001, interval_max=0.005),
    retry=RetryPolicy.no_wait(),
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class GatedProvider(FakeProvider):
    """Creates after the first ``open_creates`` wait until batch ``gate_on``'s results were
    downloaded; batches in ``held`` stay where they are for ``hold_reads`` reads."""

    open_creates: int = 1
    gate_on: str = "batch_1"
    held: set[str] = field(default_factory=set)
    hold_reads: int = 0
    downloaded: anyio.Event = field(default_factory=anyio.Event)
    #: (event, batch id or shard index) in the order things happened.
    events: list[tuple[str, str]] = field(default_factory=list)
    _reads: dict[str, int] = field(default_factory=dict)

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        if self.calls["create"] >= self.open_creates:
            self.events.append(("create waits", str(shard.index)))
            await self.downloaded.wait()
        info = await super().create(shard, endpoint=endpoint, tag=tag)
        self.events.append(("created", info.id))
        return info

    def _step(self, batch: FakeBatch) -> BatchInfo:
        batch_id = batch.info.id
        self._reads[batch_id] = self._reads.get(batch_id, 0) + 1
        if batch_id in self.held and self._reads[batch_id] <= self.hold_reads:
            return batch.info
        return super()._step(batch)

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        self.events.append(("download starts", batch.id))
        async for result in super().results(batch, attempt=attempt):
            yield result
        self.events.append(("downloaded", batch.id))
        if batch.id == self.gate_on:
            self.downloaded.set()


async def _run(tmp_path: Path, provider: GatedProvider, lines: int) -> tuple[list[str], Path]:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, lines)
    with anyio.fail_after(30):
        async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=FAST)
            await run.wait()
    return ids, src.with_name("in.results.jsonl")


async def test_a_finished_batch_downloads_while_other_shards_wait_to_be_created(
    tmp_path: Path,
) -> None:
    """Creates 2 and 3 can only go once batch 1's results are downloaded: without overlap the
    run would never end."""
    provider = GatedProvider(open_creates=1)
    ids, out = await _run(tmp_path, provider, 3 * SHARD)
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    events = provider.events
    assert events.index(("download starts", "batch_1")) < events.index(("created", "batch_2"))
    assert ("create waits", "1") in events[: events.index(("download starts", "batch_1"))]
    # Shard 0's lines were the first to reach the file.
    first = {r.custom_id for r in results[:SHARD]}
    assert first == set(ids[:SHARD])


async def test_results_file_is_in_order_of_arrival_not_of_input(tmp_path: Path) -> None:
    """Batch 1 (the input's first 100 lines) is held for many reads: the later shards finish,
    download and reach the results file before it."""
    provider = GatedProvider(open_creates=10, held={"batch_1"}, hold_reads=40)
    provider.downloaded.set()
    ids, out = await _run(tmp_path, provider, 3 * SHARD)
    results = read_results(out)
    assert_exactly_once(results, ids)
    n = SHARD
    order = [e for e in provider.events if e[0] == "downloaded"]
    assert order[-1] == ("downloaded", "batch_1")
    assert {r.custom_id for r in results[-n:]} == set(ids[:n])  # shard 0 arrived last
    assert {r.custom_id for r in results[: 2 * n]} == set(ids[n:])
