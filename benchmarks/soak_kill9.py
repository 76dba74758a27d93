"""Crash soak: SIGKILL the CLI at random moments, rerun it until it finishes, check exactly-once.

The emulator runs in its own process (``python -m batchpump.emulator --port 0``), so its state
(files, batches, billing) outlives every client. The client is the real command line::

    python -m batchpump run INPUT --out OUT --max-lines K --progress json

with ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` pointing at the emulator. Each *round* writes a new
input, then starts the command and kills it (``SIGKILL``) either after a seeded random delay or
when a chosen state is reached: the JSON progress says batches are in flight, the emulator has
counted an upload, a create or a result download since the start, or the results file has
grown. Then it reruns the same command (which resumes the run from its journal) until it exits
0, and checks:

- every ``custom_id`` of the input appears in OUT exactly once, and nothing else does;
- the emulator saw exactly one batch per shard-attempt tag (``/_emulator/stats`` tags all 1),
  as many batches as the journal has shard attempts that reached the provider;
- the emulator billed no line twice.

Rounds repeat until the asked number of kills happened. Then the SIGINT checks: a first SIGINT
stops the CLI cleanly (exit 130, the journal consistent), a second SIGINT right after the first
stops it at once; both runs are resumed to exactly-once results.

Usage::

    python -m benchmarks.soak_kill9 --kills 20 --seed 1234

prints the seed, one line per kill, a summary line, and writes
``benchmarks/results/soak_kill9.json`` (``--no-record`` skips that; the quick test uses it).

``--faults`` is the other soak: no kills, but a provider that makes creates late (after the
client gave up on the answer: ``late_create_rate``), lists batches only a while after it made
them (``list_lag_seconds``), and rate-limits uploads and creates with 429s that carry neither
``x-ratelimit-*`` headers nor ``Retry-After``. Each round runs the library in process (the
adapter's request timeout cut to 1 s so the late creates are ambiguous, ``create_settle`` to
10 s) and checks: every line exactly once (0 lost), no line billed twice, and what the
sweeps reported (``duplicates_found`` / ``duplicates_cancelled``). ``--quick`` runs one small
round of each soak in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
from anyio.abc import Process

from batchpump import PollPolicy, Pump, RetryPolicy, RunOptions
from batchpump._journal import SqliteJournal
from batchpump._models import Result
from batchpump.emulator import EmulatorConfig, Faults, RateLimit
from batchpump.providers.openai import OpenAI

from ._common import (
    BENCH_KEY,
    REPO_ROOT,
    EmulatorProcess,
    machine_info,
    machine_line,
    open_emulator_process,
    route_counts,
    write_record,
)

__all__ = ["FaultSoakReport", "SoakReport", "main", "soak", "soak_faults"]

#: Emulator seconds per real second: a default batch (2 + 10 + 2 s) takes 0.7 s.
TIME_SCALE: Final = 20.0
#: Seconds a run may take before the soak gives up on it (a hang is a finding, not a wait).
RUN_TIMEOUT: Final = 120.0
#: Seconds between looks at the emulator's counters while waiting for a trigger.
WATCH_INTERVAL: Final = 0.02
#: Seconds a cleanly interrupted CLI has to exit after SIGINT.
SIGINT_GRACE: Final = 20.0
#: Shard states the journal may hold (anything else is an inconsistency).
_SHARD_STATES: Final = frozenset(
    {"ready", "uploading", "uploaded", "creating", "submitted", "collecting", "done", "requeued"}
)
#: Triggers a kill can wait for; "delay" is a plain random delay after the start.
TRIGGERS: Final = ("delay", "delay", "in_flight", "upload", "create", "download", "results")

_result_decoder: Final = msgspec.json.Decoder(Result)


@dataclass
class Kill:
    """One SIGKILL: when, what it waited for, and what the run was doing."""

    round: int
    trigger: str
    after: float
    phase: str


@dataclass
class SoakReport:
    """The soak's figures (written to ``benchmarks/results/soak_kill9.json``)."""

    seed: int
    rounds: int = 0
    lines: int = 0
    kills: list[Kill] = field(default_factory=list)
    starts: int = 0
    resumes: int = 0
    sigint_clean_exit: int | None = None
    sigint_double_exit: int | None = None
    duplicates: int = 0
    missing: int = 0
    unexpected: int = 0
    batches_created: int = 0
    shard_attempts_sent: int = 0
    duplicate_tags: dict[str, int] = field(default_factory=dict)
    double_billed: dict[str, int] = field(default_factory=dict)
    journal_problems: list[str] = field(default_factory=list)
    phases: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.duplicates
            and not self.missing
            and not self.unexpected
            and not self.duplicate_tags
            and not self.double_billed
            and not self.journal_problems
            and self.batches_created == self.shard_attempts_sent
            and self.sigint_clean_exit in (None, 130)
        )

    def summary(self) -> str:
        return (
            f"soak_kill9 seed={self.seed}: {len(self.kills)} kills over {self.rounds} rounds "
            f"({', '.join(f'{k}={v}' for k, v in sorted(self.phases.items()))}), "
            f"{self.resumes} resumes, {self.lines:,} lines, {self.duplicates} duplicates, "
            f"{self.missing} missing, {self.batches_created} batches created for "
            f"{self.shard_attempts_sent} shard attempts, {len(self.duplicate_tags)} tags twice, "
            f"{len(self.double_billed)} lines billed twice, sigint exits "
            f"{self.sigint_clean_exit}/{self.sigint_double_exit}: {'OK' if self.ok else 'FAILED'}"
        )


@dataclass
class _Child:
    """A running CLI and what it has said so far."""

    process: Process
    progress: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> bool:
        return any(p.get("shards_in_flight", 0) > 0 for p in self.progress)


def write_input(path: Path, count: int, prefix: str) -> list[str]:
    """``count`` chat-completion lines with ids ``{prefix}-{i}``; return the ids."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for cid in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}]}
            f.write(msgspec.json.encode({"custom_id": cid, "body": body}) + b"\n")
    return ids


def check_results(path: Path, ids: list[str]) -> tuple[int, int, int]:
    """``(duplicates, missing, unexpected)`` custom_ids of the results file against ``ids``."""
    data = path.read_bytes() if path.exists() else b""
    counts = Counter(r.custom_id for r in _result_decoder.decode_lines(data))
    expected = set(ids)
    duplicates = sum(1 for n in counts.values() if n > 1)
    return duplicates, len(expected - set(counts)), len(set(counts) - expected)


async def journal_facts(state_dir: Path, out: Path) -> tuple[int, list[str]]:
    """Shard attempts that reached the provider, and every inconsistency of the journal.

    Consistent means: one run; the results file holds at least the committed length and its
    committed prefix decodes into as many results as the counts say, each ``custom_id`` once;
    every shard attempt is in a known state, one with a batch has its id, one being created
    has its tag.
    """
    problems: list[str] = []
    journal = await SqliteJournal.open(state_dir / "journal.sqlite3")
    try:
        runs = await journal.list_runs()
        sent = 0
        for record in runs:
            data = _read_prefix(out, record.out_offset)
            if len(data) < record.out_offset:
                problems.append(f"results file shorter than the committed {record.out_offset}")
            results = _result_decoder.decode_lines(data)
            if len(results) != record.counts.total:
                problems.append(
                    f"{len(results)} committed results but counts say {record.counts.total}"
                )
            if len({r.custom_id for r in results}) != len(results):
                problems.append("a custom_id twice in the committed results")
            for shard in await journal.load_shards(record.run_id):
                where = f"shard {shard.index} attempt {shard.attempt}"
                if shard.state not in _SHARD_STATES:
                    problems.append(f"{where} in unknown state {shard.state!r}")
                if shard.batch_id and shard.state in (
                    "submitted",
                    "collecting",
                    "done",
                    "requeued",
                ):
                    sent += 1
                if shard.state in ("submitted", "collecting") and not shard.batch_id:
                    problems.append(f"{where} is {shard.state} without a batch id")
                if shard.state == "creating" and not shard.tag:
                    problems.append(f"{where} is creating without a tag")
        if len(runs) != 1:
            problems.append(f"{len(runs)} runs in one journal")
    finally:
        await journal.aclose()
    return sent, problems


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _read_prefix(path: Path, length: int) -> bytes:
    if not path.exists():
        return b""
    with path.open("rb") as f:
        return f.read(length)


async def _counters(emu: EmulatorProcess) -> Counter[str]:
    snapshot = await emu.stats()
    counts: Counter[str] = Counter(route_counts(snapshot))
    counts["batches_created"] = int(snapshot["batches_created"])
    return counts


async def _drain(child: _Child) -> None:
    """Collect the child's stderr lines, parsing the JSON progress ones."""
    assert child.process.stderr is not None
    buffer = b""
    try:
        async for chunk in child.process.stderr:
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for raw in lines:
                text = raw.decode(errors="replace")
                child.stderr.append(text)
                if text.startswith("{"):
                    try:
                        child.progress.append(json.loads(text))
                    except ValueError:
                        continue
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


async def _stdout(child: _Child) -> None:
    assert child.process.stdout is not None
    try:
        async for _ in child.process.stdout:
            pass
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


#: Emulator routes (and the batch counter) that tell which phase a run is in.
_PHASE_COUNTERS: Final = {
    "openai.files.create": "upload",
    "batches_created": "create",
    "openai.batches.list": "poll",
    "openai.batches.retrieve": "poll",
    "openai.files.content": "download",
}
#: Seconds an observed activity still counts as "what the run is doing".
_RECENT: Final = 0.25


class _Watch:
    """Follows the emulator's counters and the results file while a child runs."""

    def __init__(self, emu: EmulatorProcess, base: Counter[str], out: Path) -> None:
        self.emu = emu
        self.base = base
        self.last = base
        self.out = out
        self.out_size = _size(out)
        self.changed: dict[str, float] = {}

    async def look(self) -> Counter[str]:
        now = await _counters(self.emu)
        stamp = time.monotonic()
        for key, phase in _PHASE_COUNTERS.items():
            if now[key] != self.last[key]:
                self.changed[phase] = stamp
        size = _size(self.out)
        if size != self.out_size:
            self.changed["results"] = stamp
            self.out_size = size
        self.last = now
        return now

    def grew(self, key: str) -> bool:
        return self.last[key] > self.base[key]

    def phase(self, child: _Child) -> str:
        """What the run was doing at the last look: the most recent activity, else polling."""
        if not self.changed and not child.progress:
            return "sharding"
        recent = {p: t for p, t in self.changed.items() if time.monotonic() - t <= _RECENT}
        if not recent:
            return "poll" if child.progress or self.changed else "sharding"
        return max(recent, key=lambda p: recent[p])


async def _wait_trigger(child: _Child, trigger: str, delay: float, watch: _Watch) -> bool:
    """Wait until ``trigger`` fires (True) or the child exits first (False)."""
    started = time.monotonic()
    keys = {"upload": "openai.files.create", "create": "batches_created"}
    keys["download"] = "openai.files.content"
    results_at = watch.out_size
    while child.process.returncode is None:
        await watch.look()
        elapsed = time.monotonic() - started
        if trigger == "delay" and elapsed >= delay:
            return True
        if trigger == "in_flight" and child.in_flight:
            return True
        if trigger == "results" and watch.out_size > results_at:
            return True
        if trigger in keys and watch.grew(keys[trigger]):
            return True
        with anyio.move_on_after(WATCH_INTERVAL):
            await child.process.wait()
    return False


async def _finish(child: _Child, timeout: float) -> int:
    """The child's exit code; a child still running after ``timeout`` is killed (a hang)."""
    with anyio.move_on_after(timeout):
        return await child.process.wait()
    child.process.kill()
    await child.process.wait()
    tail = "\n".join(child.stderr[-15:])
    raise RuntimeError(f"the CLI did not exit within {timeout:.0f} s; killed it:\n{tail}")


async def soak(
    *,
    kills: int = 20,
    lines: int = 3_000,
    max_lines: int = 100,
    seed: int | None = None,
    sigint: bool = True,
    workdir: Path | None = None,
    time_scale: float = TIME_SCALE,
    max_delay: float = 3.0,
    say: Callable[[str], None] = print,
) -> SoakReport:
    """Run the soak; return its report (``report.ok`` tells whether every check held)."""
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    report = SoakReport(seed=seed)
    say(f"soak_kill9 seed={seed} (rerun with --seed {seed})")
    started = time.monotonic()
    config = EmulatorConfig(
        seed=seed & 0xFFFF,
        line_seconds=0.01,
        faults=Faults(slow_rate=0.05, slow_seconds=4.0),
    )
    with tempfile.TemporaryDirectory(prefix="soak-kill9-") as tmp:
        root = workdir or Path(tmp)
        async with open_emulator_process(config, time_scale=time_scale) as emu:
            env = dict(os.environ)
            env.update(
                OPENAI_API_KEY=BENCH_KEY,
                OPENAI_BASE_URL=emu.openai_base_url,
                PYTHONPATH=os.pathsep.join(
                    p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
                ),
            )
            shards = -(-lines // max_lines)
            while len(report.kills) < kills:
                await _round(
                    report, root, emu, env, rng, lines, max_lines, shards, kills, max_delay, say
                )
            if sigint:
                await _sigint_round(report, root, emu, env, lines, max_lines, say)
            final = await emu.stats()
        report.batches_created = int(final["batches_created"])
        tags = {str(k): int(v) for k, v in final["tags"].items()}
        report.duplicate_tags = {k: v for k, v in tags.items() if v > 1}
        report.double_billed = {str(k): int(v) for k, v in final["double_billed"].items()}
        if len(tags) != report.batches_created:
            report.journal_problems.append(
                f"{report.batches_created} batches created but {len(tags)} distinct tags"
            )
    report.phases = dict(Counter(k.phase for k in report.kills))
    report.elapsed = round(time.monotonic() - started, 2)
    return report


def _command(src: Path, out: Path, max_lines: int) -> list[str]:
    return [
        sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out),
        "--max-lines", str(max_lines), "--progress", "json",
    ]  # fmt: skip


async def _round(
    report: SoakReport,
    root: Path,
    emu: EmulatorProcess,
    env: dict[str, str],
    rng: random.Random,
    lines: int,
    max_lines: int,
    shards: int,
    kills: int,
    max_delay: float,
    say: Callable[[str], None],
) -> None:
    """One input: kill and rerun until the command exits 0, then check the results."""
    report.rounds += 1
    number = report.rounds
    work = root / f"round{number}"
    work.mkdir(parents=True)
    src, out = work / "in.jsonl", work / "out.jsonl"
    ids = write_input(src, lines, f"r{number}")
    report.lines += lines
    argv = _command(src, out, max_lines)
    first = True
    while True:
        base = await _counters(emu)
        want_kill = len(report.kills) < kills
        trigger = rng.choice(TRIGGERS)
        delay = rng.uniform(0.3, max_delay)
        report.starts += 1
        report.resumes += 0 if first else 1
        first = False
        process = await anyio.open_process(
            argv, stdin=None, stdout=-1, stderr=-1, env=env, cwd=str(work)
        )
        child = _Child(process)
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(_drain, child)
            tg.start_soon(_stdout, child)
            watch = _Watch(emu, base, out)
            fired = want_kill and await _wait_trigger(child, trigger, delay, watch)
            if fired and process.returncode is None:
                process.kill()
                phase = watch.phase(child)
                await process.wait()
                kill = Kill(number, trigger, round(delay, 3) if trigger == "delay" else 0, phase)
                report.kills.append(kill)
                say(f"  kill {len(report.kills):>2}: round {number} {trigger} -> {phase}")
                continue
            code = await _finish(child, RUN_TIMEOUT)
        if code != 0:
            tail = "\n".join(child.stderr[-15:])
            raise RuntimeError(f"round {number}: the CLI exited {code}:\n{tail}")
        break
    await _check_round(report, work, out, ids, say)


async def _check_round(
    report: SoakReport, work: Path, out: Path, ids: list[str], say: Callable[[str], None]
) -> None:
    duplicates, missing, unexpected = check_results(out, ids)
    report.duplicates += duplicates
    report.missing += missing
    report.unexpected += unexpected
    sent, problems = await journal_facts(work / ".batchpump", out)
    report.shard_attempts_sent += sent
    report.journal_problems += [f"{work.name}: {p}" for p in problems]
    say(
        f"  {work.name}: {len(ids):,} lines, {duplicates} duplicates, {missing} missing, "
        f"{sent} shard attempts sent"
    )


async def _sigint_round(
    report: SoakReport,
    root: Path,
    emu: EmulatorProcess,
    env: dict[str, str],
    lines: int,
    max_lines: int,
    say: Callable[[str], None],
) -> None:
    """First SIGINT: clean stop (130, journal consistent). SIGINT twice: stops at once.
    Both resumed to exactly-once results."""
    for double in (False, True):
        report.rounds += 1
        number = report.rounds
        work = root / f"round{number}-sigint{'2' if double else '1'}"
        work.mkdir(parents=True)
        src, out = work / "in.jsonl", work / "out.jsonl"
        ids = write_input(src, lines, f"r{number}")
        report.lines += lines
        argv = _command(src, out, max_lines)
        base = await _counters(emu)
        report.starts += 1
        process = await anyio.open_process(
            argv, stdin=None, stdout=-1, stderr=-1, env=env, cwd=str(work)
        )
        child = _Child(process)
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(_drain, child)
            tg.start_soon(_stdout, child)
            await _wait_trigger(child, "create", 0, _Watch(emu, base, out))
            process.send_signal(signal.SIGINT)
            if double:
                # The second SIGINT must not wait for the clean stop: send it once the first
                # was seen (the CLI says so), then the process must be gone promptly.
                with anyio.move_on_after(SIGINT_GRACE):
                    while process.returncode is None and not any(
                        "stopping" in line for line in child.stderr
                    ):
                        with anyio.move_on_after(WATCH_INTERVAL):
                            await process.wait()
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
            code = await _finish(child, SIGINT_GRACE)
        if double:
            report.sigint_double_exit = code
        else:
            report.sigint_clean_exit = code
            _, problems = await journal_facts(work / ".batchpump", out)
            report.journal_problems += [f"{work.name} after SIGINT: {p}" for p in problems]
        say(f"  {work.name}: SIGINT{' x2' if double else ''} -> exit {code}")
        report.starts += 1
        report.resumes += 1
        resumed = await anyio.run_process(argv, env=env, cwd=str(work), check=False)
        if resumed.returncode != 0:
            tail = resumed.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{work.name}: the resumed CLI exited {resumed.returncode}:\n{tail}")
        await _check_round(report, work, out, ids, say)


@dataclass
class FaultSoakReport:
    """The faults soak's figures (``benchmarks/results/soak_faults.json``)."""

    seed: int
    rounds: int = 0
    lines: int = 0
    duplicates: int = 0
    missing: int = 0
    unexpected: int = 0
    batches_created: int = 0
    shard_attempts: int = 0
    tags_twice: int = 0
    double_billed: dict[str, int] = field(default_factory=dict)
    duplicates_found: int = 0
    duplicates_cancelled: int = 0
    late_creates: int = 0
    rate_limited: int = 0
    requests: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.duplicates
            and not self.missing
            and not self.unexpected
            and not self.double_billed
        )

    def summary(self) -> str:
        share = self.rate_limited / self.requests if self.requests else 0.0
        return (
            f"soak_faults seed={self.seed}: {self.rounds} rounds, {self.lines:,} lines, "
            f"{self.late_creates} late creates, {self.rate_limited} 429s without headers "
            f"({100 * share:.1f} % of {self.requests:,} requests): {self.missing} lines lost, "
            f"{self.duplicates} given twice, {len(self.double_billed)} lines billed twice, "
            f"{self.batches_created} batches for {self.shard_attempts} shard attempts "
            f"({self.tags_twice} tags twice: duplicates found {self.duplicates_found}, "
            f"cancelled {self.duplicates_cancelled}) in {self.elapsed:.1f} s: "
            f"{'OK' if self.ok else 'FAILED'}"
        )


#: Emulator seconds a late create takes (1.5 s real at the default time scale): past the
#: client's 1 s request timeout, well inside its 10 s settle window.
LATE_CREATE_SECONDS: Final = 30.0
#: Emulator seconds a batch stays out of list answers after it was made (1 s real).
LIST_LAG_SECONDS: Final = 20.0


async def soak_faults(
    *,
    rounds: int = 5,
    lines: int = 3_000,
    max_lines: int = 100,
    seed: int | None = None,
    time_scale: float = TIME_SCALE,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> FaultSoakReport:
    """Late creates, lagging lists, silent 429s: every line once, nothing billed twice."""
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    report = FaultSoakReport(seed=seed)
    say(f"soak_faults seed={seed} (rerun with --faults --seed {seed})")
    started = time.monotonic()
    # 10 requests per real second on uploads and creates, whatever the time scale.
    limit = RateLimit(requests=10, per_seconds=1.0)  # buckets count real seconds
    config = EmulatorConfig(
        seed=seed & 0xFFFF,
        line_seconds=0.01,
        faults=Faults(
            late_create_rate=0.2,
            late_create_seconds=LATE_CREATE_SECONDS,
            list_lag_seconds=LIST_LAG_SECONDS,
            rate_limits={"upload": limit, "create": limit},
            advertise_rate_limits=False,
            send_retry_after=False,
        ),
    )
    options = RunOptions(
        max_lines=max_lines,
        poll=PollPolicy(interval_min=0.1, interval_max=0.5),
        retry=RetryPolicy(create_settle=10.0),
    )
    with tempfile.TemporaryDirectory(prefix="soak-faults-") as tmp:
        root = workdir or Path(tmp)
        async with open_emulator_process(config, time_scale=time_scale) as emu:
            for number in range(1, rounds + 1):
                work = root / f"faults{number}"
                work.mkdir(parents=True)
                src, out = work / "in.jsonl", work / "out.jsonl"
                ids = write_input(src, lines, f"f{number}")
                provider = OpenAI(
                    api_key=BENCH_KEY,
                    base_url=emu.openai_base_url,
                    retry=RetryPolicy(request_timeout=1.0),
                )
                async with provider, Pump(provider, state_dir=work / ".batchpump") as pump:
                    run = await pump.submit(src, out=out, options=options)
                    await run.wait()
                    stats = run.statistics()
                    http = provider.statistics()
                report.rounds += 1
                report.lines += lines
                report.rate_limited += http.rate_limited
                report.requests += http.requests
                report.duplicates_found += stats.duplicates_found
                report.duplicates_cancelled += stats.duplicates_cancelled
                duplicates, missing, unexpected = check_results(out, ids)
                report.duplicates += duplicates
                report.missing += missing
                report.unexpected += unexpected
                sent, _ = await journal_facts(work / ".batchpump", out)
                report.shard_attempts += sent
                say(
                    f"  round {number}: {lines:,} lines, {missing} lost, {duplicates} twice, "
                    f"{http.rate_limited} 429s of {http.requests} requests, duplicates found "
                    f"{stats.duplicates_found} cancelled {stats.duplicates_cancelled}"
                )
            final = await emu.stats()
    report.batches_created = int(final["batches_created"])
    report.tags_twice = sum(1 for v in final["tags"].values() if int(v) > 1)
    report.double_billed = {str(k): int(v) for k, v in final["double_billed"].items()}
    report.late_creates = int(final.get("faults", {}).get("late_create", 0))
    report.elapsed = round(time.monotonic() - started, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_kill9", description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lines", type=int, default=3_000, help="lines per round")
    parser.add_argument("--max-lines", type=int, default=100, help="lines per batch")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE)
    parser.add_argument("--no-sigint", action="store_true", help="skip the SIGINT checks")
    parser.add_argument("--no-record", action="store_true", help="do not write the JSON record")
    parser.add_argument(
        "--faults", action="store_true", help="late creates, lagging lists, silent 429s"
    )
    parser.add_argument("--rounds", type=int, default=5, help="--faults rounds")
    parser.add_argument("--quick", action="store_true", help="one small round (seconds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.kills, args.lines, args.rounds = min(args.kills, 2), min(args.lines, 400), 1
    if args.faults:
        # Every 429 and late create logs a warning; the summary counts them instead.
        logging.getLogger("batchpump").setLevel(logging.ERROR)
        faults = anyio.run(
            lambda: soak_faults(
                rounds=args.rounds,
                lines=args.lines,
                max_lines=args.max_lines,
                seed=args.seed,
                time_scale=args.time_scale,
            ),
            backend="asyncio",
        )
        print(faults.summary())
        if not args.no_record:
            machine = machine_info()
            record = {
                "benchmark": "soak_faults",
                "machine": machine,
                "ok": faults.ok,
                **asdict(faults),
            }
            path = write_record("soak_faults", record)
            print(f"{machine_line(machine)}; record: {path}")
        return 0 if faults.ok else 1
    report = anyio.run(
        lambda: soak(
            kills=args.kills,
            lines=args.lines,
            max_lines=args.max_lines,
            seed=args.seed,
            sigint=not args.no_sigint,
            time_scale=args.time_scale,
        ),
        backend="asyncio",
    )
    print(report.summary())
    if not args.no_record:
        machine = machine_info()
        record = {"benchmark": "soak_kill9", "machine": machine, "ok": report.ok, **asdict(report)}
        path = write_record("soak_kill9", record)
        print(f"{machine_line(machine)}; record: {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
