"""Streams against the emulator: puts, cuts by size and time, duplicates, backpressure, acks.

Rules: the emulator runs in-process on 127.0.0.1 port 0 with a scaled clock; tests that depend
on when a segment is cut use a ``ManualClock`` for the pump, so nothing depends on wall time.
Waiting for something that happens in a worker thread polls for it (``until``), bounded by the
test timeout.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec
import pytest

from batchpump import InputError, ManualClock, Pump, Result, ScaledClock, Succeeded, UsageError
from batchpump.emulator import open_emulator
from batchpump.emulator._server import RunningEmulator
from batchpump.providers.openai import OpenAI

from .conftest import OPTIONS, QUICK, provider, request


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (work in worker threads is not seen by the scheduler)."""
    while not condition():  # noqa: ASYNC110 (the change happens in a worker thread)
        await anyio.sleep(0.002)


async def consume(
    stream_results: object, *, ack: Callable[[Result], object] | None
) -> list[Result]:
    seen: list[Result] = []
    async for result in stream_results:  # type: ignore[attr-defined]
        seen.append(result)
        if ack is not None:
            await ack(result)  # type: ignore[misc]
    return seen


async def test_put_results_ack_drain(emulator: RunningEmulator, tmp_path: Path) -> None:
    pump = Pump(provider(emulator), state_dir=tmp_path / "state")
    async with pump, pump.stream("orders", flush_lines=40, options=OPTIONS) as stream:
        for i in range(100):
            await stream.put(request(f"r-{i}"))
        counts = await stream.drain()
        seen = []
        async for result in stream.results():
            seen.append(result)
            await stream.ack(result)
        stats = stream.statistics()
        segments = list((tmp_path / "state" / "runs" / stream.run_id / "segments").iterdir())
    assert counts.succeeded == 100
    assert Counter(r.custom_id for r in seen) == Counter(f"r-{i}" for i in range(100))
    assert all(isinstance(r, Succeeded) for r in seen)
    assert (stats.accepted, stats.pending, stats.acks) == (100, 0, 100)
    assert emulator.emulator.stats.batches_created == 3  # 40 + 40 + 20 (drain cut the last)
    assert not emulator.emulator.stats.duplicate_tags()
    assert segments == []  # finished segment files are removed


async def test_many_concurrent_puts_cut_by_size_share_commits(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    total, producers = 12_000, 40
    pump = Pump(provider(emulator), state_dir=tmp_path / "state")
    async with pump, pump.stream("big", flush_lines=3_000, options=OPTIONS) as stream:

        async def produce(first: int) -> None:
            for i in range(first, total, producers):
                await stream.put(request(f"r-{i}"))

        async with anyio.create_task_group() as tg:
            for first in range(producers):
                tg.start_soon(produce, first)
        stats = stream.statistics()
        await stream.drain()
        seen = await consume(stream.results(), ack=None)
        shards = await pump.journal.load_shards(stream.run_id)
    assert stats.accepted == total
    assert stats.put_rounds < total // 4  # concurrent puts shared their fsync and commit
    assert sorted(s.lines for s in shards) == [3_000] * 4  # cut by size, nothing at drain
    assert Counter(r.custom_id for r in seen) == Counter(f"r-{i}" for i in range(total))
    assert emulator.emulator.stats.batches_created == 4
    assert not emulator.emulator.stats.double_billed()


async def test_cut_by_bytes_per_model(emulator: RunningEmulator, tmp_path: Path) -> None:
    lines = [
        msgspec.json.encode(
            {
                **request(f"m{i % 2}-{i:03d}", model=f"gpt-4o-mini-{i % 2}"),
                "method": "POST",
                "url": "/v1/chat/completions",
            }
        )
        for i in range(60)
    ]
    size = len(lines[0]) + 1
    assert {len(line) + 1 for line in lines} == {size}
    pump = Pump(provider(emulator), state_dir=tmp_path / "state")
    async with pump, pump.stream("bytes", flush_bytes=10 * size, options=OPTIONS) as stream:
        await stream.put_many(lines)
        await stream.drain()
        shards = await pump.journal.load_shards(stream.run_id)
    assert [(s.lines, s.bytes) for s in shards] == [(10, 10 * size)] * 6  # 30 lines a model
    assert Counter(s.model for s in shards) == {"gpt-4o-mini-0": 3, "gpt-4o-mini-1": 3}


@pytest.mark.slow
async def test_a_million_puts_cut_by_size(emulator: RunningEmulator, tmp_path: Path) -> None:
    total, chunk = 1_000_000, 10_000
    pump = Pump(provider(emulator), state_dir=tmp_path / "state")
    async with pump, pump.stream("million", flush_lines=50_000, options=OPTIONS) as stream:
        for start in range(0, total, chunk):
            await stream.put_many(
                b'{"custom_id":"r-%d","method":"POST","url":"/v1/chat/completions",'
                b'"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}' % i
                for i in range(start, start + chunk)
            )
        counts = await stream.drain()
        shards = await pump.journal.load_shards(stream.run_id)
    assert counts.succeeded == total
    assert sorted(s.lines for s in shards if s.attempt == 1) == [50_000] * 20
    assert emulator.emulator.stats.batches_created == 20


async def test_cut_by_time_on_the_injected_clock(emulator: RunningEmulator, tmp_path: Path) -> None:
    clock = ManualClock()
    pump = Pump(provider(emulator), state_dir=tmp_path / "state", clock=clock)
    async with pump, pump.stream("slow", flush_after=60.0, options=OPTIONS) as stream:
        await stream.put(request("a", model="m-1"))
        clock.advance(30)
        await stream.put(request("b", model="m-2"))
        clock.advance(29)
        await anyio.wait_all_tasks_blocked()
        assert stream.statistics().open_segments == 2  # 59 s: nothing is due yet
        clock.advance(1)  # 60 s after "a": its segment is cut, "b"'s (30 s old) is not
        await until(lambda: stream.statistics().batches_created == 1)
        assert stream.statistics().open_segments == 1
        clock.advance(30)
        await until(lambda: stream.statistics().batches_created == 2)
        shards = await pump.journal.load_shards(stream.run_id)
    assert [(s.lines, s.model) for s in shards] == [(1, "m-1"), (1, "m-2")]
    assert emulator.emulator.stats.batches_created == 2


async def test_duplicates_anywhere_in_the_streams_life(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("dups", flush_lines=2, options=OPTIONS) as stream:
        await stream.put(request("a"))
        await stream.put(request("b"))  # first segment cut here
        await stream.put(request("c"))
        with pytest.raises(InputError, match=r"duplicate custom_id 'a' \(first accepted at"):
            await stream.put(request("a"))
        with pytest.raises(InputError, match="request 3: duplicate custom_id 'x'"):
            await stream.put_many([request("x"), request("y"), request("x")])
        with pytest.raises(InputError, match="request 2: duplicate custom_id 'c'"):
            await stream.put_many([request("z"), request("c")])
        good = msgspec.json.encode(
            {**request("p"), "method": "POST", "url": "/v1/chat/completions"}
        )
        with pytest.raises(InputError, match="request 2: missing body"):
            await stream.put_many([good + b"\r\n", b'{"custom_id": "nobody"}'])
        with pytest.raises(InputError, match="missing custom_id"):
            await stream.put({"body": {"model": "m"}})
        with pytest.raises(InputError, match="not valid JSON"):
            await stream.put(b'{"custom_id": "q", ')
        with pytest.raises(InputError, match="one line"):
            await stream.put(b'{"custom_id": "q"}\n{"custom_id": "r"}\n')
        await stream.put(msgspec.json.encode(request("z")) + b"\n")  # z was not accepted
        assert stream.statistics().accepted == 4
        await stream.put_many([good + b"\r\n"])  # a block of standard lines
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("dups", flush_lines=2, options=OPTIONS) as stream:
        with pytest.raises(InputError, match="duplicate custom_id 'b'"):
            await stream.put(request("b"))
        await stream.drain()
        seen = await consume(stream.results(), ack=None)
    assert sorted(r.custom_id for r in seen) == ["a", "b", "c", "p", "z"]


async def test_backpressure_holds_pending_lines(tmp_path: Path) -> None:
    limit = 100
    emu_clock = ManualClock()  # batches finish only when the test moves the emulator's time
    async with open_emulator(config=QUICK, clock=emu_clock) as emulator:
        pump = Pump(provider(emulator), state_dir=tmp_path / "state")
        async with (
            pump,
            pump.stream("pressure", flush_lines=50, max_pending=limit, options=OPTIONS) as stream,
        ):
            await stream.put_many([request(f"r-{i}") for i in range(60)])
            for i in range(60, limit):
                await stream.put(request(f"r-{i}"))
            returned = anyio.Event()

            async def one_more() -> None:
                await stream.put(request("r-100"))
                returned.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(one_more)
                await anyio.wait_all_tasks_blocked()
                assert stream.pending == limit
                assert not returned.is_set()  # held: 100 lines are accepted and unfinished
                while not returned.is_set():
                    emu_clock.advance(5)  # the first batches finish; their lines make room
                    await anyio.sleep(0.005)
            assert stream.pending <= limit
            while stream.pending:  # the last line's batch, cut by drain, finishes
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.drain)
                    while stream.pending:
                        emu_clock.advance(5)
                        await anyio.sleep(0.005)
            seen = await consume(stream.results(), ack=stream.ack)
            run_dir = tmp_path / "state" / "runs" / stream.run_id
    assert sorted(r.custom_id for r in seen) == sorted(f"r-{i}" for i in range(limit + 1))
    assert [p.name for p in run_dir.rglob("*") if p.is_file()] == ["results.jsonl"]


async def test_restart_delivers_only_unacked_results(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("acks", flush_lines=5, options=OPTIONS) as stream:
        await stream.put_many([request(f"r-{i}") for i in range(10)])
        await stream.drain()
        seen = await consume(stream.results(), ack=None)
        acked = {seen[i].custom_id for i in (0, 1, 2, 5, 7)}  # a prefix and some past it
        for result in seen:
            if result.custom_id in acked:
                await stream.ack(result)
        with pytest.raises(UsageError, match="acknowledged already"):
            await stream.ack(seen[0])
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("acks", options=OPTIONS) as stream:
        await stream.drain()
        again = await consume(stream.results(), ack=stream.ack)
    assert sorted(r.custom_id for r in again) == sorted({r.custom_id for r in seen} - acked)
    assert emulator.emulator.stats.batches_created == 2


async def test_close_without_drain_keeps_everything(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("keep", flush_lines=4, options=OPTIONS) as stream:
        await stream.put_many([request(f"r-{i}") for i in range(6)])  # one cut, 2 open
    async with Pump(provider(emulator), state_dir=state) as pump:
        with pytest.raises(UsageError, match="open it with that endpoint"):
            async with pump.stream("keep", endpoint="/v1/embeddings", options=OPTIONS):
                pass
        async with pump.stream("keep", options=OPTIONS) as stream:
            assert stream.statistics().open_segments == 1
            await stream.put(request("r-6"))
            counts = await stream.drain()
            seen = await consume(stream.results(), ack=stream.ack)
    assert counts.succeeded == 7
    assert sorted(r.custom_id for r in seen) == sorted(f"r-{i}" for i in range(7))
    assert emulator.emulator.stats.batches_created == 2
    assert not emulator.emulator.stats.duplicate_tags()


async def test_one_holder_and_one_provider_per_stream(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("solo", options=OPTIONS) as stream:
        await stream.put(request("a"))
        with pytest.raises(UsageError, match="is open already"):
            async with pump.stream("solo", options=OPTIONS):
                pass
    other = OpenAI(api_key="sk-other", base_url="http://127.0.0.1:9/v1")
    async with Pump(other, state_dir=state) as pump:
        with pytest.raises(UsageError, match="open it with the same provider"):
            async with pump.stream("solo", options=OPTIONS):
                pass


def test_plain_asyncio_run_and_a_sync_thread(tmp_path: Path) -> None:
    """The README's shape: ``asyncio.run``, no anyio in the app; a sync thread puts too."""

    async def main() -> tuple[list[str], str]:
        async with open_emulator(config=QUICK, clock=ScaledClock(1_000)) as emulator:
            pump = Pump(provider(emulator), state_dir=tmp_path / "state")
            async with pump, pump.stream("plain", flush_lines=10, options=OPTIONS) as stream:

                def produce() -> str:
                    for i in range(25):
                        stream.put_threadsafe(request(f"t-{i}"))
                    try:
                        stream.put_threadsafe(request("t-0"))
                    except InputError as exc:
                        return str(exc)
                    return "no error"

                refused = await asyncio.to_thread(produce)
                await stream.put(request("a-0"))
                await stream.drain()
                ids = [r.custom_id async for r in stream.results()]
        return ids, refused

    ids, refused = asyncio.run(main())
    assert sorted(ids) == sorted([*(f"t-{i}" for i in range(25)), "a-0"])
    assert "duplicate custom_id 't-0'" in refused


async def test_results_file_rotates_and_acknowledged_parts_are_removed(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    keep = {"r-5", "r-105"}  # never acknowledged in the first run
    most = 0
    delivered: Counter[str] = Counter()
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("rot", flush_lines=10, rotate_bytes=3000, options=OPTIONS) as s:
        run_dir = state / "runs" / s.run_id

        def parts() -> list[str]:  # by the offset each starts at
            names = [p.name for p in run_dir.glob("results*.jsonl")]
            return sorted(names, key=lambda name: int("0" + name.split(".")[1].strip("jsonl")))

        for chunk in range(20):
            await s.put_many([request(f"r-{i}") for i in range(chunk * 10, chunk * 10 + 10)])
            await s.drain()
            async for result in s.results():
                delivered[result.custom_id] += 1
                if result.custom_id not in keep:
                    await s.ack(result)
            most = max(most, len(parts()))
        before = parts()
        end = (run_dir / before[-1]).stat().st_size  # the parts keep the whole file's offsets
    assert set(delivered) == {f"r-{i}" for i in range(200)}
    assert end > 20 * 3000  # many rotations
    assert most <= 4  # the newest, one more, the two parts holding r-5 and r-105
    assert before[0] == "results.jsonl"  # r-5 is in the first part: kept while unacknowledged
    pump = Pump(provider(emulator), state_dir=state)
    async with pump, pump.stream("rot", rotate_bytes=3000, options=OPTIONS) as s:
        assert parts() == before
        await s.drain()
        again = [r async for r in s.results()]
        for result in again:
            await s.ack(result)
        after = parts()
    assert sorted(r.custom_id for r in again) == sorted(keep)  # they survived the restart
    assert after == [before[-1]]  # every part but the newest is gone once acknowledged
