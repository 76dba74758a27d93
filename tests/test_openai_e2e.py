"""The whole pipeline on the OpenAI adapter against the emulator, with faults.

Rules: the emulator runs in-process on 127.0.0.1 port 0 with a scaled clock (batches finish in
tens of milliseconds); the client polls every few milliseconds; each test is bounded by the
pytest timeout. Invariants counted on the emulator's side: one result per line, one batch per
shard attempt (metadata tags), no line billed twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchpump import (
    BatchInfo,
    Limits,
    PollPolicy,
    Pump,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump._journal import SqliteJournal
from batchpump._models import ShardRecord
from batchpump.emulator import EmulatorConfig, RunningEmulator, open_emulator
from batchpump.providers.openai import OpenAI

from .helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-test-emulator-not-a-real-key"
OPTIONS = RunOptions(
    max_lines=200,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)
QUICK = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(config=QUICK, clock=ScaledClock(1_000)) as running:
        yield running


def provider(emu: RunningEmulator) -> OpenAI:
    return OpenAI(
        api_key=KEY,
        base_url=emu.openai_base_url,
        retry=RetryPolicy.no_wait(attempts=30),
        # Known ceilings, as a user with published limits would give: random storms then halve
        # the rate at most to 1/8 of them instead of to a rate learned from a quiet moment.
        limits=Limits(upload_rate=500, create_rate=500, poll_rate=100, download_rate=500),
    )


async def test_clean_run(emulator: RunningEmulator, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    async with Pump(provider(emulator), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=OPTIONS)
        counts = await run.wait()
    results = read_results(run.results_path)
    assert_exactly_once(results, ids)
    assert counts.succeeded == 1_000
    assert all(isinstance(r, Succeeded) for r in results)
    stats = emulator.emulator.stats
    assert len(stats.tags) == 5
    assert set(stats.tags.values()) == {1}
    assert set(stats.billing.values()) == {1}


async def test_429_storms_and_5xx_lose_nothing_and_create_once(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.emulator.set_faults(
        storm_429_rate=0.3,
        retry_after_seconds=0.02,
        error_5xx_rate=0.1,
        reset_after_create_rate=0.2,
        line_retryable_rate=0.05,
    )
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 2_000)
    opts = RunOptions(max_lines=200, max_attempts=10, poll=OPTIONS.poll, retry=OPTIONS.retry)
    async with Pump(provider(emulator), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=opts)
        counts = await run.wait()
    results = read_results(run.results_path)
    assert_exactly_once(results, ids)
    assert counts.succeeded == 2_000
    stats = emulator.emulator.stats
    assert stats.rate_limited > 0
    assert stats.server_errors > 0
    assert set(stats.tags.values()) == {1}, "a shard attempt was created twice"
    assert set(stats.billing.values()) == {1}, "a line was paid for twice"


class Crash(BaseException):
    """Stands in for the process dying at a chosen instant."""


class CrashAfterCreate(OpenAI):
    """Dies after the batch exists on the server but before the journal records it."""

    crash_on = 2
    creates = 0

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        batch = await super().create(shard, endpoint=endpoint, tag=tag)
        type(self).creates += 1
        if type(self).creates == self.crash_on:
            raise Crash
        return batch


async def test_crash_between_create_sent_and_recorded(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    state = tmp_path / "state"
    crashing = CrashAfterCreate(api_key=KEY, base_url=emulator.openai_base_url)

    async def first_process() -> None:
        async with Pump(crashing, state_dir=state) as pump:
            run = await pump.submit(src, options=OPTIONS)
            await run.wait()

    with pytest.raises(Crash):
        await first_process()
    journal = await SqliteJournal.open(state / "journal.sqlite3")
    try:
        (record,) = await journal.list_runs()
        states = [s.state for s in await journal.load_shards(record.run_id)]
    finally:
        await journal.aclose()
    assert "creating" in states
    before = emulator.emulator.stats.batches_created

    async with Pump(provider(emulator), state_dir=state) as pump:
        run = await pump.resume(record.run_id)
        await run.wait()
    assert_exactly_once(read_results(run.results_path), ids)
    stats = emulator.emulator.stats
    assert len(stats.tags) == 5
    assert set(stats.tags.values()) == {1}
    assert stats.batches_created == 5
    assert before >= 2
