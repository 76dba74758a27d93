"""Benchmark: 1,000,000 requests end to end, the ``batchpump`` CLI beside an ``openai`` SDK script.

Usage: ``python benchmarks/bench_end_to_end.py [-n 1000000] [--shard-lines 50000] [--quick]``

The input is N chat-completion lines from ``_datagen.py`` (``--quick``: 20,000 lines in 4 shards
of 5,000), generated once and cached in ``$TMPDIR/batchpump-bench``. The emulator runs in its own
process (``python -m batchpump.emulator``, loopback, port 0, time scale 1000; validating,
running and finalizing take 600, 1800 and 600 emulator seconds, so a batch is done 3 s after
its create: short beside the transfers, but both contenders have to poll), one fresh emulator
per contender. Each
contender is a child process of this one, so its peak RSS is its own (``ru_maxrss`` from
``os.wait4``), and gets the same input file:

- ``batchpump``: ``python -m batchpump run INPUT --max-lines 50000 --progress none`` (the CLI,
  not ``Pump`` in-process: what users run; its defaults: 8 shards uploading/creating, 4
  downloading, list sweeps every 2 s at first, a SQLite journal, an fsynced results file);
- ``sdk``: this file with ``--sdk-worker``: a straightforward ``openai.AsyncOpenAI`` script
  that splits the input into shard files, then for each shard, 8 at a time
  (``asyncio.Semaphore``): ``files.create(file=open(path, "rb"))``, ``batches.create``,
  ``batches.retrieve`` every 2 s (``--poll-interval``, the engine's first interval) until the
  batch is terminal, and ``files.content`` of its output (and error) file read whole and
  appended to the results file.

Figures: wall time (spawn to exit), client peak RSS (target < 256 MB), client CPU (user +
system, from the same ``wait4``), emulator CPU over the run (``/proc``), and the results file
checked for exactly one line per input ``custom_id`` (the file streamed, one byte per input line
marks the ids seen: 1 MB for 10^6 lines): lines, distinct ids, duplicates, missing, unknown,
succeeded. The emulator's own counts (batches created, requests per route, lines billed twice)
come from ``/_emulator/stats``.

Prints one summary line and writes ``benchmarks/results/bench_end_to_end.json``. Never asserts a
time; exits non-zero only if a contender failed or its results are not exactly once.
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
#: A batch is done 3 s (real) after its create: 0.6 s validating, 1.8 s running, 0.6 s
#: finalizing (emulator seconds / 1000), so both contenders have to poll.
EMULATOR: Final = EmulatorConfig(
    validate_seconds=600.0, run_seconds=1800.0, finalize_seconds=600.0, seed=0
)
TARGET_RSS_MB: Final = 256.0
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
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    return {
        "exit_code": child.returncode,
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_system_s": round(usage.ru_stime, 2),
        "stdout_tail": stdout[-2000:],
        "stderr_tail": err_path.read_text(errors="replace")[-2000:],
    }


def child_env(base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["OPENAI_API_KEY"] = BENCH_KEY
    env["OPENAI_BASE_URL"] = base_url
    return env


def argv_for(name: str, src: Path, out: Path, work: Path, args: argparse.Namespace) -> list[str]:
    if name == "batchpump":
        return [
            sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out),
            "--journal", str(work / "state"), "--max-lines", str(args.shard_lines),
            "--progress", "none",
        ]  # fmt: skip
    return [
        sys.executable, str(Path(__file__).resolve()), "--sdk-worker", "--input", str(src),
        "--out", str(out), "--work", str(work / "shards"), "--shard-lines",
        str(args.shard_lines), "--poll-interval", str(args.poll_interval),
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


async def measure(name: str, src: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One contender (a child process) against a fresh emulator."""
    async with open_emulator_process(EMULATOR, time_scale=TIME_SCALE) as emu:
        with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{name}-") as tmp:
            work = Path(tmp)
            out = work / "results.jsonl"
            argv = argv_for(name, src, out, work, args)
            emu_cpu0 = process_cpu_seconds(emu.pid)
            load0 = os.getloadavg()[0]
            child = await anyio.to_thread.run_sync(
                run_child, argv, child_env(emu.openai_base_url), work, args.timeout
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
        **{k: v for k, v in child.items() if not k.endswith("_tail") or child["exit_code"]},
        "lines_per_s": round(n / child["wall_s"], 1),
        "input_mb_per_s": round(args.input_bytes / MB / child["wall_s"], 1),
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


async def amain(args: argparse.Namespace) -> int:
    n = args.n
    machine = machine_info()
    start = time.perf_counter()
    src = await anyio.to_thread.run_sync(cached_input, n)
    prepared = time.perf_counter() - start
    size = args.input_bytes = (await anyio.Path(src).stat()).st_size
    print(f"{NAME}: input {src} ({n:,} lines, {size / MB:,.0f} MB; {prepared:.1f} s)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name in args.only:
        try:
            results[name] = f = await measure(name, src, n, args)
        except Exception as exc:  # report, keep measuring the others, exit non-zero
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"{NAME}: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if f["exit_code"] != 0:
            failures.append(f"{name}: exit code {f['exit_code']}: {f.get('stderr_tail', '')}")
        elif f["results"] is None or not f["results"]["exactly_once"]:
            failures.append(f"{name}: results not exactly once: {f['results']}")
        print(_line(name, f), flush=True)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "machine": {**machine, "load_avg_after": machine_info()["load_avg_1_5_15"]},
        "setup": {
            "lines": n,
            "shard_lines": args.shard_lines,
            "shards": -(-n // args.shard_lines),
            "input_bytes": size,
            "input": "benchmarks/_datagen.py write_jsonl(count=N, seed=0), cached",
            "sdk_concurrency": args.concurrency,
            "sdk_poll_interval_s": args.poll_interval,
            "batchpump": "python -m batchpump run (CLI defaults; child process)",
            "emulator": {
                "process": "separate (python -m batchpump.emulator), one fresh per contender",
                "time_scale": TIME_SCALE,
                "config": msgspec.to_builtins(EMULATOR),
            },
            "quick": args.quick,
        },
        "contenders": results,
        "target_peak_rss_mb": TARGET_RSS_MB,
        "failures": failures,
    }
    path = write_record(NAME, record)
    print(_summary(n, args, machine, results, path))
    return 1 if failures else 0


def _line(name: str, f: dict[str, Any]) -> str:
    r = f["results"] or {}
    return (
        f"  {name:<9} exit {f['exit_code']}  wall {f['wall_s']:>7.1f} s  "
        f"{f['lines_per_s']:>9,.0f} lines/s  peak RSS {f['peak_rss_mb']:>7.1f} MB  "
        f"CPU {f['cpu_user_s'] + f['cpu_system_s']:.1f} s (emulator {f['emulator_cpu_s']} s)  "
        f"results {r.get('lines', 0):,} lines, {r.get('distinct_ids', 0):,} ids, "
        f"dup {r.get('duplicates')}, missing {r.get('missing')}, ok {r.get('succeeded', 0):,}"
    )


def _summary(
    n: int,
    args: argparse.Namespace,
    machine: dict[str, Any],
    results: dict[str, dict[str, Any]],
    path: Path,
) -> str:
    def fig(name: str) -> str:
        f = results.get(name)
        if f is None:
            return "failed" if name in args.only else "not run"
        once = "exactly once" if (f["results"] or {}).get("exactly_once") else "NOT exactly once"
        return f"{f['wall_s']:.1f} s, peak RSS {f['peak_rss_mb']:.0f} MB, {once}"

    ratio = ""
    bp, sdk = results.get("batchpump"), results.get("sdk")
    if bp and sdk:
        ratio = (
            f" | wall sdk/batchpump {sdk['wall_s'] / bp['wall_s']:.2f}x, "
            f"RSS sdk/batchpump {sdk['peak_rss_mb'] / bp['peak_rss_mb']:.1f}x"
        )
    return (
        f"{NAME} {n:,} lines in {-(-n // args.shard_lines)} shards of {args.shard_lines:,}, "
        f"emulator x{TIME_SCALE:g} in its own process [{machine_line(machine)}]: "
        f"batchpump CLI {fig('batchpump')} | openai SDK script {fig('sdk')}{ratio} "
        f"(target peak RSS < {TARGET_RSS_MB:.0f} MB) -> {path}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="lines (default 1000000)")
    parser.add_argument("--shard-lines", type=int, default=50_000, help="default 50000")
    parser.add_argument("--quick", action="store_true", help="20,000 lines in 4 shards")
    parser.add_argument("--concurrency", type=int, default=8, help="SDK shards at once (8)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="SDK polling (2 s)")
    parser.add_argument(
        "--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="contenders"
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
    if args.quick:
        args.n, args.shard_lines = 20_000, 5_000
    if args.timeout is None:
        args.timeout = 120.0 if args.quick else 3600.0
    if args.n < 1 or args.shard_lines < 1 or args.concurrency < 1 or args.poll_interval <= 0:
        parser.error("-n, --shard-lines and --concurrency must be >= 1, --poll-interval > 0")
    return anyio.run(amain, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
