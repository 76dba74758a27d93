"""``Pump.submit(source=<async iterable>)``: the input is spooled to disk, then run as a file.

Rules: the emulator runs in-process on 127.0.0.1, port 0, on a scaled clock (the
``batchpump_emulator`` fixture); the client polls every few milliseconds; no sleeps and no
wall-clock asserts; each test is bounded by the pytest timeout.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from itertools import cycle
from pathlib import Path
from typing import cast

import anyio
import msgspec
import pytest

import batchpump._input.spooling as spool_module
import batchpump._pump as pump_module
from batchpump import InputError, PollPolicy, Pump, RetryPolicy, RunOptions, Succeeded, UsageError
from batchpump._input import SpoolItem
from batchpump.emulator import RunningEmulator
from batchpump.providers.openai import OpenAI

from ..helpers import assert_exactly_once, read_results

KEY = "sk-test-emulator-not-a-real-key"
OPTIONS = RunOptions(
    max_lines=40,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)
#: Two, three and four bytes in UTF-8.
WIDE = "é日😀"


class Request(msgspec.Struct):
    """A request line as a user's own Struct (the fields in the order ``jsonl`` writes them)."""

    custom_id: str
    method: str
    url: str
    body: dict[str, object]


def request(custom_id: str) -> dict[str, object]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": WIDE + custom_id}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    return {**line, "body": body}


def jsonl(count: int) -> tuple[bytes, list[str]]:
    """``count`` chat request lines whose content has multi-byte characters; their ids."""
    ids = [f"spool-{i}" for i in range(count)]
    return b"".join(msgspec.json.encode(request(i)) + b"\n" for i in ids), ids


def pieces(data: bytes) -> Iterator[SpoolItem]:
    """The lines of ``data`` as items of every accepted kind, in turn: bytes with and
    without the newline, str, a dict, a Struct, and two lines in one bytes item."""
    lines = data.splitlines(keepends=True)
    kinds = cycle(range(6))
    i = 0
    while i < len(lines):
        kind = next(kinds)
        line = lines[i]
        if kind == 0:
            yield line
        elif kind == 1:
            yield line.rstrip(b"\n")
        elif kind == 2:
            yield line.decode()
        elif kind == 3:
            yield msgspec.json.decode(line)  # a dict
        elif kind == 4:
            yield msgspec.json.decode(line, type=Request)
        else:
            yield b"".join(lines[i : i + 2])
            i += 1
        i += 1


def provider(emu: RunningEmulator) -> OpenAI:
    return OpenAI(api_key=KEY, base_url=emu.openai_base_url, retry=RetryPolicy.no_wait(attempts=30))


async def from_pieces(parts: list[SpoolItem]) -> AsyncIterator[SpoolItem]:
    for part in parts:
        yield part


async def test_async_iterable_is_spooled_exactly_and_every_line_comes_back_once(
    batchpump_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many appends instead of one: the spool's buffer is written and refilled between pieces.
    monkeypatch.setattr(spool_module, "SPOOL_CHUNK", 1000)
    data, ids = jsonl(150)
    parts = list(pieces(data))
    assert {type(p) for p in parts} == {bytes, str, dict, Request}
    assert any(isinstance(p, bytes) and not p.endswith(b"\n") for p in parts)
    state = tmp_path / "state"
    spooled_bytes: list[bytes] = []
    real_prune = pump_module.prune_run_files

    def keep_a_copy(run_dir: Path, input_path: Path | None = None) -> int:
        assert input_path is not None
        spooled_bytes.append(input_path.read_bytes())
        assert stat.S_IMODE(input_path.stat().st_mode) == 0o600
        return real_prune(run_dir, input_path)

    monkeypatch.setattr(pump_module, "prune_run_files", keep_a_copy)

    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        run = await pump.submit(from_pieces(parts), options=OPTIONS)
        counts = await run.wait()
        record = await pump.journal.get_run(run.id)

    results = read_results(run.results_path)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    assert counts.succeeded == len(ids)
    assert run.results_path == state / "runs" / run.id / "results.jsonl"
    assert record is not None
    spooled = anyio.Path(record.input_path)
    assert spooled.parent == await anyio.Path(state / "spool").resolve()
    assert spooled_bytes == [data]  # the spool held exactly the lines, one per item
    # The finished run's copies of its input are gone: the spool and its shard files.
    assert [p async for p in spooled.parent.iterdir()] == []
    assert not await anyio.Path(state / "runs" / run.id / "shards").exists()
    stats = batchpump_emulator.emulator.stats
    assert set(stats.tags.values()) == {1}
    assert set(stats.billing.values()) == {1}


async def test_same_content_in_other_pieces_is_the_same_run(
    batchpump_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """The run id is the content hash: the spool keeps the bytes, not the pieces."""
    data, ids = jsonl(10)
    async with Pump(provider(batchpump_emulator), state_dir=tmp_path / "state") as pump:
        first = await pump.submit(from_pieces([data]), options=OPTIONS)
        await first.wait()
        second = await pump.submit(from_pieces(list(pieces(data))), options=OPTIONS)
        await second.wait()
        record = await pump.journal.get_run(first.id)
    assert second.id == first.id
    assert_exactly_once(read_results(first.results_path), ids)
    assert batchpump_emulator.emulator.stats.batches_created == 1
    assert record is not None
    # Neither spool was kept: the first went with the finished run, the second was a repeat.
    assert [p async for p in anyio.Path(tmp_path / "state" / "spool").iterdir()] == []


async def test_an_item_of_another_type_is_a_usage_error(
    batchpump_emulator: RunningEmulator, tmp_path: Path
) -> None:
    data, _ = jsonl(3)

    async def source() -> AsyncIterator[object]:
        yield data.splitlines()[0]
        yield 42  # neither a line nor a request

    state = tmp_path / "state"
    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        with pytest.raises(UsageError, match=r"must yield request lines .* got int"):
            await pump.submit(cast(AsyncIterable[SpoolItem], source()))
        assert await pump.runs() == []
    assert [p async for p in anyio.Path(state / "spool").iterdir()] == []  # no partial spool
    assert sum(batchpump_emulator.emulator.stats.requests.values()) == 0


async def test_an_error_from_the_source_propagates_and_leaves_no_spool(
    batchpump_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_CHUNK", 8)  # some bytes already on disk
    data, _ = jsonl(3)

    async def source() -> AsyncIterator[SpoolItem]:
        yield data[:20]
        raise OSError("the upstream went away")

    state = tmp_path / "state"
    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        with pytest.raises(OSError, match="the upstream went away"):
            await pump.submit(source())
        assert await pump.runs() == []
    assert [p async for p in anyio.Path(state / "spool").iterdir()] == []


async def test_a_failed_submit_leaves_no_spool_no_run_and_no_results_file(
    batchpump_emulator: RunningEmulator, tmp_path: Path
) -> None:
    data, _ = jsonl(3)
    bad = [*data.splitlines(keepends=True), b"[1, 2]\n"]  # an input error on line 4
    state = tmp_path / "state"
    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        with pytest.raises(InputError, match="line 4"):
            await pump.submit(from_pieces(list(bad)), options=OPTIONS)
        assert await pump.runs() == []
    assert [p async for p in anyio.Path(state / "spool").iterdir()] == []
    assert not [p async for p in anyio.Path(state / "runs").glob("*")]
    assert sum(batchpump_emulator.emulator.stats.requests.values()) == 0


async def test_dicts_and_structs_are_one_line_each(
    batchpump_emulator: RunningEmulator, tmp_path: Path
) -> None:
    ids = [f"obj-{i}" for i in range(6)]

    async def source() -> AsyncIterator[SpoolItem]:
        for i, custom_id in enumerate(ids):
            if i % 3 == 0:
                yield request(custom_id)
            elif i % 3 == 1:
                yield msgspec.json.decode(msgspec.json.encode(request(custom_id)), type=Request)
            else:
                yield msgspec.json.encode(request(custom_id))  # no newline: still one line

    async with Pump(provider(batchpump_emulator), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(source(), options=OPTIONS)
        counts = await run.wait()
    assert counts.succeeded == len(ids)
    assert_exactly_once(read_results(run.results_path), ids)
