"""Benchmark: jobs end to end, the ``batchpump`` CLI beside an ``openai`` SDK script.

Usage: ``python benchmarks/bench_end_to_end.py [--job million|latency ...] [--quick]
[--code CHECKOUT]``

Two jobs, each run by both contenders in one invocation (``--job`` picks; default both):

- ``million``: 1,000,000 chat-completion lines (``-n``) in shards of 50,000
  (``--shard-lines``); validating, running and finalizing take 600, 1800 and 600 emulator
  seconds, so a batch is done 3 s after its create: short beside the transfers, but both
  contenders have to poll. The SDK script retrieves each batch every 2 s. Target: peak RSS
  under 256 MB.
- ``latency``: 120,000 lines in 3 shards of at most 50,000, on batches done 1 s after their
  create (200 + 600 + 200 emulator seconds): the job of issue 16, where the time to *see* a
  batch finish is most of the wall. The SDK script retrieves each batch every 1 s. Targets:
  batchpump's wall at most 0.75x the script's, peak RSS at most 100 MiB.

``--quick``: the same jobs at 20,000 lines in 4 shards of 5,000 and 12,000 lines in 3 shards
of at most 5,000. The input is ``_datagen.py`` lines, generated once per size and cached in
``$TMPDIR/batchpump-bench``. The emulator runs in its own process (``python -m
batchpump.emulator``, loopback, port 0, time scale 1000), one fresh emulator per contender and
job. Each contender is a child process of this one, so its peak RSS is its own (``ru_maxrss``
from ``os.wait4``), and gets the same input file:

- ``batchpump``: ``python -m batchpump run INPUT --max-lines 50000 --progress none`` (the CLI,
  not ``Pump`` in-process: what users run, with its defaults: 8 shards uploading/creating, 4
  downloading, list sweeps planned from the batches' progress, a SQLite journal, an fsynced
  results file); ``--code`` runs the CLI of another checkout (for before/after figures);
- ``sdk``: this file with ``--sdk-worker``: the docs-style ``openai.AsyncOpenAI`` script that
  splits the input into shard files, then for each shard, 8 at a time
  (``asyncio.Semaphore``): ``files.create(file=open(path, "rb"))``, ``batches.create``,
  ``batches.retrieve`` every poll interval until the batch is terminal, and ``files.content``
  of its output (and error) file read whole and appended to the results file.

Figures: wall time (spawn to exit), client peak RSS, client CPU (user + system, from the same
``wait4``), emulator CPU over the run (``/proc``), and the results file checked for exactly one
line per input ``custom_id`` (the file streamed, one byte per input line marks the ids seen):
lines, distinct ids, duplicates, missing, unknown, succeeded. The emulator's own counts
(batches created, requests per route, lines billed twice) come from ``/_emulator/stats``.

Prints one summary line per job and writes ``benchmarks/results/bench_end_to_end.json``. Never
asserts a time; exits non-zero only if a contender failed or its results are not exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import anyio.to_thread
import msgspec

from batchpump.emulator import EmulatorConfig
from benchmarks._common import (
    BENCH_KEY,
    REPO_ROOT,
    machine_info,
    machine_line,
    open_emulator_process,
    process_cpu_seconds,
    route_counts,
    write_record,
)
from benchmarks._datagen import DEFAULT_ENDPOINT, DEFAULT_MEAN_LINE_BYTES, write_jsonl

NAME: Final = "bench_end_to_end"
CONTENDERS: Final = ("batchpump", "sdk")
TIME_SCALE: Final = 1000.0


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One job both contenders run: its size, the emulator's batch timing, the SDK script's
    poll interval and the targets."""

    name: str
    lines: int
    shard_lines: int
    emulator: EmulatorConfig
    sdk_poll_interval: float
    target_rss_mb: float
    target_wall_ratio: float | None = None  # batchpump wall / SDK wall, at most


JOBS: Final = {
    # A batch is done 3 s (real) after its create: 0.6 s validating, 1.8 s running, 0.6 s
    # finalizing (emulator seconds / 1000), so both contenders have to poll.
    "million": Job(
        name="million",
        lines=1_000_000,
        shard_lines=50_000,
        emulator=EmulatorConfig(
            validate_seconds=600.0, run_seconds=1800.0, finalize_seconds=600.0, seed=0
        ),
        sdk_poll_interval=2.0,
        target_rss_mb=256.0,
    ),
    # Issue 16's job: batches done 1 s after their create; the SDK script retrieves every 1 s.
    "latency": Job(
        name="latency",
        lines=120_000,
        shard_lines=50_000,
        emulator=EmulatorConfig(
            validate_seconds=200.0, run_seconds=600.0, finalize_seconds=200.0, seed=0
        ),
        sdk_poll_interval=1.0,
        target_rss_mb=100.0 * 1.048576,  # 100 MiB in MB
        target_wall_ratio=0.75,
    ),
}
QUICK_SIZES: Final = {"million": (20_000, 5_000), "latency": (12_000, 5_000)}
SEED: Final = 0
ID_PREFIX: Final = f"req-{SEED}-"  # ``_datagen`` ids: ``req-{seed}-{index:09d}``
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
MB: Final = 1024 * 1024


# -- the input ----------------------------------------------------------------------------------


def cached_input(n: int) -> Path:
    """N generated lines in ``$TMPDIR/batchpump-bench`` (generated once, then reused)."""
    directory = Path(tempfile.gettempdir()) / "batchpump-bench"
    directory.mkdir(parents=True, exist_ok=True)
    key = hashlib.blake2b(repr((n, SEED, DEFAULT_MEAN_LINE_BYTES)).encode(), digest_size=6)
    path = directory / f"e2e-{n}-{key.hexdigest()}.jsonl"
    if not path.exists():
        write_jsonl(path, count=n, seed=SEED)
    return path


# -- children -----------------------------------------------------------------------------------


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _status_kib(pid: int, field: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(field):
            return int(row.split()[1])
    return 0


def _tree_pss_kib(pid: int) -> int:
    """PSS of ``pid`` and its descendants (a forked worker's pages shared with its parent are
    split between them, not counted twice), or 0 if it is gone."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            for row in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if row.startswith("Pss:"):
                    total += int(row.split()[1])
                    break
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def _sample_hwm(pid: int, peak: list[float], done: threading.Event) -> None:
    """Keep the child's own ``VmHWM`` (KiB) in ``peak[0]``, the seconds after start when it
    last grew in ``peak[1]`` and the peak PSS of the child with its own children (the CLI's
    input workers) in ``peak[2]``, until ``done``: ``ru_maxrss`` from ``wait4`` starts at the
    parent's peak (Linux carries it across fork and exec), so it overstates a child smaller
    than this driver."""
    start = time.perf_counter()
    while not done.wait(0.01):
        with contextlib.suppress(OSError, ValueError, IndexError):
            hwm = _status_kib(pid, "VmHWM:")
            if hwm > peak[0]:
                peak[0], peak[1] = hwm, time.perf_counter() - start
            peak[2] = max(peak[2], _tree_pss_kib(pid))


def run_child(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``argv`` to its end (killed after ``timeout`` s); its wall time and own rusage."""
    out_path, err_path = cwd / "child.stdout", cwd / "child.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, stdout=out, stderr=err, env=env, cwd=cwd, preexec_fn=_die_with_parent
        )
        watchdog = threading.Timer(timeout, os.kill, (child.pid, signal.SIGKILL))
        watchdog.start()
        hwm, exited = [0.0, 0.0, 0.0], threading.Event()
        sampler = threading.Thread(target=_sample_hwm, args=(child.pid, hwm, exited), daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            exited.set()
            watchdog.cancel()
            sampler.join()
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    return {
        "exit_code": child.returncode,
        "wall_s": round(wall, 3),
        # The child's own high-water mark, sampled every 10 ms (the last 10 ms may be
        # missed); ru_maxrss beside it is at least this driver's peak.
        "peak_rss_mb": round(hwm[0] / 1024, 1) if hwm[0] else round(usage.ru_maxrss / 1024, 1),
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "peak_rss_at_s": round(hwm[1], 2),
        "tree_peak_pss_mb": round(hwm[2] / 1024, 1),  # with its children (input workers)
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_system_s": round(usage.ru_stime, 2),
        "stdout_tail": stdout[-2000:],
        "stderr_tail": err_path.read_text(errors="replace")[-2000:],
    }


def child_env(base_url: str, code: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH", "")) if p)
    env["OPENAI_API_KEY"] = BENCH_KEY
    env["OPENAI_BASE_URL"] = base_url
    return env


def argv_for(
    name: str, job: Job, src: Path, out: Path, work: Path, args: argparse.Namespace
) -> list[str]:
    if name == "batchpump":
        return [
            sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out),
            "--journal", str(work / "state"), "--max-lines", str(job.shard_lines),
            "--progress", "none",
        ]  # fmt: skip
    return [
        sys.executable, str(Path(__file__).resolve()), "--sdk-worker", "--input", str(src),
        "--out", str(out), "--work", str(work / "shards"), "--shard-lines",
        str(job.shard_lines), "--poll-interval", str(job.sdk_poll_interval),
        "--concurrency", str(args.concurrency),
    ]  # fmt: skip


# -- the SDK script (runs in the child) ---------------------------------------------------------


def split(src: Path, directory: Path, per_shard: int) -> list[Path]:
    """Cut the input into files of ``per_shard`` lines (streamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    out = None
    count = per_shard
    with src.open("rb") as lines:
        for line in lines:
            if count == per_shard:
                if out is not None:
                    out.close()
                paths.append(directory / f"shard-{len(paths):05d}.jsonl")
                out = paths[-1].open("wb")
                count = 0
            assert out is not None
            out.write(line)
            count += 1
    if out is not None:
        out.close()
    return paths


async def sdk_main(args: argparse.Namespace) -> dict[str, Any]:
    from openai import AsyncOpenAI  # only the child needs it

    start = time.perf_counter()
    shards = split(args.input, args.work, args.shard_lines)
    split_s = time.perf_counter() - start
    gate = asyncio.Semaphore(args.concurrency)
    counts = {"retrieves": 0, "batches": 0}
    with args.out.open("wb") as sink:
        async with AsyncOpenAI() as client:  # OPENAI_API_KEY / OPENAI_BASE_URL

            async def one(path: Path) -> None:
                async with gate:
                    with path.open("rb") as f:
                        file = await client.files.create(file=f, purpose="batch")
                    batch = await client.batches.create(
                        input_file_id=file.id, endpoint=DEFAULT_ENDPOINT, completion_window="24h"
                    )
                    counts["batches"] += 1
                    while batch.status not in TERMINAL:
                        await asyncio.sleep(args.poll_interval)
                        batch = await client.batches.retrieve(batch.id)
                        counts["retrieves"] += 1
                    for file_id in (batch.output_file_id, batch.error_file_id):
                        if file_id:
                            content = await client.files.content(file_id)
                            sink.write(content.content)

            async with asyncio.TaskGroup() as tg:  # Python 3.11's structured gather
                for path in shards:
                    tg.create_task(one(path))
    return {"split_s": round(split_s, 3), "shards": len(shards), **counts}


# -- exactly once -------------------------------------------------------------------------------


class _Response(msgspec.Struct):
    status_code: int = 0


class _Line(msgspec.Struct):
    """The fields both results shapes share: batchpump's ``Result`` or OpenAI's output line."""

    custom_id: str
    status: str | None = None  # batchpump: "succeeded", "errored", ...
    response: _Response | None = None  # OpenAI output lines
    error: Any = None


def check_exactly_once(path: Path, n: int) -> dict[str, Any]:
    """One result per input ``custom_id``: one byte per input line, the file streamed."""
    seen = bytearray(n)
    decoder = msgspec.json.Decoder(_Line)
    lines = duplicates = unknown = succeeded = bad = 0
    with path.open("rb") as results:
        for raw in results:
            if not raw.strip():
                continue
            lines += 1
            try:
                line = decoder.decode(raw)
            except msgspec.DecodeError:
                bad += 1
                continue
            cid = line.custom_id
            index = int(cid[len(ID_PREFIX) :]) if cid.startswith(ID_PREFIX) else -1
            if not 0 <= index < n:
                unknown += 1
                continue
            if seen[index]:
                duplicates += 1
            else:
                seen[index] = 1
            ok = line.status == "succeeded" or (
                line.status is None
                and line.error is None
                and line.response is not None
                and line.response.status_code == 200
            )
            succeeded += ok
    distinct = sum(seen)
    return {
        "lines": lines,
        "distinct_ids": distinct,
        "duplicates": duplicates,
        "missing": n - distinct,
        "unknown_ids": unknown,
        "undecodable": bad,
        "succeeded": succeeded,
        "exactly_once": lines == n == distinct and not (duplicates or unknown or bad),
        "bytes": path.stat().st_size,
    }


# -- driver -------------------------------------------------------------------------------------


async def measure(
    name: str, job: Job, src: Path, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One contender (a child process) against a fresh emulator."""
    n = job.lines
    code = args.code if name == "batchpump" else REPO_ROOT
    async with open_emulator_process(job.emulator, time_scale=TIME_SCALE) as emu:
        with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{name}-") as tmp:
            work = Path(tmp)
            out = work / "results.jsonl"
            argv = argv_for(name, job, src, out, work, args)
            emu_cpu0 = process_cpu_seconds(emu.pid)
            load0 = os.getloadavg()[0]
            child = await anyio.to_thread.run_sync(
                run_child, argv, child_env(emu.openai_base_url, code), work, args.timeout
            )
            emu_cpu1 = process_cpu_seconds(emu.pid)
            load1 = os.getloadavg()[0]
            check = (
                await anyio.to_thread.run_sync(check_exactly_once, out, n) if out.exists() else None
            )
        snapshot = await emu.stats()
    extra: dict[str, Any] = {}
    if name == "sdk" and child["exit_code"] == 0:
        try:
            extra = json.loads(child["stdout_tail"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            extra = {}
    emu_cpu = emu_cpu1 - emu_cpu0 if emu_cpu0 is not None and emu_cpu1 is not None else None
    routes = route_counts(snapshot)
    return {
        "command": " ".join(Path(a).name if a.startswith("/") else a for a in argv),
        "code": str(code),
        **{k: v for k, v in child.items() if not k.endswith("_tail") or child["exit_code"]},
        "lines_per_s": round(n / child["wall_s"], 1),
        "input_mb_per_s": round(size / MB / child["wall_s"], 1),
        "emulator_cpu_s": None if emu_cpu is None else round(emu_cpu, 1),
        "load_avg_1min_before_after": [round(load0, 2), round(load1, 2)],
        "results": check,
        "child_report": extra,
        "emulator": {
            "batches_created": snapshot.get("batches_created"),
            "requests": routes,
            "billed_lines": snapshot.get("billed_lines"),
            "double_billed": len(snapshot.get("double_billed") or {}),
        },
    }


async def run_job(
    job: Job, args: argparse.Namespace, machine: dict[str, Any], failures: list[str]
) -> dict[str, Any]:
    """Both contenders on ``job``; its record (the summary line is printed)."""
    n = job.lines
    start = time.perf_counter()
    src = await anyio.to_thread.run_sync(cached_input, n)
    prepared = time.perf_counter() - start
    size = (await anyio.Path(src).stat()).st_size
    print(
        f"{NAME} [{job.name}]: input {src} ({n:,} lines, {size / MB:,.0f} MB; {prepared:.1f} s)",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        try:
            results[name] = f = await measure(name, job, src, size, args)
        except Exception as exc:  # report, keep measuring the others, exit non-zero
            failures.append(f"{job.name} {name}: {type(exc).__name__}: {exc}")
            print(f"{NAME}: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if f["exit_code"] != 0:
            failures.append(
                f"{job.name} {name}: exit code {f['exit_code']}: {f.get('stderr_tail')}"
            )
        elif f["results"] is None or not f["results"]["exactly_once"]:
            failures.append(f"{job.name} {name}: results not exactly once: {f['results']}")
        print(_line(name, f), flush=True)
    print(_summary(job, args, machine, results), flush=True)
    return {
        "setup": {
            "lines": n,
            "shard_lines": job.shard_lines,
            "shards": -(-n // job.shard_lines),
            "input_bytes": size,
            "input": "benchmarks/_datagen.py write_jsonl(count=N, seed=0), cached",
            "sdk_concurrency": args.concurrency,
            "sdk_poll_interval_s": job.sdk_poll_interval,
            "batchpump": f"python -m batchpump run (CLI defaults; child process; {args.code})",
            "emulator": {
                "process": "separate (python -m batchpump.emulator), one fresh per contender",
                "time_scale": TIME_SCALE,
                "config": msgspec.to_builtins(job.emulator),
            },
        },
        "contenders": results,
        "target_peak_rss_mb": job.target_rss_mb,
        "target_wall_ratio": job.target_wall_ratio,
    }


async def amain(args: argparse.Namespace) -> int:
    machine = machine_info()
    failures: list[str] = []
    jobs: dict[str, Any] = {}
    for name in args.job:
        job = JOBS[name]
        if args.quick:
            lines, shard_lines = QUICK_SIZES[name]
            job = msgspec.structs.replace(job, lines=lines, shard_lines=shard_lines)
        if name == "million" and args.n is not None:
            job = msgspec.structs.replace(job, lines=args.n)
        if name == "million" and args.shard_lines is not None:
            job = msgspec.structs.replace(job, shard_lines=args.shard_lines)
        jobs[name] = await run_job(job, args, machine, failures)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "machine": {**machine, "load_avg_after": machine_info()["load_avg_1_5_15"]},
        "quick": args.quick,
        "jobs": jobs,
        "failures": failures,
    }
    path = write_record(NAME, record)
    print(f"{NAME}: wrote {path}")
    return 1 if failures else 0


def _line(name: str, f: dict[str, Any]) -> str:
    r = f["results"] or {}
    return (
        f"  {name:<9} exit {f['exit_code']}  wall {f['wall_s']:>7.1f} s  "
        f"{f['lines_per_s']:>9,.0f} lines/s  peak RSS {f['peak_rss_mb']:>7.1f} MB "
        f"at {f['peak_rss_at_s']:.1f} s (tree PSS {f['tree_peak_pss_mb']:.1f} MB)  "
        f"CPU {f['cpu_user_s'] + f['cpu_system_s']:.1f} s (emulator {f['emulator_cpu_s']} s)  "
        f"results {r.get('lines', 0):,} lines, {r.get('distinct_ids', 0):,} ids, "
        f"dup {r.get('duplicates')}, missing {r.get('missing')}, ok {r.get('succeeded', 0):,}"
    )


def _summary(
    job: Job, args: argparse.Namespace, machine: dict[str, Any], results: dict[str, dict[str, Any]]
) -> str:
    def fig(name: str) -> str:
        f = results.get(name)
        if f is None:
            return "failed" if name in args.only else "not run"
        once = "exactly once" if (f["results"] or {}).get("exactly_once") else "NOT exactly once"
        mib = f["peak_rss_mb"] / 1.048576
        tree = f"; with its children PSS {f['tree_peak_pss_mb']:.0f} MB" if name != "sdk" else ""
        return (
            f"{f['wall_s']:.2f} s, peak RSS {f['peak_rss_mb']:.0f} MB ({mib:.0f} MiB) at "
            f"{f['peak_rss_at_s']:.1f} s{tree}, {once}"
        )

    ratio = ""
    bp, sdk = results.get("batchpump"), results.get("sdk")
    if bp and sdk:
        ratio = (
            f" | wall batchpump/sdk {bp['wall_s'] / sdk['wall_s']:.2f}x, "
            f"RSS sdk/batchpump {sdk['peak_rss_mb'] / bp['peak_rss_mb']:.1f}x"
        )
    targets = f"peak RSS <= {job.target_rss_mb:.0f} MB"
    if job.target_wall_ratio is not None:
        targets = f"wall <= {job.target_wall_ratio:g}x the script's, " + targets
    n, per = job.lines, job.shard_lines
    return (
        f"{NAME} [{job.name}] {n:,} lines in {-(-n // per)} shards of <= {per:,}, batches done "
        f"{_batch_seconds(job):g} s after create, SDK retrieve every {job.sdk_poll_interval:g} s, "
        f"emulator x{TIME_SCALE:g} in its own process [{machine_line(machine)}]: "
        f"batchpump CLI {fig('batchpump')} | openai SDK script {fig('sdk')}{ratio} "
        f"(targets {targets})"
    )


def _batch_seconds(job: Job) -> float:
    e = job.emulator
    return (e.validate_seconds + e.run_seconds + e.finalize_seconds) / TIME_SCALE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="lines of the million job")
    parser.add_argument("--shard-lines", type=int, default=None, help="of the million job")
    parser.add_argument("--quick", action="store_true", help="both jobs at CI sizes")
    parser.add_argument("--concurrency", type=int, default=8, help="SDK shards at once (8)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--job", nargs="+", choices=list(JOBS), default=list(JOBS), help="jobs")
    parser.add_argument(
        "--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="contenders"
    )
    parser.add_argument(
        "--code", type=Path, default=REPO_ROOT, help="checkout whose batchpump CLI runs"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per contender")
    # The child side of the ``sdk`` contender.
    parser.add_argument("--sdk-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sdk_worker:
        report = asyncio.run(sdk_main(args))
        print(json.dumps(report))
        return 0
    if args.timeout is None:
        args.timeout = 120.0 if args.quick else 3600.0
    if (args.n or 1) < 1 or (args.shard_lines or 1) < 1 or args.concurrency < 1:
        parser.error("-n, --shard-lines and --concurrency must be >= 1")
    args.code = args.code.resolve()
    return anyio.run(amain, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
