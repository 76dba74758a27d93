"""Workers soak: three ``batchpump run`` workers on one run, one SIGKILLed every few seconds.

Servers: PostgreSQL (the shared journal) and redis-server (the shared limiter), started for the
soak on loopback (``tests/servers.py``), and the emulator in its own process. Its time scale (20)
speeds batch lifecycles only; its rate limits count real seconds, as a provider's do, and so do
the ``x-ratelimit-limit-requests`` it advertises (per real minute) and its ``retry-after``. The
``upload`` and ``create`` classes each get a bucket of L requests per real second (``--limit``,
default 4), a burst of one second's worth: a limit that binds, since a worker told it paces at
it (unpaced, a round's 40 uploads and 40 creates would go 8 at a time, the default
concurrency), and three workers sending at once with a gate each draw 429s (``--own-runs
--limiter local``). Each *round* writes a new input and starts three workers with the same
command::

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

Variants, for comparison (each is a full soak with the same checks):

- ``--limiter local``: no ``--limiter``; each worker keeps its own gate (paced at the advertised
  L, alone). The 429 share is then expected above the shared one wherever several workers send
  at once.
- ``--own-runs``: each worker gets its own input (three runs, one provider key), so all three
  send at the same time: the case where only a shared limit keeps them together within L. With
  one shared run, workers take turns driving it (the run's lease), so at most one of them sends
  at a time.
- ``--silent``: the emulator advertises nothing (``advertise_rate_limits=False``,
  ``send_retry_after=False``): each worker learns the limit from its 429s (``_ratelimit``'s
  learner) and the pause one of them sees is published to all.

Usage::

    python -m benchmarks.soak_workers --kills 20 --lines 120000 --seed 1
    python -m benchmarks.soak_workers --kills 20 --lines 120000 --seed 1 --own-runs --limiter local

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
from typing import Any, Final, Literal

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

__all__ = ["WorkersSoakReport", "emulator_config", "main", "soak"]

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
#: Requests per real second on each limited class (a bucket of one second's worth).
DEFAULT_LIMIT: Final = 4.0
_results: Final = msgspec.json.Decoder(Result)


@dataclass
class WorkersSoakReport:
    """What the soak saw (see the module docstring for the checks)."""

    seed: int
    lines: int
    limit_per_s: float
    shards: int = 40
    limiter: str = "redis"
    own_runs: bool = False
    silent: bool = False
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

    def _setting(self) -> str:
        shared = " shared on Redis" if self.limiter == "redis" else ", a local gate per worker"
        runs = ", a run per worker" if self.own_runs else ""
        silent = ", advertised by nothing" if self.silent else ""
        return f"{shared}{runs}{silent}"

    def summary(self) -> str:
        drivers = sum(1 for k in self.kills if k["driver"])
        return (
            f"{len(self.kills)} kills ({drivers} of the driving worker) over {self.rounds} "
            f"round(s) of {self.lines:,} lines in {self.wall_s:.1f} s: duplicates "
            f"{self.duplicates}, missing {self.missing}, unexpected {self.unexpected}, batches "
            f"created {self.batches_created} for {self.shard_attempts} shard attempts, tags "
            f"created twice {self.tags_created_twice}, double billed {self.double_billed}, "
            f"429s {self.requests_429}/{self.requests_limited} upload+create requests "
            f"({self.share_429:.2%}, limit {self.limit_per_s:g}/s{self._setting()}), leases "
            f"lost under load {self.lease_losses}, bad exits {self.bad_exits} -> "
            f"{'OK' if self.ok else 'FAILED'}"
        )


def _write_input(path: Path, count: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for cid in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}]}
            f.write(msgspec.json.encode({"custom_id": cid, "body": body}) + b"\n")
    return ids


async def _driver_pids(url: str) -> set[int]:
    """The workers driving a run: holding a live run lease (sharding) or a live claim on one
    of its shard attempts."""
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('batchpump_leases')") is None:
            return set()
        owners = await conn.fetch(
            "SELECT owner FROM batchpump_leases WHERE expires_at > clock_timestamp()"
            " UNION SELECT claim_owner FROM batchpump_shards"
            " WHERE claim_owner IS NOT NULL AND claim_expires > clock_timestamp()"
        )
    finally:
        await conn.close()
    return {int(str(row["owner"]).split(":")[1]) for row in owners}


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
    url = pg.create_database(f"soak_round_{number}")
    env = {**os.environ, "OPENAI_API_KEY": BENCH_KEY, "OPENAI_BASE_URL": emu.openai_base_url}
    # One shared run, or (``own_runs``) one run per worker, the round's lines split between them.
    runs = WORKERS if report.own_runs else 1
    commands: list[list[str]] = []
    inputs: list[tuple[Path, list[str]]] = []
    for run in range(runs):
        tail = f"{number}-{run}" if report.own_runs else f"{number}"
        src, out = work / f"in-{tail}.jsonl", work / f"out-{tail}.jsonl"
        inputs.append((out, _write_input(src, report.lines // runs, f"r{tail}")))
        argv = [sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out)]
        argv += ["--max-lines", str(max(1, report.lines // report.shards)), "--journal", url]
        if report.limiter == "redis":
            argv += ["--limiter", redis_url]
        argv += ["--lease-seconds", str(LEASE_SECONDS), "--progress", "none"]
        commands.append(argv)
    log = (work / f"workers-{number}.log").open("ab")
    command_of: dict[int, list[str]] = {}

    async def start(argv: list[str]) -> Process:
        process = await anyio.open_process(
            argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        command_of[process.pid] = argv
        return process

    workers = [await start(commands[i % runs]) for i in range(WORKERS)]
    replaced: set[int] = set()
    try:
        with anyio.fail_after(ROUND_TIMEOUT):
            while True:
                for worker in list(workers):  # a worker that lost its lease is replaced too
                    if worker.returncode == EXIT_JOURNAL and worker.pid not in replaced:
                        replaced.add(worker.pid)
                        say(f"pid {worker.pid} lost its lease (exit {EXIT_JOURNAL}); replaced")
                        workers.append(await start(command_of[worker.pid]))
                if all(w.returncode is not None for w in workers):
                    break
                await anyio.sleep(rng.uniform(*delays))
                alive = [w for w in workers if w.returncode is None]
                if len(report.kills) >= kills or not alive:
                    continue
                drivers = await _driver_pids(url)
                driving = [w for w in alive if w.pid in drivers]
                pick = rng.random() < 2 / 3 and driving
                victim = rng.choice(driving) if pick else rng.choice(alive)
                if victim.returncode is not None:
                    continue
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                driver = victim.pid in drivers
                report.kills.append({"round": number, "driver": driver})
                say(f"kill {len(report.kills)}: pid {victim.pid} (driver: {driver})")
                workers.append(await start(command_of[victim.pid]))
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
    for out, ids in inputs:
        seen = Counter(r.custom_id for r in _results.decode_lines(out.read_bytes()))
        report.duplicates += sum(1 for n in seen.values() if n > 1)
        report.missing += len(set(ids) - set(seen))
        report.unexpected += len(set(seen) - set(ids))
    report.shard_attempts += await _journal_attempts(url)
    report.rounds += 1


def emulator_config(limit: float, *, silent: bool = False) -> EmulatorConfig:
    """The soak's emulator: ``limit`` requests per real second on uploads and on creates, a
    burst of one second's worth, advertised (per real minute) unless ``silent``."""
    burst = max(1, round(limit))
    bucket = RateLimit(requests=burst, per_seconds=burst / limit)
    return EmulatorConfig(
        validate_seconds=2,
        run_seconds=10,
        finalize_seconds=2,
        faults=Faults(
            rate_limits={"upload": bucket, "create": bucket},
            advertise_rate_limits=not silent,
            send_retry_after=not silent,
        ),
    )


async def soak(
    *,
    kills: int = 20,
    lines: int = 120_000,
    shards: int = 40,
    limit: float = DEFAULT_LIMIT,
    seed: int | None = None,
    delays: tuple[float, float] = (2.0, 5.0),
    limiter: Literal["redis", "local"] = "redis",
    own_runs: bool = False,
    silent: bool = False,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> WorkersSoakReport:
    """Run rounds until ``kills`` workers were killed; return the report (see module doc).

    Args:
        kills: SIGKILLs in all.
        lines: lines per round (split between the runs with ``own_runs``).
        shards: shards per round.
        limit: L, requests per real second on each of ``upload`` and ``create``.
        seed: the seed of the kills and their timing (random when ``None``).
        delays: the shortest and longest wait before each kill.
        limiter: ``"redis"``: every worker shares one limit (``--limiter``); ``"local"``: each
            keeps its own.
        own_runs: a run per worker instead of one run shared by all.
        silent: the emulator advertises no limit and no retry-after.
        workdir: where inputs, outputs and logs go (a temporary directory when ``None``).
        say: where progress lines go.
    """
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    say(f"soak_workers seed {seed}")
    report = WorkersSoakReport(
        seed=seed,
        lines=lines,
        limit_per_s=limit,
        shards=shards,
        limiter=limiter,
        own_runs=own_runs,
        silent=silent,
    )
    config = emulator_config(limit, silent=silent)
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


def _record_name(args: argparse.Namespace) -> str:
    """``soak_workers``, with the variant's options appended (``soak_workers-local-own-runs``)."""
    parts = [NAME]
    if args.limiter != "redis":
        parts.append(args.limiter)
    if args.own_runs:
        parts.append("own-runs")
    if args.silent:
        parts.append("silent")
    return "-".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lines", type=int, default=120_000)
    parser.add_argument("--shards", type=int, default=40, help="shards per round's input")
    parser.add_argument(
        "--limit", type=float, default=DEFAULT_LIMIT, help="upload/create limit per real second"
    )
    parser.add_argument(
        "--limiter",
        choices=("redis", "local"),
        default="redis",
        help="redis: one limit shared by every worker; local: a gate per worker (comparison)",
    )
    parser.add_argument("--own-runs", action="store_true", help="a run per worker")
    parser.add_argument(
        "--silent", action="store_true", help="the emulator advertises no limit, no retry-after"
    )
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
            limiter=args.limiter,
            own_runs=args.own_runs,
            silent=args.silent,
        )

    report = anyio.run(go, backend="asyncio")
    if not args.no_record:
        record = {"benchmark": NAME, "machine": machine, "report": asdict(report)}
        record["summary"] = report.summary()
        path = write_record(_record_name(args), record)
        print(f"[{machine_line(machine)}] -> {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
