"""The fault matrix: every fault the emulator can inject, one case each, nothing lost.

Rules: the emulator runs in-process on 127.0.0.1 port 0; the emulator, the provider client and
the pump share one ``ScaledClock`` (so a 300 s Retry-After or a 24 h completion window passes
in a fraction of a real second, and every client wait goes through that clock); each case is
bounded by a hard ``fail_after`` and the pytest timeout. Each case ends with the three
invariants checked on the emulator's side (one result per input line, one batch per shard
attempt tag, no line billed twice) plus a record of what happened, from
``run.statistics()``, the client's ``HttpStatistics`` and the emulator's ``Stats``. Mid-run
actions (someone else cancelling a batch, a fault ending) wait for a condition, never a time.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec

from batchpump import Limits, PollPolicy, Pump, RetryPolicy, RunOptions, ScaledClock
from batchpump._engine import RunStatistics
from batchpump._models import ResultCounts
from batchpump.emulator import EmulatorConfig, Faults, RunningEmulator, Stats, open_emulator
from batchpump.providers.openai import OpenAI

from .helpers import read_results, write_requests

logger = logging.getLogger("tests.faults")

KEY = "sk-test-faults-not-a-real-key"
LINES = 500
#: The emulator's seed here. Its fault draws are a fixed sequence, and a case makes only ~35
#: requests: with the default seed 0 the first draw below 0.1 is the 36th, so a 10 % fault
#: could miss a whole case when the request order shifts. Seed 9 draws one by the 5th request.
FAULT_SEED = 9
SHARDS = 10
#: Emulator (and client) seconds per real second: a default batch takes 14 ms.
SCALE = 1_000.0
#: Real seconds a case may take.
CASE_TIMEOUT = 30.0
#: Configured rates (requests per second): AIMD then halves from a known ceiling. Left to be
#: learned, a ScaledClock makes the client crawl (see ``test_429_storm_learned_rate``).
LIMITS = Limits(upload_rate=500.0, create_rate=500.0, poll_rate=500.0, download_rate=500.0)


@dataclass
class Outcome:
    counts: ResultCounts
    results: list[Line]
    run: RunStatistics
    http: dict[str, Any]
    stats: Stats


Action = Callable[[RunningEmulator, Callable[[], RunStatistics]], Coroutine[Any, Any, None]]


@asynccontextmanager
async def emulator(faults: Faults, clock: ScaledClock) -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(faults=faults, seed=FAULT_SEED)
    async with open_emulator(config=config, clock=clock) as running:
        yield running


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, looking at it every 2 ms of real time (bounded by the case)."""
    while not condition():  # noqa: ASYNC110  # the run's statistics have no event to wait on
        await anyio.sleep(0.002)


async def run_case(
    tmp_path: Path,
    faults: Faults,
    *,
    scale: float = SCALE,
    retry: RetryPolicy | None = None,
    options: RunOptions | None = None,
    during: Action | None = None,
    billed_once: bool = True,
    limits: Limits | None = None,
) -> Outcome:
    clock = ScaledClock(scale)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, LINES)
    retry = retry or RetryPolicy(attempts=40, timeout=None, wait_initial=0.5, wait_max=5.0)
    opts = options or RunOptions(max_lines=LINES // SHARDS, max_attempts=6)
    async with emulator(faults, clock) as emu:
        provider = OpenAI(api_key=KEY, base_url=emu.openai_base_url, retry=retry,
                          limits=limits or LIMITS, clock=clock)  # fmt: skip
        with anyio.fail_after(CASE_TIMEOUT):
            async with Pump(provider, state_dir=tmp_path / "state", clock=clock) as pump:
                run = await pump.submit(src, options=opts)
                async with anyio.create_task_group() as tg:
                    if during is not None:
                        tg.start_soon(during, emu, run.statistics)
                    counts = await run.wait()
                    tg.cancel_scope.cancel()
                http = provider.statistics()
        stats = emu.emulator.stats
        results = read_lenient(run.results_path)
        check_exactly_once(results, ids)
        assert counts.total == LINES
        assert stats.tags
        assert set(stats.tags.values()) == {1}, stats.duplicate_tags()
        if billed_once:
            assert not stats.double_billed(), stats.double_billed()
        assert stats.batches_created == len(stats.tags)
        record = run.statistics()
        logger.info(
            "%s: %s; run retries=%d requeues=%d batches=%d; http %s; emulator faults %s",
            tmp_path.name,
            counts,
            record.retries,
            record.requeues,
            record.batches_created,
            http,
            dict(stats.faults),
        )
        return Outcome(
            counts=counts,
            results=results,
            run=run.statistics(),
            http={
                "requests": http.requests,
                "retries": http.retries,
                "rate_limited": http.rate_limited,
                "server_errors": http.server_errors,
                "transport_errors": http.transport_errors,
            },
            stats=stats,
        )


class Line(msgspec.Struct):
    """What the fault matrix reads back of a result line."""

    custom_id: str
    status: str


_lines = msgspec.json.Decoder(Line)


def read_lenient(path: Path) -> list[Line]:
    """The results file's ``(custom_id, status)`` pairs.

    ``read_results`` cannot be used here: msgspec cannot decode ``Errored.body``
    (``msgspec.Raw | None``) once it holds an object (see ``test_errored_bodies_read_back``).
    """
    return _lines.decode_lines(path.read_bytes())


def check_exactly_once(results: list[Line], ids: list[str]) -> None:
    counts = Counter(r.custom_id for r in results)
    assert not {k: n for k, n in counts.items() if n > 1}, "a result given twice"
    assert set(counts) == set(ids)


def all_succeeded(outcome: Outcome) -> None:
    assert outcome.counts.succeeded == LINES
    assert {r.status for r in outcome.results} == {"succeeded"}
    assert sum(outcome.stats.billing.values()) == LINES


async def test_429_storm_with_retry_after_300s(tmp_path: Path) -> None:
    out = await run_case(
        tmp_path, Faults(storm_429_rate=0.3, retry_after_seconds=300.0), scale=10_000.0
    )
    all_succeeded(out)
    assert out.stats.faults["storm429"] > 0
    assert out.http["rate_limited"] == out.stats.faults["storm429"]
    assert out.run.batches_created == SHARDS


async def test_ten_percent_5xx(tmp_path: Path) -> None:
    out = await run_case(tmp_path, Faults(error_5xx_rate=0.1))
    all_succeeded(out)
    assert out.stats.faults["5xx"] > 0
    assert out.http["server_errors"] >= out.stats.faults["5xx"] - out.run.retries


async def test_connection_resets_before_and_after_create(tmp_path: Path) -> None:
    out = await run_case(tmp_path, Faults(reset_rate=0.1, reset_after_create_rate=0.3))
    all_succeeded(out)
    assert out.stats.faults["reset"] + out.stats.faults["reset_after_create"] > 0
    assert out.http["transport_errors"] > 0
    assert out.run.batches_created == SHARDS  # answers lost after create were adopted, not redone


async def test_server_stalls_past_the_request_timeout(tmp_path: Path) -> None:
    """Stalled answers time out on the client (request_timeout 0.1 real s < 0.5 s stall); the
    stalled requests are then handled late by the server, so a stalled create exists only
    after the client gave up on it."""
    retry = RetryPolicy(attempts=40, timeout=None, wait_initial=0.5, request_timeout=0.1)
    out = await run_case(tmp_path, Faults(slow_rate=0.1, slow_seconds=500.0), retry=retry)
    all_succeeded(out)
    assert out.stats.faults["slow"] > 0
    assert out.http["transport_errors"] > 0


async def test_truncated_bodies(tmp_path: Path) -> None:
    out = await run_case(tmp_path, Faults(truncate_rate=0.1))
    all_succeeded(out)
    assert out.stats.faults["truncate"] > 0
    # Truncated JSON answers are retried by the HTTP client; truncated result downloads by
    # the collector (counted as run retries).
    assert out.http["transport_errors"] + out.run.retries > 0


async def test_html_502_page(tmp_path: Path) -> None:
    out = await run_case(tmp_path, Faults(html_502_rate=0.15))
    all_succeeded(out)
    assert out.stats.faults["html502"] > 0
    assert out.http["server_errors"] > 0


async def test_partial_result_files(tmp_path: Path) -> None:
    """Retryable line errors go into later attempts; fatal ones are final ``Errored``."""
    out = await run_case(tmp_path, Faults(line_retryable_rate=0.1, line_fatal_rate=0.05))
    errored = [r for r in out.results if r.status == "errored"]
    assert errored, "no fatal line errors were drawn"
    assert out.counts.errored == len(errored)
    assert out.counts.succeeded + out.counts.errored == LINES
    assert out.run.retries > 0
    assert out.run.batches_created > SHARDS
    assert sum(out.stats.billing.values()) == out.counts.succeeded


async def _end_fault(emu: RunningEmulator, stats: Callable[[], RunStatistics], **off: Any) -> None:
    """Turn a fault off once the run has reacted to it (its first retry attempt exists)."""
    await until(lambda: stats().retries > 0 or stats().requeues > 0)
    emu.emulator.set_faults(**off)


async def test_expired_batches(tmp_path: Path) -> None:
    """Batches expire at the end of the 24 h window with half their lines done; the other
    half goes into a new attempt. A 24 h window at 100,000x is 0.86 real seconds."""

    async def stop(emu: RunningEmulator, stats: Callable[[], RunStatistics]) -> None:
        await _end_fault(emu, stats, expire=False)

    out = await run_case(
        tmp_path, Faults(expire=True, expire_done_fraction=0.5), scale=100_000.0, during=stop
    )
    all_succeeded(out)
    assert out.run.retries >= SHARDS
    assert out.run.batches_created >= 2 * SHARDS


async def test_batch_cancelled_by_someone_else(tmp_path: Path) -> None:
    """Another client cancels a running batch over HTTP; its unfinished lines are resubmitted."""
    cancelled: list[str] = []

    async def cancel_one(emu: RunningEmulator, stats: Callable[[], RunStatistics]) -> None:
        await until(lambda: stats().shards_in_flight > 0)
        headers = {"Authorization": "Bearer sk-someone-else"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{emu.openai_base_url}/batches") as resp:
                batches = (await resp.json())["data"]
            victim = next(b["id"] for b in batches if b["status"] in ("validating", "in_progress"))
            async with session.post(f"{emu.openai_base_url}/batches/{victim}/cancel") as resp:
                assert resp.status == 200
                cancelled.append(victim)

    config_slow = Faults()  # default timing: 14 s per batch = 14 ms real; cancel takes 2 ms
    out = await run_case(tmp_path, config_slow, scale=200.0, during=cancel_one)
    all_succeeded(out)
    assert len(cancelled) == 1
    assert out.stats.route_count("openai.batches.cancel") == 1  # ours: none
    assert out.run.retries >= 1
    assert out.run.batches_created >= SHARDS + 1


async def test_completed_with_no_output_file(tmp_path: Path) -> None:
    """``completed`` but ``output_file_id: null``: re-read for the grace, then resubmitted.

    The emulator's output-less batches never get their file, though their lines ran and were
    billed: resubmitting is the only way to results, so those lines are paid twice (exactly
    twice; every other line once)."""

    async def stop(emu: RunningEmulator, stats: Callable[[], RunStatistics]) -> None:
        await _end_fault(emu, stats, completed_without_output=False)

    opts = RunOptions(
        max_lines=LINES // SHARDS, max_attempts=6, poll=PollPolicy(missing_output_grace=30.0)
    )
    out = await run_case(
        tmp_path,
        Faults(completed_without_output=True),
        options=opts,
        during=stop,
        billed_once=False,
    )
    assert out.counts.succeeded == LINES
    assert out.run.retries >= 1
    assert out.run.batches_created > SHARDS
    assert set(out.stats.billing.values()) <= {1, 2}
    assert len(out.stats.double_billed()) <= LINES


async def test_stuck_finalizing(tmp_path: Path) -> None:
    """A batch stuck in ``finalizing`` past the timeout is cancelled and collected."""

    opts = RunOptions(
        max_lines=LINES // SHARDS, max_attempts=6, poll=PollPolicy(finalizing_timeout=60.0)
    )
    out = await run_case(tmp_path, Faults(stuck_finalizing=True), options=opts)
    all_succeeded(out)
    # Every batch got stuck with all its lines done: cancelling it released the output file,
    # so nothing needed another attempt.
    assert out.stats.route_count("openai.batches.cancel") == SHARDS
    assert out.run.batches_created == SHARDS


async def test_enqueued_token_limit_requeues(tmp_path: Path) -> None:
    """Batches over the enqueued-token quota fail validation and are requeued, not failed."""
    # One shard is ~50 lines x ~80 body bytes / 4 = ~1,000 tokens: a few fit, the rest wait.
    opts = RunOptions(max_lines=LINES // SHARDS, requeue_wait=10.0)
    out = await run_case(tmp_path, Faults(enqueued_token_limit=3_000), options=opts)
    all_succeeded(out)
    assert out.run.requeues > 0
    # A requeue is one batch more; a split (the shard failed with nothing else in flight
    # by the time it was collected) is two.
    assert out.run.batches_created == SHARDS + out.run.requeues + out.run.splits


async def test_errored_bodies_read_back(tmp_path: Path) -> None:
    clock = ScaledClock(SCALE)
    src = tmp_path / "in.jsonl"
    write_requests(src, 50)
    async with emulator(Faults(line_fatal_rate=0.5), clock) as emu:
        provider = OpenAI(api_key=KEY, base_url=emu.openai_base_url, clock=clock)
        with anyio.fail_after(CASE_TIMEOUT):
            async with Pump(provider, state_dir=tmp_path / "state", clock=clock) as pump:
                run = await pump.submit(src)
                seen = [result async for result in run.results()]
    assert len(seen) == 50
    assert len(read_results(run.results_path)) == 50


async def test_429_storm_learned_rate(tmp_path: Path) -> None:
    await run_case(
        tmp_path,
        Faults(storm_429_rate=0.3, retry_after_seconds=300.0),
        scale=10_000.0,
        limits=Limits(),
    )
