"""Lines a put returned for but the store never committed come back from the segment files.

A put waits for its segment file's fsync only; the store's id index and segment rows are
committed lazily. ``exit_producer.py`` dies (``os._exit``) with lines past a segment's committed
row and a whole segment the store has no row for; the test then tears the tail of a segment as
a crash inside a write would, and opens the stream again: every line put is accepted once,
its id still refused as a duplicate, the torn bytes cut off, and every line gets one result.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from batchpump import InputError, Pump
from batchpump.emulator._server import RunningEmulator

from .conftest import OPTIONS, provider, request

PRODUCER = Path(__file__).with_name("exit_producer.py")
ROOT = Path(__file__).resolve().parents[2]


async def test_lines_past_the_store_are_read_back(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(PRODUCER), emulator.openai_base_url, str(state)]
    done = await anyio.run_process(args, env=env, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout == b"ok\n"
    (segments,) = state.glob("runs/*/segments")
    files = sorted(p.name for p in segments.iterdir())
    assert files == ["00000.a1.jsonl", "00001.a1.jsonl", "00002.a1.jsonl"]
    torn = segments / "00001.a1.jsonl"
    size = torn.stat().st_size
    with torn.open("ab") as f:  # a round cut short: half a line, and NULs
        f.write(b'{"custom_id":"t-torn","method":"POST","url":"/v1/chat/com\x00\x00')

    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("tail", flush_lines=40, options=OPTIONS) as stream:
        stats = stream.statistics()
        assert torn.stat().st_size == size
        for custom_id in ("t-3", "t-50", "u-9"):  # committed, read back past a row, no row
            with pytest.raises(InputError, match=f"duplicate custom_id '{custom_id}'"):
                await stream.put(request(custom_id))
        await stream.put(request("t-torn"))  # never accepted: its bytes were cut off
        counts = await stream.drain()
        seen = Counter([r.custom_id async for r in stream.results()])
        shards = await pump.journal.load_shards(stream.run_id)
    assert (stats.accepted, stats.open_segments) == (70, 2)
    expected = {*(f"t-{i}" for i in range(60)), *(f"u-{i}" for i in range(10)), "t-torn"}
    assert seen == Counter(expected)
    assert counts.succeeded == 71
    assert sorted((s.index, s.lines) for s in shards) == [(0, 40), (1, 21), (2, 10)]
    assert emulator.emulator.stats.batches_created == 3
    assert not emulator.emulator.stats.duplicate_tags()
