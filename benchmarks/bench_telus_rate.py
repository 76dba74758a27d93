"""Benchmark: GT Studio job creation against the documented 20 POST/s limit.

Usage: ``python benchmarks/bench_telus_rate.py [-n 2400] [--shard-lines 200] [--quick]``

The emulator runs in its own process (``python -m batchpump.emulator --provider telus``,
loopback, port 0, real time) with its GT Studio POST bucket at the documented 20 POST/s
(burst 20): every POST beyond it is answered 429. The ``Telus`` adapter creates N jobs
(``--quick``: 400, under 30 s) in shards of ``--shard-lines`` items, all shards at once the way
the engine's submitters do (one batch POST per shard, then one job POST per item through the
shared ``item`` gate at ``job_rate``, default 20/s). The emulator measures (``/_emulator/stats``):
job POSTs answered 200 and 429, batch POSTs; the achieved rate is created jobs over the wall
time of the whole creation. Target: 429s at most 1 % of job POSTs. Prints one summary line and
writes ``benchmarks/results/bench_telus_rate.json``. Never asserts a time; exits non-zero only
if a job is missing or was created twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import msgspec

from batchpump import Limits, RetryPolicy
from batchpump._models import ShardRecord
from batchpump._provider import shard_tag
from batchpump.emulator import EmulatorConfig
from batchpump.providers.telus import Telus
from batchpump.providers.telus._adapter import DEFAULT_JOB_RATE
from benchmarks import _common
from benchmarks._common import (
    BENCH_KEY,
    EmulatorProcess,
    machine_info,
    machine_line,
    write_record,
)

NAME: Final = "bench_telus_rate"
PROJECT: Final = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
FLOW: Final = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
LIMIT: Final = 20.0
TARGET_429_SHARE: Final = 0.01


@asynccontextmanager
async def open_telus_emulator() -> AsyncIterator[EmulatorProcess]:
    """``python -m batchpump.emulator --provider telus`` in a child (``_common``'s launcher
    mounts only OpenAI; this is the same child script with the provider flag)."""
    config = EmulatorConfig(validate_seconds=3600, run_seconds=3600)
    with tempfile.TemporaryDirectory(prefix="bench-telus-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(msgspec.json.encode(config))
        stderr_path = Path(tmp) / "stderr.txt"
        argv = [
            sys.executable, "-c", _common._CHILD, str(os.getpid()),
            "--host", "127.0.0.1", "--port", "0", "--provider", "telus",
            "--config", str(config_path),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_common.REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with stderr_path.open("wb") as stderr:
            process = await anyio.open_process(
                argv, stdin=None, stdout=-1, stderr=stderr, env=env, cwd=tmp
            )
            try:
                url = await _common._read_url(process, stderr_path)
                yield EmulatorProcess(url, 1.0, config, process.pid)
            finally:
                with anyio.CancelScope(shield=True):
                    await _common._stop(process)


def write_shards(directory: Path, total: int, per_shard: int) -> list[ShardRecord]:
    shards = []
    for index, start in enumerate(range(0, total, per_shard)):
        path = directory / f"{index:05d}.a1.jsonl"
        count = min(per_shard, total - start)
        with path.open("wb") as f:
            for n in range(start, start + count):
                line = {"custom_id": f"job-{n:06d}", "data": {"image_url": f"https://x.test/{n}"}}
                f.write(msgspec.json.encode(line) + b"\n")
        tag = shard_tag("benchtelusrate", index, 1)
        shards.append(
            ShardRecord(
                run_id="bench",
                index=index,
                attempt=1,
                path=str(path),
                lines=count,
                bytes=0,
                tag=tag,
            )
        )
    return shards


async def create(telus: Telus, shard: ShardRecord) -> None:
    assert shard.tag is not None
    await telus.create(shard, endpoint="", tag=shard.tag)


def status_counts(snapshot: dict[str, Any], route: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in snapshot.get("requests", []):
        if row["route"] == route:
            counts[int(row["status"])] = counts.get(int(row["status"]), 0) + int(row["count"])
    return counts


async def run(total: int, per_shard: int, job_rate: float) -> dict[str, Any]:
    async with open_telus_emulator() as emu:
        with tempfile.TemporaryDirectory(prefix="bench-telus-shards-") as tmp:
            shards = write_shards(Path(tmp), total, per_shard)
            telus = Telus(
                api_key=BENCH_KEY,
                project_id=PROJECT,
                base_url=f"{emu.url}/telus",
                work_flow_id=FLOW,
                limits=Limits(item_concurrency=16),
                retry=RetryPolicy(attempts=20),
                job_rate=job_rate,
            )
            async with telus:
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for shard in shards:
                        tg.start_soon(create, telus, shard)
                wall = time.perf_counter() - started
                client = telus.statistics()
        snapshot = await emu.stats()
    jobs = status_counts(snapshot, "telus.jobs.create")
    batches = status_counts(snapshot, "telus.batch.create")
    posts = sum(jobs.values())
    created = jobs.get(200, 0)
    limited = jobs.get(429, 0)
    return {
        "jobs": total,
        "shards": len(shards),
        "job_rate": job_rate,
        "limit_post_per_s": LIMIT,
        "wall_s": round(wall, 3),
        "achieved_jobs_per_s": round(created / wall, 3),
        "achieved_posts_per_s": round((posts + sum(batches.values())) / wall, 3),
        "job_posts": posts,
        "job_posts_200": created,
        "job_posts_429": limited,
        "share_429": round(limited / posts, 5) if posts else 0.0,
        "target_share_429": TARGET_429_SHARE,
        "batch_posts": batches,
        "double_billed": snapshot.get("double_billed", {}),
        "billed": snapshot.get("billed_lines"),
        "client": {
            "created": client.jobs.created,
            "reconciled": client.jobs.reconciled,
            "retries": client.http.retries,
            "rate_limited": client.http.rate_limited,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2400, help="jobs to create (default 2400)")
    parser.add_argument("--shard-lines", type=int, default=200, help="items per batch")
    parser.add_argument("--job-rate", type=float, default=DEFAULT_JOB_RATE, help="client rate")
    parser.add_argument("--quick", action="store_true", help="400 jobs (< 30 s)")
    args = parser.parse_args(argv)
    total = 400 if args.quick else args.n
    machine = machine_info()
    result = anyio.run(run, total, args.shard_lines, args.job_rate, backend="asyncio")
    record = {"benchmark": NAME, "machine": machine, "quick": args.quick, "result": result}
    path = write_record(NAME, record)
    ok = (
        result["job_posts_200"] + result["client"]["reconciled"] >= total
        and not result["double_billed"]
    )
    print(
        f"telus job create: {result['achieved_jobs_per_s']:.2f} jobs/s "
        f"(all POSTs {result['achieved_posts_per_s']:.2f}/s; limit {LIMIT:g} POST/s), "
        f"429s {result['share_429']:.2%} of {result['job_posts']} job POSTs "
        f"(target <= {TARGET_429_SHARE:.0%}), {total} jobs in {result['wall_s']:.1f} s "
        f"[{machine_line(machine)}] -> {path}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
