"""Benchmark: the journal's commit rate on PostgreSQL beside SQLite, and 1, 2, 3 workers on a run.

Usage: ``python benchmarks/bench_workers.py [-n 20000] [--commits 3000] [--quick]``

Servers: a PostgreSQL 15 and a redis-server started for the benchmark (``tests/servers.py``) in
temporary directories on loopback, PostgreSQL with ``fsync`` on (as a production server), and
the emulator in its own process (time scale 1000: a batch is done ~3 ms after its create).

1. **Commit rate.** The journal's typical transaction (the run record and two shard records,
   as a collected attempt and the retry it spawns) committed ``--commits`` times (``--quick``:
   300) one after another, then by 32 tasks at once (where group commit shares transactions),
   on ``SqliteJournal`` (``synchronous=NORMAL``, the default; and ``FULL``) and on
   ``PostgresJournal``. Commits per second, and transactions per commit.
2. **Results stored.** N result lines (``--quick``: 2,000; about 200 bytes each, as the
   emulator answers) stored in ``PostgresJournal`` the way a run stores them: one
   ``commit(run=..., results=...)`` per 1,000-line batch, which ``COPY``s the lines in the
   transaction that moves ``out_offset``; beside it the same rows with ``executemany`` of an
   ``INSERT`` on a plain asyncpg connection (what COPY replaced). Lines per second; then the
   export (``read_results`` back into a file) in lines per second.
   Beside it, the commit of a run worked by claims (``start_claims``): each commit writes a
   claimed attempt, fenced by its claim, and merges the run record under its row lock.
3. **Workers.** ``W`` = 1, 2, 3 ``batchpump run INPUT --journal postgresql://... --limiter
   redis://...`` processes started together on the same N-line input (``--quick``: 2,000) in
   ``SHARDS`` shards, against an emulator in its own process whose batches take a while
   (``run_seconds`` 100 at time scale 20: about 5 s each, as real batches take minutes to
   hours): wall time until every worker exited, batches created per second of wall, each
   worker's share of the creates, and the results checked for exactly one line per
   ``custom_id``, one batch per shard tag. A worker keeps at most ``2 * submit_concurrency``
   claimed attempts waiting for a create, not a bound on those in flight, so one worker puts
   every shard in flight by itself and more workers add no speed to this job (the wall is
   the batches' own time plus start-up); the split of the creates between workers shows how
   claims share the attempts.

Prints the figures and writes ``benchmarks/results/bench_workers.json``. Never asserts a time;
exits non-zero only if a run lost or duplicated a result or created a batch twice.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import msgspec

from batchpump._journal import Journal, PostgresJournal, SqliteJournal
from batchpump._models import Result, RunRecord, ShardRecord
from batchpump.emulator import EmulatorConfig
from benchmarks._common import (
    BENCH_KEY,
    REPO_ROOT,
    machine_info,
    machine_line,
    open_emulator_process,
    write_record,
)
from tests.servers import PostgresServer, postgres_server, redis_server

NAME: Final = "bench_workers"
CONCURRENT: Final = 32
_results: Final = msgspec.json.Decoder(Result)


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        provider="openai",
        base_url="https://api.openai.com/v1",
        endpoint="/v1/chat/completions",
        input_path="/data/in.jsonl",
        out_path="/data/out.jsonl",
        created_at=1_700_000_000.0,
        options=msgspec.Raw(b'{"max_attempts":3}'),
    )


def _shard(index: int, attempt: int) -> ShardRecord:
    return ShardRecord(
        run_id="bench",
        index=index,
        attempt=attempt,
        path=f"/data/.batchpump/bench/{index:05d}-{attempt}.jsonl",
        lines=1_000,
        bytes=1_234_567,
        state="done" if attempt == 1 else "ready",
        batch_id=f"batch_{index}" if attempt == 1 else None,
        tag=f"bp-bench-{index}-{attempt}",
    )


async def _commit_rate(journal: Journal, commits: int) -> dict[str, float]:
    run = _run("bench")
    await journal.open_run(run)
    start = time.perf_counter()
    for i in range(commits):
        run.out_offset = i
        await journal.commit(run=run, shards=[_shard(i, 1), _shard(i, 2)])
    sequential = commits / (time.perf_counter() - start)
    before = getattr(journal, "statistics")()  # noqa: B009 (both durable journals have it)
    start = time.perf_counter()

    async def committer(worker: int) -> None:
        for i in range(worker, commits, CONCURRENT):
            await journal.commit(run=run, shards=[_shard(commits + i, 1), _shard(commits + i, 2)])

    async with anyio.create_task_group() as tg:
        for worker in range(CONCURRENT):
            tg.start_soon(committer, worker)
    concurrent = commits / (time.perf_counter() - start)
    after = getattr(journal, "statistics")()  # noqa: B009
    per_commit = (after.transactions - before.transactions) / (after.commits - before.commits)
    return {
        "sequential_commits_per_s": sequential,
        "concurrent_commits_per_s": concurrent,
        "concurrent_transactions_per_commit": per_commit,
    }


async def _claimed_commit_rate(url: str, commits: int) -> dict[str, float]:
    """Commits of a run worked by claims: a claimed attempt and the merged run record."""
    async with await PostgresJournal.open(url) as journal:
        run = _run("bench")
        run.state = "running"
        await journal.open_run(run)
        journal.start_claims("bench", 60)
        shards = [_shard(i, 1) for i in range(2 * commits)]
        for shard in shards:
            shard.state = "submitted"
        await journal.commit(shards=shards)
        claimed, _, _ = await journal.claim("bench", 2 * commits)
        start = time.perf_counter()
        for shard in claimed[:commits]:
            shard.state = "done"
            await journal.commit(run=run, shards=[shard])
        sequential = commits / (time.perf_counter() - start)
        before = journal.statistics()
        start = time.perf_counter()

        async def committer(worker: int) -> None:
            for shard in claimed[commits + worker :: CONCURRENT]:
                shard.state = "done"
                await journal.commit(run=run, shards=[shard])

        async with anyio.create_task_group() as tg:
            for worker in range(CONCURRENT):
                tg.start_soon(committer, worker)
        concurrent = commits / (time.perf_counter() - start)
        after = journal.statistics()
    per_commit = (after.transactions - before.transactions) / (after.commits - before.commits)
    return {
        "sequential_commits_per_s": sequential,
        "concurrent_commits_per_s": concurrent,
        "concurrent_transactions_per_commit": per_commit,
    }


async def commit_rates(pg: PostgresServer, commits: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    openers: dict[str, Callable[[], Awaitable[Journal]]] = {
        "sqlite_normal": lambda: SqliteJournal.open(work / "normal.sqlite3"),
        "sqlite_full": lambda: SqliteJournal.open(work / "full.sqlite3", synchronous="FULL"),
        "postgres": lambda: PostgresJournal.open(pg.create_database("bench_commits")),
    }
    for name, opener in openers.items():
        journal = await opener()
        try:
            out[name] = await _commit_rate(journal, commits)
        finally:
            await journal.aclose()
    out["postgres_claimed"] = await _claimed_commit_rate(
        pg.create_database("bench_claimed"), commits
    )
    return out


RESULT_BATCH: Final = 1_000


def _result_lines(count: int) -> list[bytes]:
    body = b'{"id":"resp","status_code":200,"body":{"choices":[{"message":{"content":"ok"}}]}}'
    return [
        b'{"custom_id":"req-%d","status":"succeeded","response":%s}\n' % (i, body)
        for i in range(count)
    ]


async def results_rates(pg: PostgresServer, lines: int, work: Path) -> dict[str, float]:
    """Result lines stored per second: ``commit(results=)`` (COPY) against executemany."""
    import asyncpg

    from batchpump._workers import export_results

    rows = _result_lines(lines)
    url = pg.create_database("bench_results")
    async with await PostgresJournal.open(url) as journal:
        run = _run("results")
        await journal.open_run(run)
        start = time.perf_counter()
        offset = 0
        for i in range(0, lines, RESULT_BATCH):
            data = b"".join(rows[i : i + RESULT_BATCH])
            run.out_offset = offset + len(data)
            await journal.commit(run=run, results=(offset, data))
            offset += len(data)
        copy = lines / (time.perf_counter() - start)
        start = time.perf_counter()
        await export_results(journal, "results", work / "exported.jsonl")
        export = lines / (time.perf_counter() - start)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO batchpump_runs (run_id, state, record) VALUES ('insert', 'running', '')"
        )
        start = time.perf_counter()
        offset = 0
        for i in range(0, lines, RESULT_BATCH):
            batch = []
            for line in rows[i : i + RESULT_BATCH]:
                batch.append(("insert", offset, line))
                offset += len(line)
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO batchpump_results (run_id, pos, line) VALUES ($1, $2, $3)", batch
                )
        insert = lines / (time.perf_counter() - start)
    finally:
        await conn.close()
    return {"copy_lines_per_s": copy, "insert_lines_per_s": insert, "export_lines_per_s": export}


def _write_input(path: Path, lines: int) -> list[str]:
    ids = [f"req-{i}" for i in range(lines)]
    with path.open("wb") as f:
        for custom_id in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            f.write(msgspec.json.encode({**line, "body": body}) + b"\n")
    return ids


#: Shards of the workers' job, and the emulator's batch timing (emulator seconds, scaled).
SHARDS: Final = 48
RUN_SECONDS: Final = 100
TIME_SCALE: Final = 20.0


async def _creates_by_worker(url: str) -> list[int]:
    """Batches each worker created (or adopted): attempts with a batch, by claim owner."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT count(*) FROM batchpump_shards WHERE batch_id IS NOT NULL"
            " GROUP BY claim_owner ORDER BY 1 DESC"
        )
    finally:
        await conn.close()
    return [int(row[0]) for row in rows]


async def workers_run(
    pg: PostgresServer, redis_url: str, workers: int, lines: int, work: Path
) -> dict[str, Any]:
    config = EmulatorConfig(validate_seconds=1, run_seconds=RUN_SECONDS, finalize_seconds=1)
    src = work / f"in-{workers}.jsonl"
    out = work / f"out-{workers}.jsonl"
    ids = _write_input(src, lines)
    url = pg.create_database(f"bench_workers_{workers}")
    async with open_emulator_process(config, time_scale=TIME_SCALE) as emu:
        env = {**os.environ, "OPENAI_API_KEY": BENCH_KEY, "OPENAI_BASE_URL": emu.openai_base_url}
        argv = [sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out)]
        argv += ["--max-lines", str(-(-lines // SHARDS)), "--journal", url]
        argv += ["--limiter", redis_url, "--progress", "none"]
        logs = [work / f"worker-{workers}-{i}.log" for i in range(workers)]
        start = time.perf_counter()
        procs = []
        for log in logs:
            with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
                procs.append(
                    await anyio.open_process(
                        argv, env=env, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT
                    )
                )
        codes = [await proc.wait() for proc in procs]
        wall = time.perf_counter() - start
        for log, code in zip(logs, codes, strict=True):
            if code != 0:
                print(f"worker exited {code}:\n{log.read_text()[-2000:]}")
        stats = await emu.stats()
    shares = await _creates_by_worker(url)
    seen = Counter(r.custom_id for r in _results.decode_lines(out.read_bytes()))
    tags: dict[str, int] = stats["tags"]
    created = sum(tags.values())
    return {
        "workers": workers,
        "exit_codes": codes,
        "wall_s": wall,
        "batches_created": created,
        "creates_per_s": created / wall,
        "creates_by_worker": shares,
        "exactly_once": set(seen) == set(ids) and set(seen.values()) == {1},
        "tags_created_twice": sum(1 for n in tags.values() if n > 1),
    }


async def run(lines: int, commits: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        postgres_server(durable=True) as pg,
    ):
        work = Path(tmp)
        with redis_server(work / "redis") as redis:
            rates = await commit_rates(pg, commits, work)
            stored = await results_rates(pg, lines, work)
            runs = [await workers_run(pg, redis.url, w, lines, work) for w in (1, 2, 3)]
    return {
        "lines": lines,
        "commits": commits,
        "commit_rate": rates,
        "results_stored": stored,
        "workers": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="input lines (default 20,000)")
    parser.add_argument("--commits", type=int, default=3_000, help="commits per journal")
    parser.add_argument("--quick", action="store_true", help="2,000 lines, 300 commits")
    args = parser.parse_args(argv)
    lines, commits = (2_000, 300) if args.quick else (args.n, args.commits)
    machine = machine_info()
    result = anyio.run(run, lines, commits, backend="asyncio")
    record = {"benchmark": NAME, "machine": machine, "quick": args.quick, "result": result}
    path = write_record(NAME, record)
    for name, rate in result["commit_rate"].items():
        print(
            f"{name:>14}: {rate['sequential_commits_per_s']:>7,.0f} commits/s one at a time, "
            f"{rate['concurrent_commits_per_s']:>7,.0f} commits/s from {CONCURRENT} tasks "
            f"({rate['concurrent_transactions_per_commit']:.2f} transactions per commit)"
        )
    stored = result["results_stored"]
    print(
        f"results stored: {stored['copy_lines_per_s']:>9,.0f} lines/s by commit(results=) "
        f"(COPY), {stored['insert_lines_per_s']:>9,.0f} lines/s by executemany INSERT; "
        f"exported at {stored['export_lines_per_s']:,.0f} lines/s"
    )
    ok = True
    walls = {w["workers"]: w["wall_s"] for w in result["workers"]}
    for w in result["workers"]:
        ok = (
            ok and w["exactly_once"] and not w["tags_created_twice"] and set(w["exit_codes"]) == {0}
        )
        print(
            f"{w['workers']} worker(s): {lines:,} lines in {w['wall_s']:.2f} s, "
            f"{w['batches_created']} batches ({w['creates_per_s']:.1f} creates/s; by worker "
            f"{w['creates_by_worker']}), "
            f"exactly once: {w['exactly_once']}, tags created twice: {w['tags_created_twice']}, "
            f"exit codes {w['exit_codes']}"
        )
    rates = result["commit_rate"]
    print(
        "summary: 1/2/3 workers "
        + "/".join(f"{walls[n]:.1f}" for n in (1, 2, 3))
        + f" s wall ({walls[1] / walls[3]:.1f}x faster with 3); commits/s one at a time: "
        + ", ".join(f"{k} {v['sequential_commits_per_s']:,.0f}" for k, v in rates.items())
    )
    print(f"[{machine_line(machine)}] -> {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
