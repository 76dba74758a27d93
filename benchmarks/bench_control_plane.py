"""Benchmark: upload, create, poll and download through the engine and two baselines.

Usage: ``python benchmarks/bench_control_plane.py [-n 20000] [--quick] [--profile]``

N one-line shards (``--quick``: 500) go through upload, create, polling to completion and
download, against the emulator in its own process (``python -m batchpump.emulator``, loopback,
port 0; batches validate, run and finalize in 1 emulator second each at a time scale of 1000,
so a batch is done about 3 ms after its create; no faults). One fresh emulator per contender,
so every contender starts from an empty emulator and its request counts are its own:

- ``engine``: ``Pump`` + the ``OpenAI`` adapter + ``SqliteJournal`` in a temp dir (what users
  get; ``--journal memory`` for ``MemoryJournal``), ``max_lines=1``, from the input JSONL to the
  results file (sharding, write-ahead journal, fsynced results included);
- ``plain``: a plain aiohttp loop doing the same calls: multipart ``POST /files``,
  ``POST /batches``, list sweeps (``GET /batches?limit=100``, newest first, stop once every
  in-flight batch was seen) and ``GET /files/{id}/content`` appended to a results file;
- ``sdk``: the official ``openai.AsyncOpenAI`` used as its docs show: ``files.create``,
  ``batches.create``, ``batches.retrieve`` per in-flight batch each sweep, ``files.content``.

Concurrency is the same for all three: C (default 8, the engine's default) tasks uploading and
creating, C tasks downloading, one poller sweeping every P seconds (default 0.5; the SDK's
retrieves of one sweep also run C at a time). creates/s is N over the time from the start
(input file on disk, nothing sent) to the N-th successful create; wall is until the last
result is written. Each contender's line also gives the CPU per batch of the client process (all
threads, ``getrusage``) and of its emulator child (``/proc/PID/stat``); for the engine the JSON
adds the journal's commits, transactions, writer wake-ups and deferred records per batch.
Prints the summary and writes ``benchmarks/results/bench_control_plane.json``.
Never asserts a time; exits non-zero only if a contender failed or lost results.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import anyio
import msgspec
from anyio.abc import ObjectReceiveStream
from openai import AsyncOpenAI

from batchpump import Limits, MemoryJournal, PollPolicy, Pump, RunOptions
from batchpump._journal import SqliteJournal
from batchpump.emulator import EmulatorConfig
from batchpump.providers.openai import OpenAI
from benchmarks._common import (
    BENCH_KEY,
    RESULTS_DIR,
    EmulatorProcess,
    machine_info,
    machine_line,
    open_emulator_process,
    route_counts,
    write_record,
)
from benchmarks._datagen import DEFAULT_ENDPOINT, generate_lines

NAME: Final = "bench_control_plane"
CONTENDERS: Final = ("engine", "plain", "sdk")
TIME_SCALE: Final = 1000.0
EMULATOR: Final = EmulatorConfig(
    validate_seconds=1.0, run_seconds=1.0, finalize_seconds=1.0, cancel_seconds=1.0, seed=0
)
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
#: Seconds (emulator clock) a list sweep walks past the oldest in-flight batch (as the engine).
SWEEP_SLACK: Final = 120.0
TARGETS: Final = {"engine_vs_plain_creates": 0.85, "engine_vs_sdk_creates": 8.0}


class Figures(msgspec.Struct, kw_only=True):
    """What one contender measured."""

    creates_per_s: float
    wall_s: float
    created_s: float
    batches: int
    results: int
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


# -- the engine -------------------------------------------------------------------------------


async def run_engine(
    emu: EmulatorProcess, src: Path, work: Path, n: int, args: argparse.Namespace
) -> Figures:
    """The input JSONL through ``Pump`` to its results file."""
    c = args.concurrency
    provider = OpenAI(
        api_key=BENCH_KEY,
        base_url=emu.openai_base_url,
        limits=Limits(upload_concurrency=c, create_concurrency=c, download_concurrency=c),
    )
    options = RunOptions(
        max_lines=1,
        submit_concurrency=c,
        collect_concurrency=c,
        poll=PollPolicy(interval_min=args.poll_interval, interval_max=args.poll_interval),
    )
    journal = MemoryJournal() if args.journal == "memory" else None
    created_at: list[float] = []
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    async with Pump(provider, state_dir=work / "state", journal=journal) as pump:
        run = await pump.submit(src, options=options, out=work / "engine.results.jsonl")
        extra["sharded_s"] = round(time.perf_counter() - start, 3)

        async def watch() -> None:
            while not run.done:
                if run.statistics().batches_created >= n:
                    created_at.append(time.perf_counter())
                    return
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            counts = await run.wait()
            tg.cancel_scope.cancel()
        wall = time.perf_counter() - start
        used = pump.journal
        transactions = wakeups = deferred = -1
        if isinstance(used, SqliteJournal):
            journal_stats = used.statistics()
            commits, transactions = journal_stats.commits, journal_stats.transactions
            wakeups, deferred = journal_stats.wakeups, journal_stats.deferred
        elif isinstance(used, MemoryJournal):
            commits = used.commits
        else:
            commits = -1
    http = provider.statistics()
    created = (created_at[0] if created_at else time.perf_counter()) - start
    stats = run.statistics()
    extra.update(
        journal=args.journal,
        journal_commits=commits,
        journal_commits_per_batch=round(commits / max(n, 1), 2),
        journal_transactions=transactions,
        journal_transactions_per_batch=round(transactions / max(n, 1), 2),
        journal_wakeups_per_batch=round(wakeups / max(n, 1), 2),
        journal_deferred_per_batch=round(deferred / max(n, 1), 2),
        http_requests=http.requests,
        http_retries=http.retries,
        succeeded=counts.succeeded,
    )
    return Figures(
        creates_per_s=n / created,
        wall_s=wall,
        created_s=created,
        batches=stats.batches_created,
        results=counts.total,
        extra=extra,
    )


# -- the baselines: one pipeline, two ways of talking to the API ----------------------------------


class Calls(Protocol):
    """How a baseline talks to the API."""

    async def submit(self, index: int, data: bytes) -> tuple[str, float]:
        """Upload one shard and create its batch; ``(batch id, created_at)``."""
        ...

    async def sweep(self, in_flight: dict[str, float]) -> list[tuple[str, str]]:
        """Refresh in-flight batches; ``(batch id, output file id)`` of the terminal ones."""
        ...

    async def download(self, file_id: str) -> bytes:
        """The content of a result file."""
        ...


async def run_pipeline(
    calls: Calls, lines: Sequence[bytes], out: Path, concurrency: int, interval: float
) -> Figures:
    """C submitters, one poller every ``interval`` s, C downloaders appending to ``out``."""
    n = len(lines)
    in_flight: dict[str, float] = {}
    state = {"created": 0, "results": 0, "sweeps": 0}
    marks: dict[str, float] = {}
    work = iter(enumerate(lines))
    send, receive = anyio.create_memory_object_stream[tuple[str, str]](concurrency)
    start = time.perf_counter()

    async def submitter() -> None:
        for index, data in work:
            batch_id, created = await calls.submit(index, data)
            in_flight[batch_id] = created
            state["created"] += 1
            if state["created"] == n:
                marks["created"] = time.perf_counter()

    async def poller(submitting: anyio.Event) -> None:
        async with send:
            while True:
                began = time.perf_counter()
                if in_flight:
                    state["sweeps"] += 1
                    for batch_id, file_id in await calls.sweep(dict(in_flight)):
                        del in_flight[batch_id]
                        await send.send((batch_id, file_id))
                elif submitting.is_set():
                    return
                await anyio.sleep(max(0.0, interval - (time.perf_counter() - began)))

    async def downloader(
        files: ObjectReceiveStream[tuple[str, str]], sink: io.BufferedWriter
    ) -> None:
        async with files:
            async for _, file_id in files:
                data = await calls.download(file_id)
                sink.write(data)
                state["results"] += data.count(b"\n")

    with out.open("wb") as sink:
        async with anyio.create_task_group() as tg:
            submitted = anyio.Event()
            tg.start_soon(poller, submitted)
            for _ in range(concurrency):
                tg.start_soon(downloader, receive.clone(), sink)
            receive.close()
            async with anyio.create_task_group() as submitters:
                for _ in range(concurrency):
                    submitters.start_soon(submitter)
            submitted.set()
    wall = time.perf_counter() - start
    created = marks.get("created", time.perf_counter()) - start
    return Figures(
        creates_per_s=n / created,
        wall_s=wall,
        created_s=created,
        batches=state["created"],
        results=state["results"],
        extra={"sweeps": state["sweeps"]},
    )


class PlainCalls:
    """aiohttp as a user writes it: ``FormData`` uploads, ``resp.json()``, list sweeps."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url

    async def submit(self, index: int, data: bytes) -> tuple[str, float]:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field(
            "file", data, filename=f"{index:05d}.jsonl", content_type="application/jsonl"
        )
        async with self._session.post(f"{self._base}/files", data=form) as resp:
            resp.raise_for_status()
            file_id = (await resp.json())["id"]
        body = {
            "input_file_id": file_id,
            "endpoint": DEFAULT_ENDPOINT,
            "completion_window": "24h",
            "metadata": {"batchpump_shard": f"plain:{index}"},
        }
        async with self._session.post(f"{self._base}/batches", json=body) as resp:
            resp.raise_for_status()
            batch = await resp.json()
        return batch["id"], float(batch["created_at"])

    async def sweep(self, in_flight: dict[str, float]) -> list[tuple[str, str]]:
        missing = set(in_flight)
        oldest = min(in_flight.values()) - SWEEP_SLACK
        done: list[tuple[str, str]] = []
        params = {"limit": "100"}
        while missing:
            async with self._session.get(f"{self._base}/batches", params=params) as resp:
                resp.raise_for_status()
                page = await resp.json()
            for batch in page["data"]:
                if batch["id"] in missing:
                    missing.discard(batch["id"])
                    if batch["status"] in TERMINAL:
                        done.append((batch["id"], _output(batch["id"], batch["output_file_id"])))
                if batch["created_at"] < oldest:
                    return done
            if not page["has_more"] or not page["data"]:
                break
            params = {"limit": "100", "after": page["last_id"]}
        return done

    async def download(self, file_id: str) -> bytes:
        async with self._session.get(f"{self._base}/files/{file_id}/content") as resp:
            resp.raise_for_status()
            return await resp.read()


class SdkCalls:
    """``openai.AsyncOpenAI`` as its docs show it, retrieving each in-flight batch per sweep."""

    def __init__(self, client: AsyncOpenAI, concurrency: int) -> None:
        self._client = client
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def submit(self, index: int, data: bytes) -> tuple[str, float]:
        file = await self._client.files.create(
            file=(f"{index:05d}.jsonl", data, "application/jsonl"), purpose="batch"
        )
        batch = await self._client.batches.create(
            input_file_id=file.id,
            endpoint=DEFAULT_ENDPOINT,
            completion_window="24h",
            metadata={"batchpump_shard": f"sdk:{index}"},
        )
        return batch.id, float(batch.created_at)

    async def sweep(self, in_flight: dict[str, float]) -> list[tuple[str, str]]:
        done: list[tuple[str, str]] = []

        async def one(batch_id: str) -> None:
            async with self._limiter:
                batch = await self._client.batches.retrieve(batch_id)
            if batch.status in TERMINAL:
                done.append((batch.id, _output(batch.id, batch.output_file_id)))

        async with anyio.create_task_group() as tg:
            for batch_id in in_flight:
                tg.start_soon(one, batch_id)
        return done

    async def download(self, file_id: str) -> bytes:
        content = await self._client.files.content(file_id)
        return content.content


def _output(batch_id: str, file_id: str | None) -> str:
    if file_id is None:
        raise RuntimeError(f"batch {batch_id} ended without an output file")
    return file_id


async def run_plain(
    emu: EmulatorProcess, src: Path, work: Path, n: int, args: argparse.Namespace
) -> Figures:
    lines = (await anyio.Path(src).read_bytes()).splitlines(keepends=True)
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    connector = aiohttp.TCPConnector(limit=2 * args.concurrency + 1)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        calls = PlainCalls(session, emu.openai_base_url)
        return await run_pipeline(
            calls, lines, work / "plain.results.jsonl", args.concurrency, args.poll_interval
        )


async def run_sdk(
    emu: EmulatorProcess, src: Path, work: Path, n: int, args: argparse.Namespace
) -> Figures:
    lines = (await anyio.Path(src).read_bytes()).splitlines(keepends=True)
    async with AsyncOpenAI(api_key=BENCH_KEY, base_url=emu.openai_base_url) as client:
        calls = SdkCalls(client, args.concurrency)
        return await run_pipeline(
            calls, lines, work / "sdk.results.jsonl", args.concurrency, args.poll_interval
        )


Runner = Callable[[EmulatorProcess, Path, Path, int, argparse.Namespace], Awaitable[Figures]]
RUNNERS: Final[dict[str, Runner]] = {"engine": run_engine, "plain": run_plain, "sdk": run_sdk}


# -- driver -----------------------------------------------------------------------------------


async def measure(
    name: str, src: Path, n: int, args: argparse.Namespace, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    """One contender against a fresh emulator; its figures and the emulator's request counts."""
    async with open_emulator_process(EMULATOR, time_scale=TIME_SCALE) as emu:
        with tempfile.TemporaryDirectory(prefix=f"bench-cp-{name}-") as tmp:
            with anyio.fail_after(args.timeout):
                client_cpu, emulator_cpu = _cpu_seconds(), _process_cpu_seconds(emu.pid)
                if profiler is not None:
                    profiler.enable()
                try:
                    figures = await RUNNERS[name](emu, src, Path(tmp), n, args)
                finally:
                    if profiler is not None:
                        profiler.disable()
                client_cpu = _cpu_seconds() - client_cpu
                emulator_cpu = _process_cpu_seconds(emu.pid) - emulator_cpu
        snapshot = await emu.stats()
    routes = route_counts(snapshot)
    total = sum(routes.values())
    return {
        "creates_per_s": round(figures.creates_per_s, 1),
        "wall_s": round(figures.wall_s, 3),
        "created_s": round(figures.created_s, 3),
        "batches": figures.batches,
        "results": figures.results,
        **figures.extra,
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_ms_per_batch": round(1000 * client_cpu / max(n, 1), 3),
        "emulator_cpu_s": round(emulator_cpu, 2),
        "emulator_cpu_ms_per_batch": round(1000 * emulator_cpu / max(n, 1), 3),
        "emulator": {
            "batches_created": snapshot.get("batches_created"),
            "requests": routes,
            "requests_total": total,
            "requests_per_batch": round(total / max(n, 1), 3),
            "per_batch": {route: round(count / max(n, 1), 3) for route, count in routes.items()},
        },
    }


def _cpu_seconds() -> float:
    """User + system CPU of this process (every thread) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (``/proc/PID/stat``; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_profile(profiler: cProfile.Profile, path: Path) -> None:
    profiler.dump_stats(str(path))
    for order, count in (("cumulative", 25), ("tottime", 15)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(count)
        print(f"--- profile of the engine run, top {count} by {order} ---")
        print(out.getvalue().split("\n", 6)[-1].rstrip())  # drop the header lines
    print(f"profile written to {path} (main thread only: SQLite and file I/O threads not shown)")


async def amain(args: argparse.Namespace) -> int:
    n = 500 if args.quick else args.n
    names = [c for c in CONTENDERS if c in args.only]
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-cp-input-") as tmp:
        src = Path(tmp) / "requests.jsonl"
        with src.open("wb") as out:
            out.writelines(generate_lines(count=n, seed=args.seed))
        profiler = cProfile.Profile() if args.profile else None
        results: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        for name in names:
            try:
                results[name] = await measure(
                    name, src, n, args, profiler if name == "engine" else None
                )
            except Exception as exc:  # report, keep measuring the others, exit non-zero
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                print(f"{NAME}: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            figures = results[name]
            if figures["results"] != n or figures["batches"] != n:
                failures.append(
                    f"{name}: {figures['batches']} batches, {figures['results']} results"
                )
            print(_line(name, figures), flush=True)
    ratios = _ratios(results)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "machine": {**machine, "load_avg_after": machine_info()["load_avg_1_5_15"]},
        "setup": {
            "shards": n,
            "lines_per_shard": 1,
            "concurrency": args.concurrency,
            "concurrency_meaning": (
                "C tasks upload+create, C tasks download, one poller; the SDK's per-batch "
                "retrieves of one sweep also run C at a time"
            ),
            "poll_interval_s": args.poll_interval,
            "journal": "MemoryJournal" if args.journal == "memory" else "SqliteJournal (temp dir)",
            "emulator": {
                "process": "separate (python -m batchpump.emulator), one fresh per contender",
                "time_scale": TIME_SCALE,
                "config": msgspec.to_builtins(EMULATOR),
            },
            "quick": args.quick,
            "profiled": args.profile,
        },
        "contenders": results,
        "ratios": ratios,
        "targets": TARGETS,
        "failures": failures,
    }
    path = write_record(NAME, record)
    print(_summary(n, args, machine, results, ratios, path))
    if profiler is not None and "engine" in results:
        print_profile(profiler, RESULTS_DIR / f"{NAME}.pstats")
    return 1 if failures else 0


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    engine = results.get("engine")
    for base in ("plain", "sdk"):
        other = results.get(base)
        if engine is None or other is None:
            continue
        ratios[f"engine_vs_{base}_creates"] = round(
            engine["creates_per_s"] / other["creates_per_s"], 2
        )
        ratios[f"engine_vs_{base}_wall"] = round(other["wall_s"] / engine["wall_s"], 2)
    return ratios


def _line(name: str, f: dict[str, Any]) -> str:
    emu = f["emulator"]
    per = ", ".join(f"{r.removeprefix('openai.')} {v}" for r, v in emu["per_batch"].items())
    return (
        f"  {name:<6} {f['creates_per_s']:>8.1f} creates/s  wall {f['wall_s']:>7.2f} s  "
        f"{f['results']:,} results | CPU/batch client {f['client_cpu_ms_per_batch']} ms, "
        f"emulator {f['emulator_cpu_ms_per_batch']} ms | requests/batch "
        f"{emu['requests_per_batch']} ({per})"
    )


def _summary(
    n: int,
    args: argparse.Namespace,
    machine: dict[str, Any],
    results: dict[str, dict[str, Any]],
    ratios: dict[str, float],
    path: Path,
) -> str:
    def fig(name: str) -> str:
        f = results.get(name)
        if f is None:
            return "failed" if name in args.only else "not run"
        return f"{f['creates_per_s']:.0f}/s, {f['wall_s']:.1f} s"

    def ratio(key: str) -> str:
        value = ratios.get(key)
        target = TARGETS.get(key)
        return f"{value}x (target >= {target}x)" if value is not None else "n/a"

    journal = "MemoryJournal" if args.journal == "memory" else "SqliteJournal"
    return (
        f"{NAME} {n:,} one-line batches, C={args.concurrency}, poll {args.poll_interval} s, "
        f"{journal}, emulator x{TIME_SCALE:g} in its own process [{machine_line(machine)}]: "
        f"engine {fig('engine')} | plain aiohttp {fig('plain')} | openai SDK {fig('sdk')} | "
        f"creates engine/plain {ratio('engine_vs_plain_creates')}, "
        f"engine/SDK {ratio('engine_vs_sdk_creates')} -> {path}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="one-line shards (default 20000)")
    parser.add_argument("--quick", action="store_true", help="500 shards (CI smoke run)")
    parser.add_argument("--concurrency", type=int, default=8, help="C (default 8)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--journal", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument(
        "--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="contenders"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the engine run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per contender")
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = 15.0 if args.quick else 1800.0
    if args.n < 1 or args.concurrency < 1 or not 0 < args.poll_interval < math.inf:
        parser.error("-n and --concurrency must be >= 1, --poll-interval > 0")
    return anyio.run(amain, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
