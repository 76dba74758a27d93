"""Workers soak: three ``batchpump run`` workers on one run, one SIGKILLed every few seconds.

Servers: PostgreSQL (the shared journal) and redis-server (the shared limiter), started for the
soak on loopback (``tests/servers.py``), and the emulator in its own process (time scale 20),
which answers the ``upload`` and ``create`` classes with 429 above a request limit L shared by
every worker (``--limit``, per real second). Each *round* writes a new input and starts three
workers with the same command::

    python -m batchpump run INPUT --out OUT --max-lines N/SHARDS --journal postgresql://...
        --limiter redis://... --lease-seconds 2 --progress none

Every few seconds (seeded, ``--min-delay`` to ``--max-delay``) one worker is killed with SIGKILL
(the one driving the run, found by its lease, or another, seeded) and a new one is started in
its place. A worker that lost the run's lease (a renewal came too late under load: it exits 4
saying so, and another worker carries on) is replaced too, and counted. A round ends when every
worker exited (the run is done); rounds repeat until the asked number of kills happened. Then
the soak checks, over all rounds:

- every ``custom_id`` is in OUT exactly once, nothing else is;
- no shard-attempt tag was created twice, and the batches created equal the shard attempts the
  journal holds with a batch (``batches created == shard attempts``);
- no line was billed twice;
- at most 5% of the ``upload`` and ``create`` requests were answered 429 (one shared limit).

Usage::

    python -m benchmarks.soak_workers --kills 20 --lines 120000 --seed 1

prints one line per kill and a summary, and writes ``benchmarks/results/soak_workers.json``
(``--no-record`` skips it; the quick test in ``tests/test_workers.py`` uses ``soak``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import asyncpg
import msgspec
from anyio.abc import Process

from batchpump._models import Result
from batchpump.emulator import EmulatorConfig, Faults, RateLimit
from benchmarks._common import (
    BENCH_KEY,
    REPO_ROOT,
    EmulatorProcess,
    machine_info,
    machine_line,
    open_emulator_process,
    write_record,
)
from tests.servers import PostgresServer, postgres_server, redis_server

__all__ = ["WorkersSoakReport", "main", "soak"]

NAME: Final = "soak_workers"
TIME_SCALE: Final = 20.0
WORKERS: Final = 3
LEASE_SECONDS: Final = 2.0
#: Seconds a round may take before the soak gives up (a hang is a finding, not a wait).
ROUND_TIMEOUT: Final = 600.0
MAX_429_SHARE: Final = 0.05
#: ``batchpump run``'s exit code for a journal error, which a lost lease is: the worker stopped
#: because another one drives the run now (under heavy load a renewal can come too late).
EXIT_JOURNAL: Final = 4
#: The emulator's routes of the ``upload`` and ``create`` classes the limit L applies to.
LIMITED_ROUTES: Final = frozenset({"openai.files.create", "openai.batches.create"})
_results: Final = msgspec.json.Decoder(Result)


@dataclass
class WorkersSoakReport:
    """What the soak saw (see the module docstring for the checks)."""

    seed: int
    lines: int
    limit_per_s: float
    shards: int = 40
    rounds: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    missing: int = 0
    unexpected: int = 0
    tags_created_twice: int = 0
    batches_created: int = 0
    shard_attempts: int = 0
    double_billed: int = 0
    requests_limited: int = 0
    requests_429: int = 0
    lease_losses: int = 0
    bad_exits: list[int] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def share_429(self) -> float:
        return self.requests_429 / self.requests_limited if self.requests_limited else 0.0

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == self.missing == self.unexpected == 0
            and self.tags_created_twice == 0
            and self.batches_created == self.shard_attempts
            and self.double_billed == 0
            and self.share_429 <= MAX_429_SHARE
            and not self.bad_exits
        )

    def summary(self) -> str:
        drivers = sum(1 for k in self.kills if k["driver"])
        return (
            f"{len(self.kills)} kills ({drivers} of the driving worker) over {self.rounds} "
            f"round(s) of {self.lines:,} lines in {self.wall_s:.1f} s: duplicates "
            f"{self.duplicates}, missing {self.missing}, unexpected {self.unexpected}, batches "
            f"created {self.batches_created} for {self.shard_attempts} shard attempts, tags "
            f"created twice {self.tags_created_twice}, double billed {self.double_billed}, "
            f"429s {self.requests_429}/{self.requests_limited} upload+create requests "
            f"({self.share_429:.2%}, limit {self.limit_per_s:g}/s shared), leases lost under "
            f"load {self.lease_losses}, bad exits "
            f"{self.bad_exits} -> {'OK' if self.ok else 'FAILED'}"
        )


def _write_input(path: Path, count: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for cid in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}]}
            f.write(msgspec.json.encode({"custom_id": cid, "body": body}) + b"\n")
    return ids


async def _driver_pid(url: str) -> int | None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('batchpump_leases')") is None:
            return None
        owner = await conn.fetchval(
            "SELECT owner FROM batchpump_leases WHERE expires_at > clock_timestamp()"
        )
    finally:
        await conn.close()
    return None if owner is None else int(str(owner).split(":")[1])


async def _journal_attempts(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n = await conn.fetchval("SELECT count(*) FROM batchpump_shards WHERE batch_id IS NOT NULL")
    finally:
        await conn.close()
    return int(n)


async def _round(
    number: int,
    report: WorkersSoakReport,
    pg: PostgresServer,
    redis_url: str,
    emu: EmulatorProcess,
    work: Path,
    rng: random.Random,
    kills: int,
    delays: tuple[float, float],
    say: Callable[[str], None],
) -> None:
    src, out = work / f"in-{number}.jsonl", work / f"out-{number}.jsonl"
    ids = _write_input(src, report.lines, f"r{number}")
    url = pg.create_database(f"soak_round_{number}")
    env = {**os.environ, "OPENAI_API_KEY": BENCH_KEY, "OPENAI_BASE_URL": emu.openai_base_url}
    argv = [sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out)]
    argv += ["--max-lines", str(max(1, report.lines // report.shards)), "--journal", url]
    argv += ["--limiter", redis_url, "--lease-seconds", str(LEASE_SECONDS), "--progress", "none"]
    log = (work / f"workers-{number}.log").open("ab")

    async def start() -> Process:
        return await anyio.open_process(
            argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )

    workers = [await start() for _ in range(WORKERS)]
    replaced: set[int] = set()
    try:
        with anyio.fail_after(ROUND_TIMEOUT):
            while True:
                for worker in list(workers):  # a worker that lost its lease is replaced too
                    if worker.returncode == EXIT_JOURNAL and worker.pid not in replaced:
                        replaced.add(worker.pid)
                        say(f"pid {worker.pid} lost its lease (exit {EXIT_JOURNAL}); replaced")
                        workers.append(await start())
                if all(w.returncode is not None for w in workers):
                    break
                await anyio.sleep(rng.uniform(*delays))
                alive = [w for w in workers if w.returncode is None]
                if len(report.kills) >= kills or not alive:
                    continue
                driver = await _driver_pid(url)
                pick = rng.random() < 2 / 3 and any(w.pid == driver for w in alive)
                victim = next(w for w in alive if w.pid == driver) if pick else rng.choice(alive)
                if victim.returncode is not None:
                    continue
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                report.kills.append({"round": number, "driver": victim.pid == driver})
                say(f"kill {len(report.kills)}: pid {victim.pid} (driver: {victim.pid == driver})")
                workers.append(await start())
            for worker in workers:
                await worker.wait()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        log.close()
    text = " ".join((work / f"workers-{number}.log").read_text(errors="replace").split())
    losses = min(len(replaced), text.count("lost the lease"))
    report.lease_losses += losses
    report.bad_exits += [
        code
        for code in (w.returncode for w in workers)
        if code is not None and code not in (0, -signal.SIGKILL, EXIT_JOURNAL)
    ]
    report.bad_exits += [EXIT_JOURNAL] * (len(replaced) - losses)  # journal errors of another kind
    seen = Counter(r.custom_id for r in _results.decode_lines(out.read_bytes()))
    report.duplicates += sum(1 for n in seen.values() if n > 1)
    report.missing += len(set(ids) - set(seen))
    report.unexpected += len(set(seen) - set(ids))
    report.shard_attempts += await _journal_attempts(url)
    report.rounds += 1


async def soak(
    *,
    kills: int = 20,
    lines: int = 120_000,
    shards: int = 40,
    limit: float = 20.0,
    seed: int | None = None,
    delays: tuple[float, float] = (2.0, 5.0),
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> WorkersSoakReport:
    """Run rounds until ``kills`` workers were killed; return the report (see module doc)."""
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    say(f"soak_workers seed {seed}")
    report = WorkersSoakReport(seed=seed, lines=lines, limit_per_s=limit, shards=shards)
    per_minute = max(1, round(limit * 60 / TIME_SCALE))  # emulator minutes are 3 real seconds
    bucket = RateLimit(requests=per_minute, per_seconds=60.0)
    config = EmulatorConfig(
        validate_seconds=2,
        run_seconds=10,
        finalize_seconds=2,
        faults=Faults(rate_limits={"upload": bucket, "create": bucket}),
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soak-workers-") as tmp, postgres_server() as pg:
        work = workdir or Path(tmp)
        with redis_server(work / "redis") as redis:
            async with open_emulator_process(config, time_scale=TIME_SCALE) as emu:
                number = 0
                while number == 0 or len(report.kills) < kills:
                    number += 1
                    await _round(number, report, pg, redis.url, emu, work, rng, kills, delays, say)
                stats = await emu.stats()
    report.wall_s = time.perf_counter() - start
    tags: dict[str, int] = stats["tags"]
    report.batches_created = sum(tags.values())
    report.tags_created_twice = sum(1 for n in tags.values() if n > 1)
    report.double_billed = len(stats["double_billed"])
    for row in stats["requests"]:
        if str(row["route"]) in LIMITED_ROUTES:
            report.requests_limited += int(row["count"])
            report.requests_429 += int(row["count"]) if int(row["status"]) == 429 else 0
    say(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lines", type=int, default=120_000)
    parser.add_argument("--shards", type=int, default=40, help="shards per round's input")
    parser.add_argument("--limit", type=float, default=20.0, help="upload/create limit per s")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--min-delay", type=float, default=2.0)
    parser.add_argument("--max-delay", type=float, default=5.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    machine = machine_info()

    async def go() -> WorkersSoakReport:
        return await soak(
            kills=args.kills,
            lines=args.lines,
            shards=args.shards,
            limit=args.limit,
            seed=args.seed,
            delays=(args.min_delay, args.max_delay),
        )

    report = anyio.run(go, backend="asyncio")
    if not args.no_record:
        record = {"benchmark": NAME, "machine": machine, "report": asdict(report)}
        path = write_record(NAME, record)
        print(f"[{machine_line(machine)}] -> {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
