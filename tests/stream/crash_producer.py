"""A stream producer for ``test_crash.py``: SIGKILLed at random points and started again.

``python crash_producer.py BASE_URL STATE_DIR OUT TOTAL`` puts ``c-0`` .. ``c-{TOTAL-1}`` into
the stream ``crash`` (an id refused as a duplicate was accepted by an earlier run), printing
``ok I`` once put ``I`` returned. A consumer appends each result to ``OUT`` (a service's own
idempotent sink: a result already there after a kill is not written twice) and then acks it.
Prints ``again ID`` for a result delivered again and ``done N`` once drained, N the final
results the stream committed over its life (the journal's count). The results file
is rotated every 20,000 bytes, so kills land in rotations and removals of acknowledged parts too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import msgspec

from batchpump import InputError, Limits, PollPolicy, Pump, Result, RetryPolicy, RunOptions
from batchpump.providers.openai import OpenAI

KEY = "sk-test-emulator-not-a-real-key"
OPTIONS = RunOptions(
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
_decoder = msgspec.json.Decoder(Result)


def say(line: str) -> None:
    """One line to the test, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(base_url: str, state: Path, out: Path, total: int, written: set[str]) -> None:
    provider = OpenAI(
        api_key=KEY,
        base_url=base_url,
        retry=RetryPolicy.no_wait(attempts=30),
        limits=Limits(upload_rate=500, create_rate=500, poll_rate=100, download_rate=500),
    )
    pump = Pump(provider, state_dir=state)
    async with (
        pump,
        pump.stream(
            "crash", flush_lines=37, flush_after=0.2, rotate_bytes=20_000, options=OPTIONS
        ) as stream,
        anyio.create_task_group() as tg,
    ):

        async def consume() -> None:
            fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                async for result in stream.results():
                    if result.custom_id in written:
                        say(f"again {result.custom_id}")
                    else:
                        os.write(fd, msgspec.json.encode(result) + b"\n")
                        os.fsync(fd)
                        written.add(result.custom_id)
                    await stream.ack(result)
            finally:
                os.close(fd)

        tg.start_soon(consume)
        for i in range(total):
            try:
                await stream.put(
                    {
                        "custom_id": f"c-{i}",
                        "body": {
                            "model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    }
                )
            except InputError as exc:
                if "duplicate custom_id" not in str(exc):
                    raise
            say(f"ok {i}")
        counts = await stream.drain()
    say(f"done {counts.total}")


if __name__ == "__main__":
    url, state_dir, out_path, count = sys.argv[1:5]
    out = Path(out_path)
    done = {r.custom_id for r in _decoder.decode_lines(out.read_bytes())} if out.exists() else set()
    anyio.run(main, url, Path(state_dir), out, int(count), done, backend="asyncio")
