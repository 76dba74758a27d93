"""Benchmark: the engine's list-sweep ``Poller`` over many in-flight batches.

Usage: ``python benchmarks/bench_polling.py [-n 10000] [--quick]``

1. Starts the emulator in its own process (loopback, port 0, time scale 1000) with an endless
   ``run_seconds``, and creates N one-line batches directly over HTTP (plain aiohttp), so they
   all stay in flight (``--quick``: 300).
2. The last M of them (1 %, at least 30) are created with a ``run_seconds`` chosen per batch
   (``PUT /_emulator/config`` before each) so they complete one by one, evenly over a window
   that opens after the steady phase below.
3. Builds the engine's own objects around them, as ``Engine`` does: a ``RunContext`` (the
   ``OpenAI`` adapter, a ``SqliteJournal``, the system clock), a ``Poller`` whose ``on_done``
   feeds ``collect_concurrency`` tasks running the real ``Collector``, and ``Poller.add`` for
   every batch.
4. Steady phase: calls ``Poller.sweep()`` a few times and counts the emulator's answers per
   route (``/_emulator/stats``) around them: requests per batch per sweep (target <= 0.02).
5. Live phase: runs ``Poller.serve()`` (its adaptive interval, ``--interval-min`` /
   ``--interval-max``) until every completing batch reached a collector, and measures the
   delay from each batch's completion (its ``completed_at`` on the emulator clock, mapped to
   this process's monotonic clock by a calibration against ``created_at`` answers) to the
   poller handing it off and to its collector starting (results begin to download).

6. Detection delay by batch duration (``--durations``; default 1 s, 30 s, 5 min and 1 h, on
   the emulated clock): an in-process emulator and the ``Poller`` share one ``ScaledClock``
   (1 s batches at real time, 30 s at x10, 5 min at x30, 1 h at x100, so each case takes
   seconds, and a list request's few real milliseconds stay well under a second of the
   emulated clock; ``--quick``: 5 min at x100 and 1 h at x1000). M batches of 1,000 small
   lines (``--quick``: 10, else 40) are created over half a duration, each taking the
   duration times a seeded factor in [0.8, 1.2] (validating and finalizing 5 % of the
   duration each, as for shards of one size; running the rest, with growing
   ``request_counts``), and handed to ``Poller.add`` as the engine does, with the default
   ``PollPolicy``. Delay: from the batch's completion (its create's start on the shared clock
   plus its duration, so an overestimate by at most one create round trip) to the poller's
   hand-off. Printed per duration: p50, p95 and max delay beside the target max(1 s, 1 % of
   the duration), poll requests (list pages and retrieves, counted by the emulator) per batch
   in flight per sweep, and sweeps per emulated minute.

Prints the figures and writes ``benchmarks/results/bench_polling.json``. Never asserts a time;
exits non-zero only if the benchmark broke (an error, or completing batches never collected).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import anyio
import msgspec
from anyio.abc import ObjectReceiveStream

from batchpump import (
    BatchInfo,
    MemoryJournal,
    PollPolicy,
    RunOptions,
    ScaledClock,
    SystemClock,
)
from batchpump._engine import Collector, Poller, ResultSink, RunContext, TokenBudget
from batchpump._journal import SqliteJournal
from batchpump._models import RunRecord, ShardRecord
from batchpump.emulator import EmulatorConfig, open_emulator
from batchpump.providers.openai import OpenAI
from benchmarks._common import (
    BENCH_KEY,
    EmulatorProcess,
    machine_info,
    machine_line,
    open_emulator_process,
    percentiles,
    route_counts,
    write_record,
)
from benchmarks._datagen import DEFAULT_ENDPOINT, generate_lines

NAME: Final = "bench_polling"
TIME_SCALE: Final = 1000.0
VALIDATE: Final = 1.0
FINALIZE: Final = 1.0
#: Emulator seconds a steady batch runs: far beyond any benchmark (about 11 days of real time).
ENDLESS: Final = 1e9
STEADY: Final = EmulatorConfig(
    validate_seconds=VALIDATE, run_seconds=ENDLESS, finalize_seconds=FINALIZE, seed=0
)
POLL_ROUTES: Final = ("openai.batches.list", "openai.batches.retrieve")
TARGET_REQUESTS_PER_BATCH_SWEEP: Final = 0.02
CALIBRATION_PROBES: Final = 25
#: Batch durations (emulated seconds) of the detection-delay part, and each one's time scale.
DURATIONS: Final = {1.0: 1.0, 30.0: 10.0, 300.0: 30.0, 3600.0: 100.0}
#: ``--quick``: faster clocks (each case a few real seconds; a request's real milliseconds
#: then weigh more on the emulated clock, so the delays read a little longer).
QUICK_SCALES: Final = {1.0: 1.0, 30.0: 10.0, 300.0: 100.0, 3600.0: 1000.0}
DURATION_LINES: Final = 1_000
DURATION_SPREAD: Final = 0.2


class ClockMap(msgspec.Struct, frozen=True):
    """``emulator time = offset + scale * time.monotonic()`` (same CLOCK_MONOTONIC, one host)."""

    offset: float
    scale: float
    uncertainty_s: float

    def to_emulator(self, mono: float) -> float:
        return self.offset + self.scale * mono

    def to_monotonic(self, emulator_time: float) -> float:
        return (emulator_time - self.offset) / self.scale


class Created(msgspec.Struct, frozen=True):
    """One batch the benchmark created."""

    index: int
    batch_id: str
    file_id: str
    created_at: float
    tag: str
    line: bytes


async def upload(session: aiohttp.ClientSession, base: str, name: str, data: bytes) -> Any:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", data, filename=name, content_type="application/jsonl")
    async with session.post(f"{base}/files", data=form) as resp:
        resp.raise_for_status()
        return await resp.json()


async def calibrate(session: aiohttp.ClientSession, base: str) -> ClockMap:
    """Bound the emulator clock's offset from ``created_at`` (whole seconds) of tiny uploads."""
    low, high = -math.inf, math.inf
    for i in range(CALIBRATION_PROBES):
        sent = time.monotonic()
        file = await upload(session, base, f"probe{i}.jsonl", b"{}\n")
        received = time.monotonic()
        stamp = float(file["created_at"])  # int(emulator now) at some instant in [sent, received]
        low = max(low, stamp - TIME_SCALE * received)
        high = min(high, stamp + 1.0 - TIME_SCALE * sent)
    if low > high:  # clocks disagree with the model: keep the midpoint, report the gap
        low, high = high, low
    return ClockMap((low + high) / 2, TIME_SCALE, (high - low) / 2 / TIME_SCALE)


async def create_one(session: aiohttp.ClientSession, base: str, index: int, line: bytes) -> Created:
    file = await upload(session, base, f"{index:05d}.jsonl", line)
    tag = f"bench-poll:{index}"
    body = {
        "input_file_id": file["id"],
        "endpoint": DEFAULT_ENDPOINT,
        "completion_window": "24h",
        "metadata": {"batchpump_shard": tag},
    }
    async with session.post(f"{base}/batches", json=body) as resp:
        resp.raise_for_status()
        batch = await resp.json()
    return Created(index, batch["id"], file["id"], float(batch["created_at"]), tag, line)


async def create_steady(
    session: aiohttp.ClientSession, base: str, lines: list[bytes], concurrency: int
) -> list[Created]:
    made: list[Created] = []
    work = iter(enumerate(lines))

    async def worker() -> None:
        for index, line in work:
            made.append(await create_one(session, base, index, line))

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return made


async def create_completing(
    session: aiohttp.ClientSession,
    emu: EmulatorProcess,
    lines: list[tuple[int, bytes]],
    clock: ClockMap,
    window_start: float,
    window: float,
) -> list[Created]:
    """One at a time, each with the ``run_seconds`` that makes it complete on schedule."""
    made = []
    for j, (index, line) in enumerate(lines):
        due = window_start + window * (j + 0.5) / len(lines)  # monotonic seconds
        lead = clock.scale * (due - time.monotonic()) - VALIDATE - FINALIZE
        config = msgspec.structs.replace(STEADY, run_seconds=max(0.0, lead))
        await emu.configure(config, session)
        made.append(await create_one(session, emu.openai_base_url, index, line))
    await emu.configure(STEADY, session)
    return made


async def completed_at(
    session: aiohttp.ClientSession, base: str, batch_id: str
) -> tuple[str, float | None]:
    async with session.get(f"{base}/batches/{batch_id}") as resp:
        resp.raise_for_status()
        batch = await resp.json()
    stamp = batch.get("completed_at")
    return batch["status"], None if stamp is None else float(stamp)


def poll_requests(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.get(r, 0) - before.get(r, 0) for r in POLL_ROUTES)


async def amain(args: argparse.Namespace) -> int:
    n = 300 if args.quick else args.n
    m = min(max(30, n // 100), n // 2)
    window = 3.0 if args.quick else args.window
    steady_budget = 3.0 if args.quick else args.steady_seconds
    machine = machine_info()
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    lines = list(generate_lines(count=n, seed=args.seed))
    with anyio.fail_after(args.timeout):
        async with (
            open_emulator_process(STEADY, time_scale=TIME_SCALE) as emu,
            aiohttp.ClientSession(headers=headers) as session,
        ):
            base = emu.openai_base_url
            clock = await calibrate(session, base)
            began = time.perf_counter()
            steady = await create_steady(session, base, lines[: n - m], args.create_concurrency)
            steady.sort(key=lambda c: c.index)
            create_s = time.perf_counter() - began
            window_start = time.monotonic() + 1.0 + steady_budget
            completing = await create_completing(
                session, emu, list(enumerate(lines))[n - m :], clock, window_start, window
            )
            with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
                figures = await drive(
                    args, emu, session, clock, steady, completing, Path(tmp), window_start, window
                )
    figures["setup"]["create_s"] = round(create_s, 2)
    figures["setup"]["create_per_s"] = round((n - m) / create_s, 1)
    print(summary({"machine": machine, **figures}), flush=True)
    cases = []
    for duration in args.durations:
        batches = 10 if args.quick else args.batches
        case = await detection_delay(duration, batches, args.seed, quick=args.quick)
        print(duration_line(case), flush=True)
        cases.append(case)
    record: dict[str, Any] = {"benchmark": NAME, "machine": machine, **figures}
    record["detection_delay"] = cases
    record["machine"]["load_avg_after"] = machine_info()["load_avg_1_5_15"]
    path = write_record(NAME, record)
    if cases:
        print(durations_summary(cases))
    print(f"{NAME}: wrote {path}")
    broken = any(case["handed"] != case["batches"] for case in cases)
    return 0 if figures["live"]["collected"] == m and not broken else 1


async def drive(
    args: argparse.Namespace,
    emu: EmulatorProcess,
    session: aiohttp.ClientSession,
    clock: ClockMap,
    steady: list[Created],
    completing: list[Created],
    work: Path,
    window_start: float,
    window: float,
) -> dict[str, Any]:
    """The engine's Poller and Collectors over every created batch; the steady and live phases."""
    n = len(steady) + len(completing)
    provider = OpenAI(api_key=BENCH_KEY, base_url=emu.openai_base_url)
    options = RunOptions(
        poll=PollPolicy(interval_min=args.interval_min, interval_max=args.interval_max)
    )
    journal = await SqliteJournal.open(work / "journal.sqlite3")
    run = RunRecord(
        run_id="bench-polling",
        provider=provider.name,
        base_url=provider.base_url,
        endpoint=DEFAULT_ENDPOINT,
        input_path=str(work / "requests.jsonl"),
        out_path=str(work / "results.jsonl"),
        created_at=time.time(),
        state="running",
        total_lines=n,
    )
    await journal.open_run(run)
    ctx = RunContext(
        provider=provider,
        journal=journal,
        clock=SystemClock(),
        run=run,
        options=options,
        work_dir=anyio.Path(work),
        budget=TokenBudget(None),
    )
    sink = ResultSink(work / "results.jsonl", 0, ctx.commit_results)
    await sink.open()
    handed: dict[str, float] = {}
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    all_collected = anyio.Event()
    send, receive = anyio.create_memory_object_stream[tuple[ShardRecord, BatchInfo]](
        options.collect_concurrency
    )

    async def on_done(shard: ShardRecord, batch: BatchInfo) -> None:
        handed[batch.id] = time.monotonic()
        await send.send((shard, batch))

    async def resubmit(shard: ShardRecord) -> None:  # not reached: every line succeeds
        raise RuntimeError(f"shard {shard.index} was resubmitted")

    collector = Collector(ctx, sink, resubmit=resubmit)
    poller = Poller(ctx, on_done=on_done)

    async def collect(batches: ObjectReceiveStream[tuple[ShardRecord, BatchInfo]]) -> None:
        async with batches:
            async for shard, batch in batches:
                started[batch.id] = time.monotonic()
                await collector.collect(shard, batch)
                finished[batch.id] = time.monotonic()
                if len(finished) == len(completing):
                    all_collected.set()

    shard_dir = work / "shards"
    shard_dir.mkdir()
    ctx.opened(n)
    collectable = {item.batch_id for item in completing}
    for item in [*steady, *completing]:
        path = shard_dir / f"{item.index:05d}.a1.jsonl"
        if item.batch_id in collectable:
            path.write_bytes(item.line)
        shard = ShardRecord(
            run_id=run.run_id,
            index=item.index,
            attempt=1,
            path=str(path),
            lines=1,
            bytes=len(item.line),
            state="submitted",
            input_ref=item.file_id,
            batch_id=item.batch_id,
            tag=item.tag,
            intent_at=item.created_at,
        )
        info = BatchInfo(
            id=item.batch_id,
            state="pending",
            raw_status="validating",
            created_at=item.created_at,
            tag=item.tag,
        )
        await poller.add(shard, info)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(options.collect_concurrency):
                tg.start_soon(collect, receive.clone())
            receive.close()
            # Steady phase: explicit sweeps over N in-flight batches, nothing completes.
            await poller.sweep()  # the first sweep reads every placeholder
            before = route_counts(await emu.stats())
            durations: list[float] = []
            while len(durations) < args.sweeps:
                began = time.monotonic()
                await poller.sweep()
                durations.append(time.monotonic() - began)
                if time.monotonic() + 2 * durations[-1] + 0.5 > window_start:
                    break
            after = route_counts(await emu.stats())
            steady_requests = poll_requests(before, after)
            # Live phase: the poller's own loop while the completing batches finish.
            sweeps0, retrieves0 = poller.sweeps, poller.retrieves
            tg.start_soon(poller.serve)
            with anyio.move_on_after(max(0.0, window_start + window - time.monotonic()) + 30.0):
                await all_collected.wait()
            live_sweeps = poller.sweeps - sweeps0
            live_retrieves = poller.retrieves - retrieves0
            end = route_counts(await emu.stats())
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await provider.aclose()
            await journal.aclose()
            send.close()

    completions: dict[str, float] = {}
    statuses: dict[str, str] = {}
    for item in completing:
        status, stamp = await completed_at(session, emu.openai_base_url, item.batch_id)
        statuses[item.batch_id] = status
        if stamp is not None:  # completed_at is int(final_end): the midpoint of its second
            completions[item.batch_id] = clock.to_monotonic(stamp + 0.5)
    handoff = [handed[b] - t for b, t in completions.items() if b in handed]
    start = [started[b] - t for b, t in completions.items() if b in started]
    # The first sweep of the window comes after the quiet steady phase, when the interval has
    # grown towards interval_max; later completions meet the interval_min regime.
    first_handoff = min(handed.values(), default=math.inf)
    earliest = min(completions, key=completions.__getitem__, default=None)
    first = (
        started[earliest] - completions[earliest]
        if earliest is not None and earliest in started
        else None
    )
    streaming = [
        started[b] - t for b, t in completions.items() if b in started and t > first_handoff
    ]
    early = sum(1 for t in completions.values() if t < window_start - 0.5)
    sweeps = len(durations)
    live_requests = poll_requests(after, end)
    return {
        "setup": {
            "batches_in_flight": n,
            "completing_batches": len(completing),
            "completing_position": "the newest M (created last); a sweep reads newest first",
            "completion_window_s": window,
            "poll_policy": msgspec.to_builtins(options.poll),
            "collect_concurrency": options.collect_concurrency,
            "journal": "SqliteJournal (temp dir)",
            "create_concurrency": args.create_concurrency,
            "emulator": {
                "process": "separate (python -m batchpump.emulator)",
                "time_scale": TIME_SCALE,
                "config": msgspec.to_builtins(STEADY),
                "clock_map_uncertainty_ms": round(clock.uncertainty_s * 1000, 2),
            },
            "quick": args.quick,
        },
        "steady": {
            "sweeps": sweeps,
            "poll_requests": steady_requests,
            "requests_per_sweep": round(steady_requests / max(sweeps, 1), 2),
            "requests_per_batch_per_sweep": round(steady_requests / max(sweeps, 1) / n, 4),
            "sweep_seconds": {k: _ms(v) for k, v in percentiles(durations, 50, 100).items()},
            "routes": {r: after.get(r, 0) - before.get(r, 0) for r in POLL_ROUTES},
        },
        "live": {
            "sweeps": live_sweeps,
            "retrieves": live_retrieves,
            "poll_requests": live_requests,
            "requests_per_batch_per_sweep": round(live_requests / max(live_sweeps, 1) / n, 4),
            "collected": len(finished),
            "completed_before_window": early,
            "statuses": sorted(set(statuses.values())),
            "handoff_delay_s": _delays(handoff),
            "collector_start_delay_s": _delays(start),
            "collector_start_delay_after_first_handoff_s": _delays(streaming),
            "first_completion_delay_s": _ms(first),
        },
        "targets": {"requests_per_batch_per_sweep": TARGET_REQUESTS_PER_BATCH_SWEEP},
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _delays(values: list[float]) -> dict[str, float | None]:
    shown = {k: _ms(v) for k, v in percentiles(values, 50, 95, 100).items()}
    shown["mean"] = _ms(sum(values) / len(values)) if values else None
    shown["min"] = _ms(min(values)) if values else None
    return shown


def summary(record: dict[str, Any]) -> str:
    setup, steady, live = record["setup"], record["steady"], record["live"]
    policy = setup["poll_policy"]
    start = live["collector_start_delay_s"]
    stream = live["collector_start_delay_after_first_handoff_s"]
    handoff = live["handoff_delay_s"]
    return (
        f"{NAME} {setup['batches_in_flight']:,} in-flight batches "
        f"[{machine_line(record['machine'])}]: steady sweep "
        f"{steady['requests_per_sweep']} requests "
        f"= {steady['requests_per_batch_per_sweep']} per batch per sweep "
        f"(target <= {TARGET_REQUESTS_PER_BATCH_SWEEP}), sweep p50 "
        f"{steady['sweep_seconds']['p50']} s; live {live['requests_per_batch_per_sweep']} per "
        f"batch per sweep over {live['sweeps']} sweeps | completion -> collector start "
        f"p50 {start['p50']} s, p95 {start['p95']} s, max {start['p100']} s "
        f"(hand-off p50 {handoff['p50']} s) for {live['collected']}/"
        f"{setup['completing_batches']} batches; first completion after the quiet phase "
        f"{live['first_completion_delay_s']} s, later ones p50 {stream['p50']} s, max "
        f"{stream['p100']} s; poll interval {policy['interval_min']}-{policy['interval_max']} s"
    )


# -- detection delay by batch duration ----------------------------------------------------------


def _target(duration: float) -> float:
    return max(1.0, 0.01 * duration)


async def detection_delay(
    duration: float, batches: int, seed: int, *, quick: bool
) -> dict[str, Any]:
    """M batches of about ``duration`` emulated seconds through the ``Poller``, emulator and
    poller on one ``ScaledClock``; delays from completion to hand-off, and the polling cost."""
    scale = (QUICK_SCALES if quick else DURATIONS).get(duration, max(1.0, duration / 12))
    clock = ScaledClock(scale)
    rng = random.Random(seed)
    lines = b"".join(
        b'{"custom_id":"r-%d","method":"POST","url":"%s","body":{"model":"gpt-4o-mini",'
        b'"messages":[{"role":"user","content":"hi"}]}}\n' % (i, DEFAULT_ENDPOINT.encode())
        for i in range(DURATION_LINES)
    )
    base_config = EmulatorConfig(seed=seed)
    done_at: dict[str, float] = {}  # batch id -> clock.time() of its completion (upper bound)
    handed: dict[str, float] = {}
    in_flight_at_sweep: list[int] = []
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    all_handed = anyio.Event()
    async with (
        open_emulator(config=base_config, clock=clock) as emu,
        aiohttp.ClientSession(headers=headers) as session,
    ):
        base = emu.openai_base_url
        provider = OpenAI(api_key=BENCH_KEY, base_url=base, clock=clock)
        run = RunRecord(
            run_id="bench-detect",
            provider=provider.name,
            base_url=provider.base_url,
            endpoint=DEFAULT_ENDPOINT,
            input_path="-",
            out_path="-",
            created_at=clock.time(),
        )
        ctx = RunContext(
            provider=provider,
            journal=MemoryJournal(),
            clock=clock,
            run=run,
            options=RunOptions(),  # the default PollPolicy
            work_dir=anyio.Path(tempfile.gettempdir()),
            budget=TokenBudget(None),
        )

        async def on_done(shard: ShardRecord, batch: BatchInfo) -> None:
            handed[batch.id] = clock.time()
            if len(handed) == batches:
                all_handed.set()

        poller = Poller(ctx, on_done=on_done)
        original_sweep = poller.sweep

        async def counted_sweep() -> bool:
            in_flight_at_sweep.append(len(poller))
            return await original_sweep()

        poller.sweep = counted_sweep  # type: ignore[method-assign]
        began = clock.time()
        before: dict[str, int] = {}
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(poller.serve)
                for index in range(batches):
                    took = duration * rng.uniform(1 - DURATION_SPREAD, 1 + DURATION_SPREAD)
                    config = msgspec.structs.replace(
                        base_config,
                        validate_seconds=0.05 * duration,
                        run_seconds=took - 0.1 * duration,
                        finalize_seconds=0.05 * duration,
                    )
                    async with session.put(
                        f"{emu.url}/_emulator/config", data=msgspec.json.encode(config)
                    ) as resp:
                        resp.raise_for_status()
                    file = await upload(session, base, f"{index:05d}.jsonl", lines)
                    body = {
                        "input_file_id": file["id"],
                        "endpoint": DEFAULT_ENDPOINT,
                        "completion_window": "24h",
                    }
                    sent = clock.time()
                    async with session.post(f"{base}/batches", json=body) as resp:
                        resp.raise_for_status()
                        made = await resp.json()
                    done_at[made["id"]] = sent + took
                    shard = ShardRecord(
                        run_id=run.run_id, index=index, attempt=1, path="-",
                        lines=DURATION_LINES, bytes=len(lines), batch_id=made["id"],
                    )  # fmt: skip
                    info = BatchInfo(
                        id=made["id"],
                        state="pending",
                        raw_status=made["status"],
                        created_at=float(made["created_at"]),
                    )
                    await poller.add(shard, info)
                    if index == 0:
                        before = route_counts(await _stats(session, emu.url))
                    await clock.sleep(0.5 * duration / batches)
                with anyio.fail_after(4 * duration / scale + 60):
                    await all_handed.wait()
                tg.cancel_scope.cancel()
        finally:
            await provider.aclose()
        after = route_counts(await _stats(session, emu.url))
    ended = clock.time()
    delays = [handed[b] - t for b, t in done_at.items() if b in handed]
    requests = poll_requests(before, after)
    batch_sweeps = sum(in_flight_at_sweep)
    sweeps = len(in_flight_at_sweep)
    pct = percentiles(delays, 50, 95, 100)
    return {
        "duration_s": duration,
        "time_scale": scale,
        "batches": batches,
        "lines_per_batch": DURATION_LINES,
        "handed": len(handed),
        "delay_s": {k: _ms(v) for k, v in pct.items()},
        "delay_min_s": _ms(min(delays, default=math.nan)),
        "target_p95_s": _target(duration),
        "within_target": sum(1 for d in delays if d <= _target(duration)),
        "sweeps": sweeps,
        "poll_requests": requests,
        "requests_per_sweep": round(requests / max(sweeps, 1), 2),
        "requests_per_batch_per_sweep": round(requests / max(batch_sweeps, 1), 4),
        "mean_in_flight_per_sweep": round(batch_sweeps / max(sweeps, 1), 1),
        "sweeps_per_minute": round(60 * sweeps / max(ended - began, 1e-9), 2),
        "emulated_seconds": round(ended - began, 1),
    }


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/_emulator/stats") as resp:
        resp.raise_for_status()
        snapshot: dict[str, Any] = await resp.json()
        return snapshot


def duration_line(case: dict[str, Any]) -> str:
    d = case["delay_s"]
    duration = case["duration_s"]
    shown = f"{duration:g} s" if duration < 60 else f"{duration / 60:g} min"
    return (
        f"  {shown:>7} batches (x{case['time_scale']:g}, {case['handed']}/{case['batches']}): "
        f"delay p50 {d['p50']} s, p95 {d['p95']} s, max {d['p100']} s "
        f"(target p95 <= {case['target_p95_s']:g} s); {case['requests_per_sweep']} requests "
        f"per sweep = {case['requests_per_batch_per_sweep']} per batch per sweep "
        f"({case['mean_in_flight_per_sweep']} in flight on average), "
        f"{case['sweeps_per_minute']} sweeps per minute"
    )


def durations_summary(cases: list[dict[str, Any]]) -> str:
    parts = []
    for case in cases:
        duration = case["duration_s"]
        shown = f"{duration:g} s" if duration < 60 else f"{duration / 60:g} min"
        parts.append(
            f"{shown}: p95 {case['delay_s']['p95']} s (<= {case['target_p95_s']:g}), "
            f"{case['requests_per_batch_per_sweep']} req/batch/sweep, "
            f"{case['sweeps_per_minute']} sweeps/min"
        )
    return f"{NAME} detection delay, default PollPolicy, emulated clock: " + " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="in-flight batches (default 10000)")
    parser.add_argument("--quick", action="store_true", help="300 batches, 10 per duration (CI)")
    parser.add_argument("--interval-min", type=float, default=0.5, help="seconds (default 0.5)")
    parser.add_argument("--interval-max", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--sweeps", type=int, default=5, help="steady sweeps at most (default 5)")
    parser.add_argument("--steady-seconds", type=float, default=8.0, help="steady phase budget")
    parser.add_argument("--window", type=float, default=10.0, help="completion window seconds")
    parser.add_argument("--create-concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--durations",
        type=float,
        nargs="*",
        default=list(DURATIONS),
        help="batch durations of the detection-delay part, emulated seconds (none: skip it)",
    )
    parser.add_argument("--batches", type=int, default=40, help="batches per duration (40)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for everything")
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = 50.0 if args.quick else 900.0
    if args.n < 2 or args.sweeps < 1:
        parser.error("-n must be >= 2 and --sweeps >= 1")
    return anyio.run(amain, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
