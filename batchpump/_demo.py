"""``batchpump demo``: a real run end to end against the in-process emulator, no key needed.

It writes a JSONL of chat-completion requests, starts the OpenAI emulator on loopback (on a
fast clock, with a few injected 429s and 5xx so the retry paths run too), pumps every line
through it with the SQLite journal, and prints a summary after checking that every line came
back exactly once.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Final

import anyio.to_thread
import msgspec
from rich.console import Console

from ._clock import ScaledClock
from ._config import PollPolicy, RunOptions
from ._models import Result
from ._progress import Notices, ProgressMode, follow, summary_dict, summary_table
from ._pump import Pump

__all__ = ["demo"]

#: Lines per batch in the demo, so a 100,000-line run makes 20 batches.
DEMO_SHARD_LINES: Final = 5_000
#: Emulated seconds per real second: batches take seconds, not hours.
DEMO_TIME_SCALE: Final = 600.0


def write_demo_input(path: Path, lines: int) -> None:
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    with path.open("wb") as f:
        for i in range(lines):
            encoder.encode_into(
                {
                    "custom_id": f"demo-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"Say hello to number {i}."}],
                        "max_tokens": 16,
                    },
                },
                buffer,
                -1,
            )
            buffer.extend(b"\n")
            if len(buffer) > 1 << 20:
                f.write(buffer)
                buffer.clear()
        f.write(buffer)


def count_once(path: Path, lines: int) -> tuple[int, int]:
    """(distinct custom_ids with exactly one result, duplicates) in the results file."""
    decoder = msgspec.json.Decoder(Result)
    seen = bytearray(lines)
    duplicates = 0
    with path.open("rb") as f:
        for raw in f:
            number = int(decoder.decode(raw).custom_id.removeprefix("demo-"))
            if seen[number]:
                duplicates += 1
            seen[number] = 1
    return sum(seen), duplicates


async def demo(
    *,
    lines: int,
    directory: Path | None,
    mode: ProgressMode,
    console: Console,
    out: Console | None = None,
    as_json: bool = False,
) -> int:
    """Run the demo; progress and notes on ``console`` (stderr), the summary on ``out``."""
    from .emulator import EmulatorConfig, Faults, open_emulator
    from .providers.openai import OpenAI

    out = out or console
    with tempfile.TemporaryDirectory(prefix="batchpump-demo-") as tmp:
        work = directory or Path(tmp)
        await anyio.Path(work).mkdir(parents=True, exist_ok=True)
        source = work / "demo-requests.jsonl"
        console.print(f"writing {lines:,} requests to {source}", highlight=False)
        await anyio.to_thread.run_sync(write_demo_input, source, lines)
        config = EmulatorConfig(faults=Faults(error_5xx_rate=0.01, storm_429_rate=0.01))
        async with open_emulator(config=config, clock=ScaledClock(DEMO_TIME_SCALE)) as emu:
            console.print(
                f"emulator listening on {emu.url} (in-process, fast clock); it answers a few "
                "calls with 429 (slow down) or 5xx on purpose, so you see batchpump pace "
                "itself and retry",
                highlight=False,
            )
            provider = OpenAI(api_key="demo-key-not-secret", base_url=emu.openai_base_url)
            options = RunOptions(
                max_lines=DEMO_SHARD_LINES, poll=PollPolicy(interval_min=0.05, interval_max=0.5)
            )
            notices = Notices.install(console, quiet_retries=True)
            try:
                async with Pump(provider, state_dir=work / ".batchpump") as pump:
                    # Each demo serves a new emulator (a new base URL, so a new run): it
                    # replaces the results of an earlier demo in the same --dir.
                    run = await pump.submit(
                        source, options=options, fresh=directory is None, overwrite=True
                    )
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(partial(follow, run, mode=mode, notices=notices))
                        counts = await run.wait()
            finally:
                notices.uninstall()
        once, duplicates = await anyio.to_thread.run_sync(count_once, run.results_path, lines)
        stats = run.statistics()
        ok = once == lines and not duplicates and counts.succeeded == lines
        if as_json:
            summary = summary_dict(stats, str(run.results_path))
            summary["exactly_once"] = ok
            summary["kept"] = directory is not None
            out.file.write(msgspec.json.encode(summary).decode() + "\n")
        else:
            out.print(summary_table(stats, str(run.results_path)))
        verdict = (
            "every line came back exactly once"
            if once == lines and not duplicates
            else (f"MISMATCH: {once:,} of {lines:,} lines have a result, {duplicates:,} duplicates")
        )
        console.print(f"[bold]{verdict}[/bold]")
        if notices.rate_limited or notices.retried:
            console.print(
                "the emulator's injected faults were absorbed: "
                f"{_count(notices.rate_limited, 'rate-limit answer')} paced, "
                f"{_count(notices.retried, 'failed call')} retried",
                highlight=False,
            )
        if directory is None:
            console.print(
                "these demo files are deleted now; `batchpump demo --dir DIR` keeps the input, "
                "the results and the journal in DIR",
                highlight=False,
            )
        else:
            console.print(f"kept in {directory}: the input, the results and the journal")
        return 0 if ok else 1


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
