"""Cancelling a run's scope at each await that holds a resource leaks nothing and loses nothing.

Rules: the emulator runs in-process on 127.0.0.1 port 0 with a ``ScaledClock`` shared by the
client; the cancel is triggered from inside the stage it targets (a provider or journal hook
calls ``scope.cancel()`` and then awaits the real call, so the cancellation lands on that
await), never by a timer. After the scope: no new asyncio task is left, no file descriptor is
left open (``/proc/self/fd``), and aiohttp's unclosed-session warnings would fail the test
(``filterwarnings = error``). Then a resume in a fresh pump completes the run with exactly one
result per line, one batch per shard-attempt tag and no line billed twice. Each test is bounded
by ``fail_after`` and the pytest timeout.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Literal

import anyio
import pytest

from batchpump import BatchInfo, Limits, Pump, Result, RunOptions, ScaledClock
from batchpump._journal import SqliteJournal
from batchpump._models import RunRecord, ShardRecord
from batchpump.emulator import RunningEmulator, open_emulator
from batchpump.providers.openai import OpenAI

from ..fakes import WrappedJournal
from ..helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-test-cancel-not-a-real-key"
LIMITS = Limits(upload_rate=500.0, create_rate=500.0, poll_rate=500.0, download_rate=500.0)
OPTIONS = RunOptions(max_lines=50)
Point = Literal["sharding", "upload", "create", "poll", "download"]


class Hooked(OpenAI):
    """Cancels ``scope`` when the run reaches ``point``, then goes on into the real call."""

    point: Point | None = None
    scope: anyio.CancelScope | None = None

    def _hit(self, point: Point) -> None:
        if self.point == point and self.scope is not None:
            self.scope.cancel()

    async def prepare(self, shard: ShardRecord) -> str:
        self._hit("upload")
        return await super().prepare(shard)

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        self._hit("create")
        return await super().create(shard, endpoint=endpoint, tag=tag)

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        self._hit("poll")
        async for info in super().list_batches():
            yield info

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        self._hit("download")
        async for result in super().results(batch, attempt=attempt):
            yield result


class CancelAfterOpen(WrappedJournal):
    """The SQLite journal, cancelling ``scope`` once the run is recorded: the cancellation
    lands on the next await of ``submit``, the sharding of the input in a worker thread."""

    def __init__(self, inner: SqliteJournal, scope: anyio.CancelScope) -> None:
        super().__init__(inner)
        self.scope = scope

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        opened = await self.inner.open_run(run)
        self.scope.cancel()
        return opened


def committed_results(out: Path, count: int) -> list[Result]:
    return read_results(out)[:count] if out.exists() else []


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tasks() -> int:
    return len(asyncio.all_tasks())


def client(emu: RunningEmulator, clock: ScaledClock) -> Hooked:
    return Hooked(api_key=KEY, base_url=emu.openai_base_url, clock=clock, limits=LIMITS)


async def journal_state(state: Path) -> tuple[RunRecord, list[ShardRecord]]:
    journal = await SqliteJournal.open(state / "journal.sqlite3")
    try:
        (record,) = await journal.list_runs()
        return record, await journal.load_shards(record.run_id)
    finally:
        await journal.aclose()


@pytest.mark.parametrize("point", ["sharding", "upload", "create", "poll", "download"])
async def test_cancel_scope_leaks_nothing_and_resumes_exactly_once(
    tmp_path: Path, point: Point
) -> None:
    clock = ScaledClock(1_000)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    state = tmp_path / "state"
    async with open_emulator(clock=clock) as emu:
        await anyio.lowlevel.checkpoint()
        fds, running = open_fds(), tasks()
        with anyio.fail_after(30):
            with anyio.CancelScope() as scope:
                provider = client(emu, clock)
                provider.scope, provider.point = scope, point
                journal = None
                if point == "sharding":
                    inner = await SqliteJournal.open(state / "journal.sqlite3")
                    journal = CancelAfterOpen(inner, scope)
                try:
                    async with Pump(provider, state_dir=state, clock=clock, journal=journal) as p:
                        run = await p.submit(src, options=OPTIONS)
                        await run.wait()
                finally:
                    if journal is not None:
                        with anyio.CancelScope(shield=True):
                            await journal.aclose()
            assert scope.cancelled_caught, f"the run finished before reaching {point}"
        await anyio.lowlevel.checkpoint()
        assert tasks() == running, "a task outlived the cancelled scope"
        assert open_fds() == fds, "a file descriptor outlived the cancelled scope"

        record, shards = await journal_state(state)
        assert record.state in ("sharding", "running")
        for shard in shards:
            if shard.state in ("submitted", "collecting"):
                assert shard.batch_id
            if shard.state == "creating":
                assert shard.tag
        committed = committed_results(Path(record.out_path), record.counts.total)
        assert len({r.custom_id for r in committed}) == len(committed)

        with anyio.fail_after(30):
            async with Pump(client(emu, clock), state_dir=state, clock=clock) as pump:
                run = await pump.submit(src, options=OPTIONS)  # same input: resumes
                assert run.id == record.run_id
                counts = await run.wait()
        assert counts.succeeded == len(ids)
        assert_exactly_once(read_results(run.results_path), ids)
        stats = emu.emulator.stats
        assert set(stats.tags.values()) <= {1}, stats.duplicate_tags()
        assert not stats.double_billed()
        assert stats.batches_created == len(stats.tags)


async def test_pump_cancel_cancels_provider_batches_and_records_it(tmp_path: Path) -> None:
    clock = ScaledClock(50)  # batches run long enough (14 s / 50 = 0.28 s) to be cancelled
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    state = tmp_path / "state"
    async with open_emulator(clock=clock) as emu:
        with anyio.fail_after(30):
            async with Pump(client(emu, clock), state_dir=state, clock=clock) as pump:
                run = await pump.submit(src, options=OPTIONS)
                while run.statistics().shards_in_flight < 6:  # noqa: ASYNC110  # no event to wait on
                    await anyio.sleep(0.005)
                counts = await pump.cancel(run.id)
        assert counts.total == len(ids)
        assert counts.canceled > 0
        assert run.statistics().state == "cancelled"
        assert emu.emulator.stats.route_count("openai.batches.cancel") >= 1
        results = read_results(run.results_path)
        assert_exactly_once(results, ids)
        record, _ = await journal_state(state)
        assert record.state == "cancelled"
        assert record.counts.total == len(ids)
        assert not emu.emulator.stats.double_billed()
