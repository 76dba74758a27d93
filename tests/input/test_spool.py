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
from batchpump import PollPolicy, Pump, RetryPolicy, RunOptions, Succeeded, UsageError
from batchpump.emulator import RunningEmulator
from batchpump.providers.openai import OpenAI

from ..helpers import assert_exactly_once, read_results

KEY = "sk-test-emulator-not-a-real-key"
OPTIONS = RunOptions(
    max_lines=40,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)
#: Piece sizes in bytes, cycled: odd, and none of them a divisor of a line's length.
SIZES = (1, 7, 3, 13, 61, 2, 257, 5, 1031, 11)
#: Two, three and four bytes in UTF-8: pieces cut through them.
WIDE = "é日😀"


def jsonl(count: int) -> tuple[bytes, list[str]]:
    """``count`` chat request lines whose content has multi-byte characters; their ids."""
    ids = [f"spool-{i}" for i in range(count)]
    lines = []
    for custom_id in ids:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": WIDE + custom_id}]}
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
        lines.append(msgspec.json.encode({**line, "body": body}) + b"\n")
    return b"".join(lines), ids


def pieces(data: bytes) -> Iterator[bytes | str]:
    """``data`` in odd-sized pieces, alternately ``str`` and ``bytes``.

    A ``str`` piece is widened to the next character boundary; a ``bytes`` piece is cut where
    the size falls, so some end inside a multi-byte character (the caller checks that).
    """
    start = 0
    sizes = cycle(SIZES)
    as_text = cycle((False, True))
    while start < len(data):
        end = min(start + next(sizes), len(data))
        # A str piece cannot start inside a character that a bytes piece began.
        if next(as_text) and data[start] & 0xC0 != 0x80:
            while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
                end += 1
            yield data[start:end].decode()
        else:
            yield data[start:end]
        start = end


def cuts_a_character(piece: bytes) -> bool:
    try:
        piece.decode()
    except UnicodeDecodeError:
        return True
    return False


def provider(emu: RunningEmulator) -> OpenAI:
    return OpenAI(api_key=KEY, base_url=emu.openai_base_url, retry=RetryPolicy.no_wait(attempts=30))


async def from_pieces(parts: list[bytes | str]) -> AsyncIterator[bytes | str]:
    for part in parts:
        yield part


async def test_async_iterable_is_spooled_exactly_and_every_line_comes_back_once(
    batchpump_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many appends instead of one: the spool's buffer is written and refilled between pieces.
    monkeypatch.setattr(spool_module, "SPOOL_CHUNK", 1000)
    data, ids = jsonl(150)
    parts = list(pieces(data))
    assert any(isinstance(p, str) for p in parts)
    assert any(isinstance(p, bytes) for p in parts)
    assert any(isinstance(p, bytes) and cuts_a_character(p) for p in parts)
    state = tmp_path / "state"

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
    assert await spooled.read_bytes() == data
    assert stat.S_IMODE((await spooled.stat()).st_mode) == 0o600
    assert [p async for p in spooled.parent.iterdir()] == [spooled]
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
    spooled = [await p.resolve() async for p in anyio.Path(tmp_path / "state" / "spool").iterdir()]
    assert spooled == [anyio.Path(record.input_path)]  # the second spool was not kept


async def test_an_item_of_another_type_is_a_usage_error(
    batchpump_emulator: RunningEmulator, tmp_path: Path
) -> None:
    data, _ = jsonl(3)

    async def source() -> AsyncIterator[object]:
        yield data[:10]
        yield {"custom_id": "spool-9"}  # an object, not its JSON encoding

    state = tmp_path / "state"
    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        with pytest.raises(UsageError, match=r"must yield JSONL bytes or str, got dict"):
            await pump.submit(cast(AsyncIterable[bytes | str], source()))
        assert await pump.runs() == []
    assert [p async for p in anyio.Path(state / "spool").iterdir()] == []  # no partial spool
    assert sum(batchpump_emulator.emulator.stats.requests.values()) == 0


async def test_an_error_from_the_source_propagates_and_leaves_no_spool(
    batchpump_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_CHUNK", 8)  # some bytes already on disk
    data, _ = jsonl(3)

    async def source() -> AsyncIterator[bytes | str]:
        yield data[:20]
        raise OSError("the upstream went away")

    state = tmp_path / "state"
    async with Pump(provider(batchpump_emulator), state_dir=state) as pump:
        with pytest.raises(OSError, match="the upstream went away"):
            await pump.submit(source())
        assert await pump.runs() == []
    assert [p async for p in anyio.Path(state / "spool").iterdir()] == []
