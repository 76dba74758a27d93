"""kill -9 a stream's producer at random points, start it again: exactly once, nothing lost.

The emulator runs in this process on 127.0.0.1 port 0 with a scaled clock; the producer
(``crash_producer.py``) runs as a subprocess and is killed with SIGKILL after a random number
of accepted puts (during puts, cuts, creates, polls, collection and acks alike). A last run
finishes the stream. Then: every id has exactly one result in the stream's results file and
in the consumer's output, no batch was created twice (emulator-side tags), no line was billed
twice, and every put the producer saw return has its result.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import msgspec
import pytest

from batchpump import Result
from batchpump.emulator._server import RunningEmulator

PRODUCER = Path(__file__).with_name("crash_producer.py")
ROOT = Path(__file__).resolve().parents[2]
_decoder = msgspec.json.Decoder(Result)


async def _run_producer(
    emulator: RunningEmulator, tmp_path: Path, total: int, kill_after: int | None
) -> tuple[set[int], int, int | None]:
    """Run the producer until ``kill_after`` output lines (then SIGKILL it) or its end.

    Returns the puts it saw return, the results it was given again, and the stream's count of
    final results if it finished.
    """
    args = [
        sys.executable,
        str(PRODUCER),
        emulator.openai_base_url,
        str(tmp_path / "state"),
        str(tmp_path / "out.jsonl"),
        str(total),
    ]
    accepted: set[int] = set()
    again = 0
    finished: int | None = None
    with (tmp_path / "stderr.txt").open("ab") as errors:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's batchpump
        async with await anyio.open_process(args, cwd=ROOT, env=env, stderr=errors) as process:
            assert process.stdout is not None
            buffer = b""
            lines = 0
            async for chunk in process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    lines += 1
                    word, _, value = line.decode().partition(" ")
                    if word == "ok":
                        accepted.add(int(value))
                    elif word == "again":
                        again += 1
                    elif word == "done":
                        finished = int(value)
                if kill_after is not None and lines >= kill_after and finished is None:
                    process.send_signal(signal.SIGKILL)
                    break
            code = await process.wait()
    if kill_after is None or finished is not None:
        assert code == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    return accepted, again, finished


async def crash_soak(emulator: RunningEmulator, tmp_path: Path, *, kills: int, total: int) -> None:
    rng = random.Random(f"stream-crash-{kills}-{total}")
    accepted: set[int] = set()
    delivered_again = 0
    for k in range(kills):
        # Each run prints one line per put from 0 (duplicates are quick), so later kills land
        # further on; the last one after the last put, while it drains.
        kill_after = rng.randint(1 + k * total // kills, (k + 1) * total // kills)
        seen, again, finished = await _run_producer(emulator, tmp_path, total, kill_after)
        assert finished is None  # killed before its end
        accepted |= seen
        delivered_again += again
    seen, again, finished = await _run_producer(emulator, tmp_path, total, None)
    assert finished == total  # one final result per accepted line, over all the runs
    accepted |= seen
    delivered_again += again

    ids = {f"c-{i}" for i in range(total)}
    out = Counter(r.custom_id for r in _decoder.decode_lines((tmp_path / "out.jsonl").read_bytes()))
    assert set(out) == ids
    assert set(out.values()) == {1}
    assert {f"c-{i}" for i in accepted} <= set(out)  # nothing accepted was lost
    # The results file was rotated every 20,000 bytes; parts whose results were all
    # acknowledged are gone, and what is left holds results once each.
    (run_dir,) = (tmp_path / "state" / "runs").iterdir()
    left: Counter[str] = Counter()
    for part in run_dir.glob("results*.jsonl"):
        data = part.read_bytes().lstrip(b"\0")  # a part after the first starts with a hole
        left.update(r.custom_id for r in _decoder.decode_lines(data))
    assert set(left.values()) <= {1}
    assert sum(left.values()) < total
    stats = emulator.emulator.stats
    assert not stats.duplicate_tags()  # no batch created twice
    assert not stats.double_billed()
    assert stats.batches_created == len(stats.tags)
    # A result is delivered again only if the kill came between its delivery and its ack.
    assert delivered_again <= kills * 64


async def test_kill9_three_times_exactly_once(emulator: RunningEmulator, tmp_path: Path) -> None:
    await crash_soak(emulator, tmp_path, kills=3, total=400)


@pytest.mark.slow
async def test_kill9_twenty_times_exactly_once(emulator: RunningEmulator, tmp_path: Path) -> None:
    await crash_soak(emulator, tmp_path, kills=20, total=3_000)
