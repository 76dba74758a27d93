"""Several workers, one run: a PostgreSQL journal, claims on shard attempts and the shared
limiter on Redis.

Against the session's real PostgreSQL and Redis (``tests/servers.py``) and the emulator on
127.0.0.1 port 0. The invariants are counted on the emulator's side: one result per line, one
batch per shard-attempt tag. Waits for a state (a batch submitted, a child's exit) are bounded by
``anyio.fail_after``; nothing asserts a time.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.lowlevel
import asyncpg
import msgspec
import pytest

from batchpump import (
    Limits,
    ManualClock,
    PollPolicy,
    Pump,
    RetryPolicy,
    Run,
    RunOptions,
    ScaledClock,
)
from batchpump._errors import ClosedError
from batchpump._journal import LeaseLostError, PostgresJournal, SqliteJournal
from batchpump._models import BatchInfo, ShardRecord
from batchpump._workers import JournalClaims, prepare_leased
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, open_emulator
from batchpump.emulator._server import RunningEmulator
from batchpump.providers.openai import OpenAI
from benchmarks.soak_workers import soak
from tests.helpers import assert_exactly_once, read_results, write_requests
from tests.journal.records import make_run, make_shard
from tests.journal.test_postgres import lapse
from tests.servers import PostgresServer, RedisServer

logger = logging.getLogger("tests.workers")

KEY = "sk-test-emulator-not-a-real-key"
OPTIONS = RunOptions(
    max_lines=100,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1)
    async with open_emulator(config=config, clock=ScaledClock(1_000)) as running:
        yield running


def provider(emu: RunningEmulator) -> OpenAI:
    return OpenAI(
        api_key=KEY,
        base_url=emu.openai_base_url,
        retry=RetryPolicy.no_wait(attempts=30),
        limits=Limits(upload_rate=500, create_rate=500, poll_rate=100, download_rate=500),
    )


async def test_two_workers_join_one_run(
    emulator: RunningEmulator, postgres_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 1_000)
    out = tmp_path / "out.jsonl"
    first = Pump(
        provider(emulator),
        state_dir=tmp_path / "state",
        journal=postgres_url,
        limiter=redis_server.url,
        lease_seconds=5,
    )
    second = Pump(
        provider(emulator),
        state_dir=tmp_path / "state",
        journal=postgres_url,
        limiter=redis_server.url,
        lease_seconds=5,
    )
    seen: dict[str, object] = {}
    async with first, second:
        run = await first.submit(src, out=out, options=OPTIONS)
        with anyio.fail_after(60):
            # The second worker computes the same run id and joins the run: it claims what the
            # first one has not (maybe nothing: the run may be done by then).
            async with anyio.create_task_group() as tg:

                async def join() -> None:
                    joined = await second.submit(src, out=out, options=OPTIONS)
                    seen["id"] = joined.id
                    seen["counts"] = await joined.wait()

                tg.start_soon(join)
                seen["first"] = await run.wait()
        assert first._limiter is not None
        assert first._limiter.turns > 0  # the calls took their turns through Redis
    assert seen["id"] == run.id
    assert seen["counts"] == seen["first"]
    assert_exactly_once(read_results(out), ids)
    stats = emulator.emulator.stats
    assert len(stats.tags) == 10  # 10 shards, each created once, by one worker
    assert set(stats.tags.values()) == {1}
    async with await PostgresJournal.open(postgres_url) as journal:
        (record,) = await journal.list_runs()
        assert (record.run_id, record.state, record.counts.succeeded) == (run.id, "done", 1_000)
        assert await journal.run_holder(run.id) is None  # released at the end


async def test_results_live_in_the_journal_and_any_worker_serves_them(
    emulator: RunningEmulator, postgres_url: str, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 500)
    out = tmp_path / "shared" / "out.jsonl"
    out.parent.mkdir()
    async with Pump(provider(emulator), state_dir=tmp_path / "a", journal=postgres_url) as pump:
        run = await pump.submit(src, out=out, options=OPTIONS)
        with anyio.fail_after(60):
            counts = await run.wait()
            served = [r.custom_id async for r in run.results()]
    assert counts.succeeded == 500
    assert sorted(served) == sorted(ids)
    written = out.read_bytes()
    assert_exactly_once(read_results(out), ids)
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temporary left
    # The worker's scratch file of its own results is gone: they are all in the journal.
    assert list((tmp_path / "a" / "runs" / run.id).glob("results.*.jsonl")) == []
    async with await PostgresJournal.open(postgres_url) as journal:
        (record,) = await journal.list_runs()
        assert record.out_offset == len(written)
        assert await journal.read_results(run.id, limit=1 << 30) == written
    # Another machine: its own state directory, no results file; the run is found done, its
    # results come from the journal, and it writes ``out`` again, whole.
    out.unlink()
    async with Pump(provider(emulator), state_dir=tmp_path / "b", journal=postgres_url) as pump:
        again = await pump.submit(src, out=tmp_path / "ignored.jsonl", options=OPTIONS)
        assert again.id == run.id
        with anyio.fail_after(60):
            assert await again.wait() == counts
            served = [r.custom_id async for r in again.results()]
    assert sorted(served) == sorted(ids)
    assert out.read_bytes() == written
    assert not (tmp_path / "ignored.jsonl").exists()  # the run's ``out`` is the first worker's
    exported = tmp_path / "exported.jsonl"
    await export_cli(run.id, exported, postgres_url)
    assert exported.read_bytes() == written


async def lease_left(url: str) -> float:
    """Seconds left on run-1's lease, by the server's clock."""
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval(
            "SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM batchpump_leases"
            " WHERE key = 'run:run-1'"
        )
    finally:
        await conn.close()
    return float(left)


async def test_preparing_a_run_longer_than_its_lease_keeps_the_lease(postgres_url: str) -> None:
    """Rebuilding a large results copy or sharding may outlast a term: the lease is renewed
    meanwhile, so the first commit after it is not fenced."""
    clock = ManualClock()
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())
        assert await journal.acquire_run("run-1", 30) == 1

        async def prepare() -> str:
            for _ in range(5):  # five thirds of a term pass while preparing
                await lapse(postgres_url, left=12)  # the server saw the same time pass
                clock.advance(10)  # a renewal falls due
                with anyio.fail_after(30):
                    while await lease_left(postgres_url) < 20:
                        await anyio.lowlevel.checkpoint()
            await journal.commit(run=make_run(state="running"))
            return "prepared"

        assert await prepare_leased(prepare, journal, "run-1", ttl=30, clock=clock) == "prepared"
        holder = await journal.run_holder("run-1")
        assert holder is not None
        assert holder.owner == journal.owner
        assert (await journal.get_run("run-1") or make_run()).state == "running"


async def test_a_lease_lost_while_preparing_cancels_the_preparation(postgres_url: str) -> None:
    clock = ManualClock()
    reached: list[str] = []
    async with (
        await PostgresJournal.open(postgres_url) as journal,
        await PostgresJournal.open(postgres_url) as other,
    ):
        await journal.open_run(make_run())
        assert await journal.acquire_run("run-1", 30) == 1

        async def prepare() -> None:
            await lapse(postgres_url)
            assert await other.acquire_run("run-1", 30) == 2  # another worker took it
            clock.advance(10)  # the renewal falls due, and fails
            await anyio.sleep_forever()
            reached.append("never")

        with pytest.raises(LeaseLostError):
            await prepare_leased(prepare, journal, "run-1", ttl=30, clock=clock)
        assert reached == []
        holder = await journal.run_holder("run-1")
        assert holder is not None
        assert holder.owner == other.owner


async def _claimer_pid(url: str) -> int | None:
    """The pid of a worker that holds a claim on an attempt with a batch in flight, else None."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('batchpump_shards')") is None:
            return None  # no worker has opened the journal yet
        owner = await conn.fetchval(
            "SELECT claim_owner FROM batchpump_shards WHERE claim_expires > clock_timestamp()"
            " AND state = 'submitted' LIMIT 1"
        )
    finally:
        await conn.close()
    return None if owner is None else int(str(owner).split(":")[1])


async def test_a_killed_worker_is_taken_over(
    postgres_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two ``batchpump run`` processes on one input; one holding a claim on an attempt with a
    batch in flight is SIGKILLed; the other takes its attempts over when their claims lapse
    and finishes the run."""
    config = EmulatorConfig(validate_seconds=1, run_seconds=20, finalize_seconds=1)
    async with open_emulator(config=config, clock=ScaledClock(20)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 600)
        out = tmp_path / "out.jsonl"
        env = {
            **os.environ,
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": emu.openai_base_url,
        }
        argv = [sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out)]
        argv += ["--max-lines", "100", "--journal", postgres_url, "--limiter", redis_server.url]
        argv += ["--lease-seconds", "3", "--progress", "none"]
        workers = [
            await anyio.open_process(argv, env=env, stdout=None, stderr=None) for _ in range(2)
        ]
        try:
            with anyio.fail_after(60):
                # Watching another process's state: nothing to wait on but the database.
                while (pid := await _claimer_pid(postgres_url)) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            victim = next(w for w in workers if w.pid == pid)
            victim.send_signal(signal.SIGKILL)
            with anyio.fail_after(90):
                codes = {w.pid: await w.wait() for w in workers}
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
        assert codes[pid] == -signal.SIGKILL
        assert [c for p, c in codes.items() if p != pid] == [0]
        assert_exactly_once(read_results(out), ids)
        stats = emu.emulator.stats
        assert len(stats.tags) == 6  # one batch per shard attempt, none created twice
        assert set(stats.tags.values()) == {1}
        assert set(stats.billing.values()) == {1}
    conn = await asyncpg.connect(postgres_url)
    try:
        taken = await conn.fetchval("SELECT count(*) FROM batchpump_shards WHERE claim_taken > 1")
    finally:
        await conn.close()
    assert taken > 0  # attempts changed hands: from the killed worker to the other


async def test_a_worker_that_loses_its_lease_stops_without_cancelling(
    postgres_url: str, tmp_path: Path
) -> None:
    """A worker whose claims another one took (it froze past their term) stops at its next
    renewal: its run ends with ``LeaseLostError`` and no batch is cancelled."""
    config = EmulatorConfig(validate_seconds=1, run_seconds=10**9, finalize_seconds=1)
    async with open_emulator(config=config, clock=ScaledClock(1_000)) as emu:
        src = tmp_path / "in.jsonl"
        write_requests(src, 300)
        async with Pump(
            provider(emu), state_dir=tmp_path / "state", journal=postgres_url, lease_seconds=3
        ) as pump:
            run = await pump.submit(src, options=OPTIONS)
            with anyio.fail_after(30):
                while len(emu.emulator.stats.tags) < 3:  # noqa: ASYNC110 (the emulator's state)
                    await anyio.sleep(0.01)
            conn = await asyncpg.connect(postgres_url)
            try:  # the claims lapse (as if this worker froze) and another worker takes them
                await conn.execute(
                    "UPDATE batchpump_shards SET claim_owner = 'elsewhere:1:x',"
                    " claim_taken = claim_taken + 1 WHERE claim_owner IS NOT NULL"
                )
            finally:
                await conn.close()
            with anyio.fail_after(30), pytest.raises(LeaseLostError, match="lost the lease"):
                await run.wait()
        requests = {key for key, _ in emu.emulator.stats.requests}
        assert not any("cancel" in route for route in requests)


async def test_workers_split_one_run_by_claims(postgres_url: str, tmp_path: Path) -> None:
    """Three workers (each its own state directory, as on three machines sharing a mount) on
    one run: each creates batches of its own, every line has one result, every attempt one
    batch, no tag twice.

    Creates are limited to 3 a second (advertised, so each worker paces itself), as a provider
    limits them: the first worker to claim cannot create every batch before the others join,
    and it holds only the attempts its submitter is about to create.
    """
    faults = Faults(rate_limits={"create": RateLimit(requests=3, per_seconds=1.0)})
    config = EmulatorConfig(validate_seconds=1, run_seconds=10, finalize_seconds=1, faults=faults)
    async with open_emulator(config=config, clock=ScaledClock(20)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 1_200)
        out = tmp_path / "out.jsonl"
        options = msgspec.structs.replace(OPTIONS, submit_concurrency=1)  # claims 2 at a time
        runs: list[Run] = []
        pumps = [
            Pump(
                provider(emu),
                state_dir=tmp_path / f"worker-{n}",
                journal=postgres_url,
                lease_seconds=3,
            )
            for n in range(3)
        ]
        async with pumps[0], pumps[1], pumps[2]:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def work(pump: Pump) -> None:
                        run = await pump.submit(src, out=out, options=options)
                        runs.append(run)
                        await run.wait()

                    for pump in pumps:
                        tg.start_soon(work, pump)
            created = [run.statistics().batches_created for run in runs]
            served = [r.custom_id async for r in runs[2].results()]
        assert len({run.id for run in runs}) == 1
        assert all(n > 0 for n in created), created  # every worker created batches
        stats = emu.emulator.stats
        assert sum(created) == len(stats.tags) == 12  # one batch per attempt
        assert set(stats.tags.values()) == {1}
        assert_exactly_once(read_results(out), ids)
        assert sorted(served) == sorted(ids)
    conn = await asyncpg.connect(postgres_url)
    try:
        owners = await conn.fetchval("SELECT count(DISTINCT claim_owner) FROM batchpump_shards")
        attempts = await conn.fetchval("SELECT count(*) FROM batchpump_shards")
    finally:
        await conn.close()
    assert (owners, attempts) == (3, 12)


async def test_retries_are_claimed_by_any_worker(postgres_url: str, tmp_path: Path) -> None:
    """Lines that fail retryably go again as new attempts, committed unclaimed: two workers
    claim them like the first attempts, and still every line has one result and every attempt
    one batch."""
    faults = Faults(line_retryable_rate=0.3)
    config = EmulatorConfig(validate_seconds=1, run_seconds=4, finalize_seconds=1, faults=faults)
    async with open_emulator(config=config, clock=ScaledClock(50)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 800)
        out = tmp_path / "out.jsonl"
        options = msgspec.structs.replace(OPTIONS, submit_concurrency=1, max_attempts=6)
        pumps = [
            Pump(provider(emu), state_dir=tmp_path / f"w{n}", journal=postgres_url, lease_seconds=3)
            for n in range(2)
        ]
        counts = []
        async with pumps[0], pumps[1]:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def work(pump: Pump) -> None:
                        run = await pump.submit(src, out=out, options=options)
                        counts.append(await run.wait())

                    for pump in pumps:
                        tg.start_soon(work, pump)
        assert counts[0] == counts[1]
        assert counts[0].total == 800
        assert_exactly_once(read_results(out), ids)
        tags = emu.emulator.stats.tags
        assert set(tags.values()) == {1}
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT attempt, claim_owner, batch_id FROM batchpump_shards WHERE batch_id IS NOT NULL"
        )
    finally:
        await conn.close()
    assert len(rows) == len(tags)  # batches created == attempts with a batch
    retries = [row for row in rows if row[0] > 1]
    assert retries  # the faults made retry attempts
    assert all(row[1] is not None for row in retries)  # each claimed by a worker


class StallAfterCreate(OpenAI):
    """Makes shard 0's batch, then never returns: the worker froze between "create sent" and
    "create recorded"."""

    sent: ClassVar[list[str]] = []

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        batch = await super().create(shard, endpoint=endpoint, tag=tag)
        if shard.index == 0:
            self.sent.append(tag)
            await anyio.sleep_forever()
        return batch


async def test_a_lapsed_claim_is_taken_over_and_reconciled_by_tag(
    postgres_url: str, tmp_path: Path
) -> None:
    """Worker A sends shard 0's create and stops before recording it, without releasing its
    claims (its journal is gone, as in a kill). Worker B takes A's attempts over once their
    claims lapse, finds shard 0's batch by its tag instead of creating a second one, and
    finishes the run."""
    config = EmulatorConfig(validate_seconds=1, run_seconds=4, finalize_seconds=1)
    async with open_emulator(config=config, clock=ScaledClock(20)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 600)
        out = tmp_path / "out.jsonl"
        stalling = StallAfterCreate(
            api_key=KEY, base_url=emu.openai_base_url, retry=RetryPolicy.no_wait(attempts=30)
        )
        async with Pump(
            stalling, state_dir=tmp_path / "a", journal=postgres_url, lease_seconds=3
        ) as a:
            first = await a.submit(src, out=out, options=OPTIONS)
            with anyio.fail_after(30):
                while not StallAfterCreate.sent:  # noqa: ASYNC110 (the provider's state)
                    await anyio.sleep(0.01)
            await a.journal.aclose()  # A can neither record the create nor release its claims
        with pytest.raises((ClosedError, ExceptionGroup)) as stopped:  # its journal is closed
            await first.wait()
        errors = getattr(stopped.value, "exceptions", (stopped.value,))
        assert all(isinstance(e, ClosedError) for e in errors), stopped.value
        conn = await asyncpg.connect(postgres_url)
        try:
            row = await conn.fetchrow(
                "SELECT state, claim_expires > clock_timestamp() FROM batchpump_shards"
                " WHERE idx = 0 AND attempt = 1"
            )
        finally:
            await conn.close()
        assert row is not None
        assert tuple(row) == ("creating", True)  # the intent is recorded, the batch is not
        async with Pump(
            provider(emu), state_dir=tmp_path / "b", journal=postgres_url, lease_seconds=3
        ) as b:
            with anyio.fail_after(60):
                second = await b.submit(src, out=out, options=OPTIONS)
                counts = await second.wait()
        assert counts.succeeded == 600
        assert_exactly_once(read_results(out), ids)
        stats = emu.emulator.stats
        assert StallAfterCreate.sent[0] in stats.tags
        assert len(stats.tags) == 6  # one batch per attempt: shard 0's was adopted
        assert set(stats.tags.values()) == {1}
    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow(
            "SELECT claim_taken, state FROM batchpump_shards WHERE idx = 0 AND attempt = 1"
        )
    finally:
        await conn.close()
    assert row is not None
    assert tuple(row) == (2, "done")  # taken over once, settled by the taker


async def test_a_claim_not_renewed_in_time_creates_nothing(postgres_url: str) -> None:
    """Right before a create, a claim must have been renewed within two thirds of its term by
    this machine's clock (a worker frozen or cut off from the server stops creating)."""
    clock = ManualClock()
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run(state="running"))
        await journal.commit(shards=[make_shard(0, 0), make_shard(1, 0)])
        journal.start_claims("run-1", 30)
        claims = JournalClaims(journal, "run-1", ttl=30, clock=clock)
        (shard, other), _ = await claims.claim(5)
        claims.check(shard)
        clock.advance(19)
        claims.check(shard)  # 19 s < 20 s: still good
        clock.advance(2)
        with pytest.raises(LeaseLostError, match="did not create"):
            claims.check(shard)
        assert claims.expired()
        assert await claims.renew() == set()  # the server still had it: renewed, good again
        claims.check(shard)
        other.state = "done"
        await journal.commit(shards=[other])
        await claims.renew()
        with pytest.raises(LeaseLostError):  # settled: no claim to create under any more
            claims.check(other)


async def test_workers_soak_quick(tmp_path: Path) -> None:
    """Three CLI workers on one run, SIGKILLed twice (``benchmarks/soak_workers.py``)."""
    report = await soak(
        kills=2,
        lines=400,
        shards=8,
        seed=11,
        delays=(1.0, 2.0),
        workdir=tmp_path,
        say=logger.info,
    )
    assert len(report.kills) == 2
    assert (report.duplicates, report.missing, report.unexpected) == (0, 0, 0), report.summary()
    assert report.tags_created_twice == 0, report.summary()
    assert report.batches_created == report.shard_attempts > 0, report.summary()
    assert report.double_billed == 0, report.summary()
    assert report.share_429 <= 0.05, report.summary()
    assert report.bad_exits == [], report.summary()


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_workers_soak_full(tmp_path: Path) -> None:
    """The issue's soak: 120,000 lines, three workers, 20 SIGKILLs."""
    report = await soak(kills=20, lines=120_000, workdir=tmp_path, say=logger.info)
    assert report.ok, report.summary()


async def test_cli_status_and_a_wrong_password(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    """``status --journal URL`` lists the runs; a refused login exits 4 and never prints the
    password it was given."""
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())
    status = await anyio.run_process(
        [sys.executable, "-m", "batchpump", "status", "--journal", postgres_url], check=False
    )
    assert status.returncode == 0
    assert b"run-1" in status.stdout + status.stderr
    wrong = postgres_url.replace(postgres_server.password, "Wr0ng-Passw0rd")
    src = tmp_path / "in.jsonl"
    write_requests(src, 3)
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    refused = await anyio.run_process(
        [sys.executable, "-m", "batchpump", "run", str(src), "--journal", wrong],
        check=False,
        env=env,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode == 4, output
    assert b"refused the login" in output
    assert b"Wr0ng-Passw0rd" not in output
    assert postgres_server.password.encode() not in output


async def test_a_journal_path_opens_sqlite(emulator: RunningEmulator, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 50)
    journal = tmp_path / "elsewhere" / "journal.sqlite3"
    async with Pump(provider(emulator), state_dir=tmp_path / "state", journal=str(journal)) as p:
        run = await p.submit(src, options=OPTIONS)
        await run.wait()
        assert isinstance(p.journal, SqliteJournal)
    assert journal.exists()
    assert_exactly_once(read_results(run.results_path), ids)
    exported = tmp_path / "exported.jsonl"
    done = await export_cli(run.id, exported, str(journal.parent))
    assert exported.read_bytes() == run.results_path.read_bytes()
    assert b"results written" in done


async def export_cli(run_id: str, out: Path, journal: str) -> bytes:
    """``batchpump export RUN_ID --out OUT --journal JOURNAL``; its output (it must exit 0)."""
    argv = [sys.executable, "-m", "batchpump", "export", run_id, "--out", str(out)]
    done = await anyio.run_process([*argv, "--journal", journal], check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


async def test_cli_export_of_an_unknown_run_exits_2(postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "batchpump", "export", "nope", "--out", str(out)]
    done = await anyio.run_process([*argv, "--journal", postgres_url], check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert b"no run nope" in done.stdout + done.stderr
    assert not out.exists()


async def test_without_the_extras_batchpump_imports_and_says_what_to_install() -> None:
    script = """
import sys
sys.modules["asyncpg"] = None  # as if the extras were not installed
sys.modules["redis"] = None
import anyio, batchpump.cli
from batchpump._journal import PostgresJournal
from batchpump._ratelimit_redis import RedisLimiter

async def main():
    for opening in (PostgresJournal.open("postgresql://u:pw@127.0.0.1:1/db"),
                    RedisLimiter.connect("redis://127.0.0.1:1/0")):
        try:
            await opening
        except Exception as exc:
            print(type(exc).__name__, exc)

anyio.run(main)
"""
    done = await anyio.run_process([sys.executable, "-c", script], check=True)
    assert done.stdout.decode().splitlines() == [
        "UsageError a PostgreSQL journal needs asyncpg: pip install 'batchpump[postgres]'",
        "UsageError a shared limiter needs redis-py: pip install 'batchpump[redis]'",
    ]
