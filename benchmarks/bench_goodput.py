"""Benchmark: goodput under a provider rate limit, and the limiter's CPU with many waiters.

Usage: ``python benchmarks/bench_goodput.py [--seconds 60] [--rate 20 100] [--quick]``

Part 1, goodput. The emulator runs in its own process (``python -m batchpump.emulator``,
loopback, port 0, real time) with one batch in it and a token bucket on the ``poll`` endpoint
class (``GET /v1/batches/{id}`` is one of its routes): L requests/s (``--rate``, default 20 and
100: every contender runs at each).
The bucket is a per-minute quota, ``RateLimit(requests=60 L, per_seconds=60)``, because that is
what the emulator's ``x-ratelimit-limit-requests`` header describes truthfully (OpenAI's
requests per minute; see ``--bucket second`` below). Before each contender the benchmark drains
the bucket with its own requests until the first 429 (the account's quota is already in
steady use), so every request above L is answered 429 at once: no burst hides an overshoot.
Then, for ``--seconds`` (default 60, ``--quick`` 3), C tasks (``--concurrency``, default 32,
far more than L x the loopback round trip needs) retrieve that batch in a loop:

- ``told``: the ``OpenAI`` adapter's ``retrieve`` (one ``HttpClient`` call through the ``poll``
  ``EndpointGate``) with ``Limits(poll_rate=L, poll_concurrency=C)``;
- ``learned``: the same with ``Limits(poll_concurrency=C)``: no rate, so the gate learns it
  from the 429s (AIMD) and the ``x-ratelimit-limit-requests`` header;
- ``retry_after_only``: the same as ``learned``, but the emulator's 429s carry only
  ``retry-after-ms``/``retry-after``, no ``x-ratelimit-*`` header: the gate learns the rate
  from what the provider accepts;
- ``no_retry_after``: the same, and the 429s carry no ``Retry-After`` either;
- ``naive``: plain aiohttp, C tasks (connector limit C), each sleeping ``Retry-After`` (whole
  seconds, as HTTP defines it) after a 429 and then trying again.

One fresh emulator per contender. Figures: goodput = successful calls in the window / (L x
window), as a share of L (target >= 97 %); the share of 429 answers among the class's answers in
the window, counted by the emulator (target <= 1 %; for the two cases where the provider says
nothing of its limit, >= 90 % and <= 5 %); the wait beyond the limit's spacing, per
success: ``max(0, gap to the previous success - 1/L)`` (p50 / p99 / max, and their sum = the
time lost); client and emulator CPU over the window.

``--bucket second`` uses ``RateLimit(requests=L, per_seconds=1)`` (a one-second burst) instead,
undrained: the emulator then still sends ``x-ratelimit-limit-requests: L``, which a client reads
as L per *minute* (written to ``results/bench_goodput_second.json``).

Part 2, the limiter's CPU per acquire with 10,000 waiters (``--waiters``), in this process, no
HTTP: 10,000 tasks pass (a) one bare ``aiolimiter.AsyncLimiter`` paced at R/s (``--cpu-rate``,
default 2000), (b) one ``EndpointGate`` at R/s with concurrency 32 (its ``CapacityLimiter``
keeps all but 32 waiters out of aiolimiter), (c) the gate with concurrency 10,000 (every
waiter inside aiolimiter), each also with a tenth of the waiters to show how the cost scales; (d) a
paused gate: 10,000 callers waiting out one 0.25 s pause (one shared ``Event``) beside 10,000
tasks each sleeping 0.25 s on its own. CPU = ``time.process_time()`` over the run / waiters.

Part 3, end to end (``--e2e``): the issue-13 case. An emulator that allows L = 20 requests/s
per endpoint class (``upload``, ``create``, ``poll``, ``download``; a one-second bucket) and
answers 429 with only ``retry-after-ms``/``retry-after``, no ``x-ratelimit-*`` header; the real
command line ``python -m batchpump run`` on 30,000 lines with ``--max-lines 100`` (300 shards;
``--quick``: 40). Figures: the exit code, every line once, the provider's answers per second
(2xx) against L, and the share of 429 answers (written to ``bench_goodput_e2e.json``).

Prints one summary line and writes ``benchmarks/results/bench_goodput.json``. Never asserts a
time; exits non-zero only if a contender failed or the emulator never rate-limited.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, Literal

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``batchpump`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import anyio
import anyio.lowlevel
import msgspec
from aiolimiter import AsyncLimiter

from batchpump import Limits, SystemClock
from batchpump._errors import BatchpumpError
from batchpump._ratelimit import EndpointGate, GateStatistics
from batchpump.emulator import EmulatorConfig, Faults, RateLimit
from batchpump.providers.openai import OpenAI
from benchmarks._common import (
    BENCH_KEY,
    REPO_ROOT,
    EmulatorProcess,
    machine_info,
    machine_line,
    open_emulator_process,
    percentiles,
    process_cpu_seconds,
    write_record,
)
from benchmarks._datagen import DEFAULT_ENDPOINT, generate_lines

NAME: Final = "bench_goodput"
CONTENDERS: Final = ("told", "learned", "retry_after_only", "no_retry_after", "naive")
#: Emulator faults per contender beside the bucket: what its 429s say about the limit.
SILENT_FAULTS: Final[dict[str, dict[str, bool]]] = {
    "retry_after_only": {"advertise_rate_limits": False},
    "no_retry_after": {"advertise_rate_limits": False, "send_retry_after": False},
}
ROUTE: Final = "openai.batches.retrieve"
#: Batches stay in ``validating``: retrieving one is the cheapest call of the ``poll`` class.
EMULATOR: Final = EmulatorConfig(validate_seconds=1e9, run_seconds=1.0, seed=0)
TARGETS: Final = {"goodput_share_min": 0.97, "share_429_max": 0.01}
#: Targets when the provider advertises no limit (issue 13).
SILENT_TARGETS: Final = {"goodput_share_min": 0.90, "share_429_max": 0.05}
#: Seconds after the window for in-flight answers to reach the emulator's counters.
SETTLE: Final = 0.3
Bucket = Literal["minute", "second"]


class Window(msgspec.Struct, kw_only=True):
    """What one contender did in the window (client side)."""

    seconds: float
    successes: list[float]  # perf_counter of each success, in completion order
    gave_up: int = 0  # calls that raised (429s beyond the retries)
    client_cpu_s: float = 0.0
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


# -- the contenders ---------------------------------------------------------------------------


async def run_told(emu: EmulatorProcess, batch_id: str, args: argparse.Namespace) -> Window:
    limits = Limits(poll_concurrency=args.concurrency, poll_rate=args.rate)
    return await _run_gate(emu, batch_id, args, limits)


async def run_learned(emu: EmulatorProcess, batch_id: str, args: argparse.Namespace) -> Window:
    return await _run_gate(emu, batch_id, args, Limits(poll_concurrency=args.concurrency))


async def _run_gate(
    emu: EmulatorProcess, batch_id: str, args: argparse.Namespace, limits: Limits
) -> Window:
    """C tasks calling ``OpenAI.retrieve`` (through the ``poll`` gate) for the window."""
    successes: list[float] = []
    gave_up = 0
    samples: list[tuple[float, float | None]] = []
    async with OpenAI(api_key=BENCH_KEY, base_url=emu.openai_base_url, limits=limits) as openai:

        def gate() -> GateStatistics:
            return next(g for g in openai.statistics().gates if g.endpoint == "poll")

        async def worker() -> None:
            nonlocal gave_up
            while True:
                try:
                    await openai.retrieve(batch_id)
                except BatchpumpError:  # 429s beyond the RetryPolicy's attempts
                    gave_up += 1
                    continue
                successes.append(time.perf_counter())

        async def sampler(start: float) -> None:
            while True:
                await anyio.sleep(1.0)
                samples.append((round(time.perf_counter() - start, 1), gate().rate))

        cpu0 = time.process_time()
        start = time.perf_counter()
        with anyio.move_on_after(args.seconds):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler, start)
                for _ in range(args.concurrency):
                    tg.start_soon(worker)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        stats = openai.statistics()
        g = gate()
    rates = [r for _, r in samples if r is not None]
    return Window(
        seconds=elapsed,
        successes=[t - start for t in successes if t - start <= elapsed],
        gave_up=gave_up,
        client_cpu_s=cpu,
        extra={
            "client_tries": stats.requests,
            "client_retries": stats.retries,
            "client_429": stats.rate_limited,
            "gate": {
                "rate_end": _round(g.rate),
                "ceiling_end": _round(g.ceiling),
                "rate_min_sampled": _round(min(rates)) if rates else None,
                "pauses": g.pauses,
                "rate_limited": g.rate_limited,
                "rate_per_second": [_round(r) for _, r in samples],
            },
        },
    )


async def run_naive(emu: EmulatorProcess, batch_id: str, args: argparse.Namespace) -> Window:
    """C aiohttp tasks in a loop; after a 429, sleep ``Retry-After`` seconds and try again."""
    successes: list[float] = []
    limited = 0
    url = f"{emu.openai_base_url}/batches/{batch_id}"
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def worker() -> None:
            nonlocal limited
            while True:
                async with session.get(url) as resp:
                    if resp.status == 429:
                        await resp.read()
                        limited += 1
                        await anyio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    resp.raise_for_status()
                    await resp.json()
                successes.append(time.perf_counter())

        cpu0 = time.process_time()
        start = time.perf_counter()
        with anyio.move_on_after(args.seconds):
            async with anyio.create_task_group() as tg:
                for _ in range(args.concurrency):
                    tg.start_soon(worker)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    return Window(
        seconds=elapsed,
        successes=[t - start for t in successes if t - start <= elapsed],
        client_cpu_s=cpu,
        extra={"client_429": limited, "retry_after_header": "Retry-After (whole seconds)"},
    )


Runner = Callable[[EmulatorProcess, str, argparse.Namespace], Awaitable[Window]]
RUNNERS: Final[dict[str, Runner]] = {
    "told": run_told,
    "learned": run_learned,
    "retry_after_only": run_learned,
    "no_retry_after": run_learned,
    "naive": run_naive,
}


# -- emulator set-up ----------------------------------------------------------------------------


def bucket_limit(bucket: Bucket, rate: float) -> RateLimit:
    if bucket == "minute":
        return RateLimit(requests=max(1, round(60 * rate)), per_seconds=60.0)
    return RateLimit(requests=max(1, round(rate)), per_seconds=1.0)


async def one_batch(emu: EmulatorProcess, session: aiohttp.ClientSession) -> str:
    """Upload a one-line file and create a batch (before any limit is set); its id."""
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    line = next(generate_lines(count=1))
    form.add_field("file", line, filename="one.jsonl", content_type="application/jsonl")
    async with session.post(f"{emu.openai_base_url}/files", data=form) as resp:
        resp.raise_for_status()
        file_id = (await resp.json())["id"]
    body = {"input_file_id": file_id, "endpoint": DEFAULT_ENDPOINT, "completion_window": "24h"}
    async with session.post(f"{emu.openai_base_url}/batches", json=body) as resp:
        resp.raise_for_status()
        batch_id: str = (await resp.json())["id"]
    return batch_id


async def drain(url: str, session: aiohttp.ClientSession, concurrency: int) -> dict[str, Any]:
    """Retrieve until the bucket answers 429: it then holds less than one token."""
    empty = anyio.Event()
    sent = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal sent
        while not empty.is_set():
            sent += 1
            async with session.get(url) as resp:
                await resp.read()
                if resp.status == 429:
                    empty.set()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return {"requests": sent, "seconds": round(time.perf_counter() - start, 3)}


def status_counts(snapshot: dict[str, Any], route: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in snapshot.get("requests", []):
        if row["route"] == route:
            status = int(row["status"])
            counts[status] = counts.get(status, 0) + int(row["count"])
    return counts


async def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One contender against a fresh emulator with a (drained) bucket on ``poll``."""
    limit = bucket_limit(args.bucket, args.rate)
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with open_emulator_process(EMULATOR, time_scale=1.0) as emu:
        async with aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=64)
        ) as session:
            batch_id = await one_batch(emu, session)
            faults = Faults(rate_limits={"poll": limit}, **SILENT_FAULTS.get(name, {}))
            limited = msgspec.structs.replace(EMULATOR, faults=faults)
            await emu.configure(limited, session)
            drained = None
            if args.bucket == "minute":
                url = f"{emu.openai_base_url}/batches/{batch_id}"
                drained = await drain(url, session, 64)
        before = status_counts(await emu.stats(), ROUTE)
        emu_cpu0 = process_cpu_seconds(emu.pid)
        window = await RUNNERS[name](emu, batch_id, args)
        emu_cpu1 = process_cpu_seconds(emu.pid)
        await anyio.sleep(SETTLE)
        after = status_counts(await emu.stats(), ROUTE)
    answered = {s: after.get(s, 0) - before.get(s, 0) for s in sorted(after)}
    emu_cpu = emu_cpu1 - emu_cpu0 if emu_cpu0 is not None and emu_cpu1 is not None else None
    return figures(window, answered, drained, emu_cpu, limit, args)


def figures(
    w: Window,
    answered: dict[int, int],
    drained: dict[str, Any] | None,
    emu_cpu: float | None,
    limit: RateLimit,
    args: argparse.Namespace,
) -> dict[str, Any]:
    spacing = 1.0 / args.rate
    ok = len(w.successes)
    # A drained bucket starts (nearly) empty; a fresh one with ``limit.requests`` tokens.
    allowed = args.rate * w.seconds + (0 if drained is not None else limit.requests)
    excess = [max(0.0, b - a - spacing) for a, b in pairwise(w.successes)]
    waits = {k: _ms(v) for k, v in percentiles(excess, 50, 99).items()}
    total = sum(answered.values())
    per_second = [0] * (int(w.seconds) + 1)
    for t in w.successes:
        per_second[min(int(t), len(per_second) - 1)] += 1
    return {
        "window_s": round(w.seconds, 3),
        "successes": ok,
        "successes_per_s": round(ok / w.seconds, 2),
        "allowed": round(allowed, 1),
        "goodput_share": round(ok / allowed, 4),
        "emulator_answers": answered,
        "share_429": round(answered.get(429, 0) / total, 4) if total else None,
        "gave_up": w.gave_up,
        "wait_beyond_spacing_ms": {**waits, "max": _ms(max(excess, default=0.0))},
        "time_lost_s": round(sum(excess), 3),
        "successes_per_second": per_second[:-1] if w.seconds < len(per_second) else per_second,
        "client_cpu_s": round(w.client_cpu_s, 3),
        "client_cpu_ms_per_success": round(1000 * w.client_cpu_s / max(ok, 1), 3),
        "emulator_cpu_s": None if emu_cpu is None else round(emu_cpu, 2),
        "drain": drained,
        **w.extra,
    }


# -- part 2: the limiter's CPU with many waiters ------------------------------------------------


async def _cpu_run(
    waiters: int,
    body: Callable[[], Coroutine[Any, Any, None]],
    release: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> dict[str, float]:
    cpu0 = time.process_time()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(waiters):
            tg.start_soon(body)
        if release is not None:  # after every waiter was spawned
            tg.start_soon(release)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "waiters": waiters,
        "wall_s": round(wall, 3),
        "acquires_per_s": round(waiters / wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_acquire": round(1e6 * cpu / waiters, 1),
    }


async def limiter_cpu(waiters: int, rate: float, cap: int) -> dict[str, Any]:
    """CPU per acquire: bare aiolimiter, the gate (capped, uncapped), and the shared pause."""
    out: dict[str, Any] = {"rate_per_s": rate, "gate_concurrency": cap}
    small = max(1, waiters // 10)
    for label, n in (("many", waiters), ("few", small)):
        limiter = AsyncLimiter(1, 1.0 / rate)

        async def bare(limiter: AsyncLimiter = limiter) -> None:
            async with limiter:
                pass

        out[f"aiolimiter_{label}"] = await _cpu_run(n, bare)
        for key, concurrency in (("gate", cap), ("gate_uncapped", n)):
            gate = EndpointGate("poll", clock=SystemClock(), concurrency=concurrency, rate=rate)

            async def gated(gate: EndpointGate = gate) -> None:
                async with gate.slot():
                    pass

            out[f"{key}_{label}"] = await _cpu_run(n, gated)
    # Every waiter is started (and parked on ``go``) before the pause begins, so all of them
    # meet it however long spawning 10,000 tasks takes; the baseline parks the same way.
    pause = 0.25
    gate = EndpointGate("poll", clock=SystemClock(), concurrency=waiters)
    for key in ("pause_shared", "pause_per_task_sleep"):
        shared = key == "pause_shared"
        go = anyio.Event()

        async def waiter(go: anyio.Event = go, shared: bool = shared) -> None:
            await go.wait()
            if shared:
                async with gate.slot():
                    pass
            else:
                await anyio.sleep(pause)

        async def release(go: anyio.Event = go, shared: bool = shared) -> None:
            await anyio.lowlevel.checkpoint()
            if shared:
                gate.pause(pause)
            go.set()

        out[key] = await _cpu_run(waiters, waiter, release)
    out["pause_shared"]["sleeps"] = gate.statistics().pauses
    out["pause_per_task_sleep"]["sleeps"] = waiters
    out["pause_s"] = pause
    return out


# -- driver ---------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> int:
    # Every 429 retry logs a warning; they are counted in the figures instead.
    logging.getLogger("batchpump.http").setLevel(logging.ERROR)
    machine = machine_info()
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    for rate in args.rate:
        one = argparse.Namespace(**{**vars(args), "rate": rate})
        results = runs.setdefault(f"{rate:g}", {})
        for name in args.only:
            try:
                with anyio.fail_after(args.seconds + 120):
                    results[name] = await measure(name, one)
            except Exception as exc:  # report, keep measuring the others, exit non-zero
                failures.append(f"{name}@{rate:g}: {type(exc).__name__}: {exc}")
                print(f"{NAME}: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            f = results[name]
            if f["successes"] == 0:
                failures.append(f"{name}@{rate:g}: no successful call")
            print(_line(f"{name}@{rate:g}", f), flush=True)
    cpu = await limiter_cpu(args.waiters, args.cpu_rate, args.cpu_cap) if args.waiters else {}
    if cpu:
        print(_cpu_line(cpu), flush=True)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "machine": {**machine, "load_avg_after": machine_info()["load_avg_1_5_15"]},
        "setup": {
            "endpoint_class": "poll",
            "route": ROUTE,
            "rate_limits_per_s": args.rate,
            "bucket": args.bucket,
            "emulator_rate_limits": [
                msgspec.to_builtins(bucket_limit(args.bucket, rate)) for rate in args.rate
            ],
            "silent_faults": SILENT_FAULTS,
            "bucket_drained_before_each": args.bucket == "minute",
            "concurrency": args.concurrency,
            "window_s": args.seconds,
            "emulator": {
                "process": "separate (python -m batchpump.emulator), one fresh per contender",
                "time_scale": 1.0,
                "config": msgspec.to_builtins(EMULATOR),
            },
            "quick": args.quick,
        },
        "contenders_by_rate": runs,
        "limiter_cpu": cpu,
        "targets": TARGETS,
        "targets_without_advertised_limit": SILENT_TARGETS,
        "failures": failures,
    }
    name = NAME if args.bucket == "minute" else f"{NAME}_{args.bucket}"
    path = write_record(name, record)
    for rate in args.rate:
        print(_summary(args, rate, machine, runs.get(f"{rate:g}", {}), cpu, path))
    return 1 if failures else 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 2)


def _line(name: str, f: dict[str, Any]) -> str:
    w = f["wait_beyond_spacing_ms"]
    return (
        f"  {name:<8} {f['successes_per_s']:>8.1f}/s = {100 * f['goodput_share']:5.1f} % of L  "
        f"429s {100 * (f['share_429'] or 0):5.1f} % of {sum(f['emulator_answers'].values()):,} "
        f"answers  wait beyond spacing p50 {w['p50']} ms p99 {w['p99']} ms max {w['max']} ms  "
        f"gave up {f['gave_up']}  CPU client {f['client_cpu_s']} s emulator {f['emulator_cpu_s']} s"
    )


def _cpu_line(cpu: dict[str, Any]) -> str:
    def us(key: str) -> str:
        return f"{cpu[key]['cpu_us_per_acquire']:.0f}"

    n = cpu["aiolimiter_many"]["waiters"]
    few = cpu["aiolimiter_few"]["waiters"]
    achieved = cpu["aiolimiter_many"]["acquires_per_s"], cpu["gate_many"]["acquires_per_s"]
    return (
        f"  limiter paced at {cpu['rate_per_s']:g}/s achieves {achieved[0]:.0f}/s bare, "
        f"{achieved[1]:.0f}/s in the gate\n"
        f"  limiter CPU per acquire, us ({n:,} | {few} waiters): aiolimiter {us('aiolimiter_many')}"
        f" | {us('aiolimiter_few')}, gate (cap {cpu['gate_concurrency']}) {us('gate_many')} | "
        f"{us('gate_few')}, gate uncapped {us('gate_uncapped_many')} | {us('gate_uncapped_few')};"
        f" pause: shared {us('pause_shared')} us/waiter ({cpu['pause_shared']['sleeps']} sleep), "
        f"per-task sleeps {us('pause_per_task_sleep')} us/waiter"
    )


def _summary(
    args: argparse.Namespace,
    rate: float,
    machine: dict[str, Any],
    results: dict[str, dict[str, Any]],
    cpu: dict[str, Any],
    path: Path,
) -> str:
    def fig(name: str) -> str:
        f = results.get(name)
        if f is None:
            return "failed" if name in args.only else "not run"
        return (
            f"{100 * f['goodput_share']:.1f} % of L, 429s {100 * (f['share_429'] or 0):.2f} %, "
            f"p99 wait +{f['wait_beyond_spacing_ms']['p99']} ms"
        )

    ratio = ""
    told, naive = results.get("told"), results.get("naive")
    if told and naive and naive["successes"]:
        ratio = f" | told/naive goodput {told['successes'] / naive['successes']:.2f}x"
    cpu_text = ""
    if cpu:
        cpu_text = (
            f" | CPU/acquire at {cpu['aiolimiter_many']['waiters']:,} waiters: gate "
            f"{cpu['gate_many']['cpu_us_per_acquire']:.0f} us vs aiolimiter "
            f"{cpu['aiolimiter_many']['cpu_us_per_acquire']:.0f} us"
        )
    return (
        f"{NAME} poll limited to L={rate:g}/s ({args.bucket} bucket"
        f"{', drained' if args.bucket == 'minute' else ''}), C={args.concurrency}, "
        f"{args.seconds:g} s each [{machine_line(machine)}]: told {fig('told')} | learned "
        f"{fig('learned')} | Retry-After only {fig('retry_after_only')} | no Retry-After "
        f"{fig('no_retry_after')} | naive aiohttp+Retry-After {fig('naive')}{ratio} (targets >= "
        f"{100 * TARGETS['goodput_share_min']:.0f} % of L, <= "
        f"{100 * TARGETS['share_429_max']:.0f} % 429s; without an advertised limit >= "
        f"{100 * SILENT_TARGETS['goodput_share_min']:.0f} %, <= "
        f"{100 * SILENT_TARGETS['share_429_max']:.0f} %){cpu_text} -> {path}"
    )


# -- part 3: the 300-shard run end to end --------------------------------------------------------

#: Emulator seconds per real second in the end-to-end run (batches finish in about a second).
E2E_TIME_SCALE: Final = 20.0
E2E_RATE: Final = 20.0


async def end_to_end(shards: int, lines_per_shard: int = 100) -> dict[str, Any]:
    """The CLI on ``shards`` x ``lines_per_shard`` lines against a silent 20 requests/s limit."""
    from benchmarks.soak_kill9 import check_results, write_input  # a sibling benchmark

    scale = E2E_TIME_SCALE
    limit = RateLimit(requests=round(E2E_RATE), per_seconds=1.0)  # buckets count real seconds
    config = EmulatorConfig(
        faults=Faults(
            rate_limits=dict.fromkeys(("upload", "create", "poll", "download"), limit),
            advertise_rate_limits=False,
        )
    )
    lines = shards * lines_per_shard
    with tempfile.TemporaryDirectory(prefix="bench-goodput-e2e-") as tmp:
        work = Path(tmp)
        src, out = work / "in.jsonl", work / "out.jsonl"
        ids = write_input(src, lines, "e2e")
        async with open_emulator_process(config, time_scale=scale) as emu:
            env = {
                **os.environ,
                "OPENAI_API_KEY": BENCH_KEY,
                "OPENAI_BASE_URL": emu.openai_base_url,
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
            argv = [
                sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out),
                "--max-lines", str(lines_per_shard),
            ]  # fmt: skip
            start = time.perf_counter()
            done = await anyio.run_process(argv, env=env, cwd=str(work), check=False)
            elapsed = time.perf_counter() - start
            snapshot = await emu.stats()
        duplicates, missing, unexpected = check_results(out, ids)
    by_status: dict[int, int] = {}
    for row in snapshot.get("requests", []):
        if not str(row["route"]).startswith("emulator."):
            status = int(row["status"])
            by_status[status] = by_status.get(status, 0) + int(row["count"])
    answers = sum(by_status.values())
    ok = sum(n for status, n in by_status.items() if 200 <= status < 300)
    return {
        "shards": shards,
        "lines": lines,
        "exit_code": done.returncode,
        "stderr_tail": done.stderr.decode(errors="replace")[-1500:] if done.returncode else "",
        "seconds": round(elapsed, 2),
        "lines_per_s": round(lines / elapsed, 1),
        "duplicates": duplicates,
        "missing": missing,
        "unexpected": unexpected,
        "answers_by_status": by_status,
        "requests_2xx_per_s": round(ok / elapsed, 2),
        "limit_per_class_per_s": E2E_RATE,
        "share_429": round(by_status.get(429, 0) / answers, 4) if answers else None,
        "batches_created": int(snapshot["batches_created"]),
        "double_billed": len(snapshot["double_billed"]),
    }


async def amain_e2e(args: argparse.Namespace) -> int:
    machine = machine_info()
    f = await end_to_end(args.shards)
    line = (
        f"{NAME} end to end: L={E2E_RATE:g}/s per class, 429s with only Retry-After, "
        f"{f['shards']} shards ({f['lines']:,} lines, --max-lines 100) "
        f"[{machine_line(machine)}]: exit {f['exit_code']}, {f['missing']} lines missing, "
        f"{f['duplicates']} twice, {f['batches_created']} batches, {f['seconds']} s "
        f"({f['lines_per_s']:,} lines/s), provider answers 2xx {f['requests_2xx_per_s']}/s, "
        f"429s {100 * (f['share_429'] or 0):.1f} % of {sum(f['answers_by_status'].values()):,}"
    )
    record = {"benchmark": f"{NAME}_e2e", "machine": machine, "quick": args.quick, **f}
    path = write_record(f"{NAME}_e2e", record)
    print(f"{line} -> {path}")
    if f["exit_code"] != 0:
        print(f["stderr_tail"], file=sys.stderr)
    good = f["exit_code"] == 0 and not (f["missing"] or f["duplicates"] or f["unexpected"])
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="window (default 60)")
    parser.add_argument(
        "--rate", type=float, nargs="+", default=[20.0, 100.0], help="L, requests/s (20 100)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="C (default 32)")
    parser.add_argument("--bucket", choices=("minute", "second"), default="minute")
    parser.add_argument("--quick", action="store_true", help="3 s windows, 1,000 waiters")
    parser.add_argument(
        "--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS), help="contenders"
    )
    parser.add_argument("--waiters", type=int, default=10_000, help="part 2 (0: skip it)")
    parser.add_argument("--cpu-rate", type=float, default=2000.0, help="part 2 pacing, /s")
    parser.add_argument("--cpu-cap", type=int, default=32, help="part 2 gate concurrency")
    parser.add_argument("--e2e", action="store_true", help="part 3 only: the CLI, 300 shards")
    parser.add_argument("--shards", type=int, default=300, help="part 3 shards (--quick: 40)")
    args = parser.parse_args(argv)
    if args.e2e:
        if args.quick:
            args.shards = min(args.shards, 40)
        return anyio.run(amain_e2e, args, backend="asyncio")
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.waiters = min(args.waiters, 1000)
    if args.seconds <= 0 or min(args.rate) <= 0 or args.concurrency < 1 or args.waiters < 0:
        parser.error("--seconds and --rate must be > 0, --concurrency >= 1")
    return anyio.run(amain, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
