"""The official ``openai`` SDK, unchanged, against the emulator.

Rules: loopback only (127.0.0.1, port 0, via the ``batchpump_emulator_factory`` fixture);
the emulator runs on a ``ManualClock`` moved by ``advance`` (no real waits); SDK retries off
(``max_retries=0``); every client and server is closed by its ``async with``; hard timeout 30 s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import openai
import pytest
from openai import AsyncOpenAI
from openai.types import Batch, FileDeleted, FileObject

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, RunningEmulator
from batchpump.emulator.pytest_plugin import EmulatorFactory

pytestmark = pytest.mark.timeout(30)


def jsonl(n: int) -> bytes:
    lines = [
        msgspec.json.encode(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            }
        )
        for i in range(n)
    ]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
async def served(
    batchpump_emulator_factory: EmulatorFactory,
) -> AsyncIterator[tuple[RunningEmulator, ManualClock, AsyncOpenAI]]:
    clock = ManualClock()
    running = await batchpump_emulator_factory(config=EmulatorConfig(), clock=clock)
    async with AsyncOpenAI(
        base_url=running.openai_base_url, api_key="sk-test-not-a-real-key", max_retries=0
    ) as client:
        yield running, clock, client


async def test_sdk_full_cycle(served: tuple[RunningEmulator, ManualClock, AsyncOpenAI]) -> None:
    running, _, client = served
    data = jsonl(5)
    file = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert isinstance(file, FileObject)
    assert (file.bytes, file.purpose, file.status) == (len(data), "batch", "processed")
    batch = await client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"batchpump_shard": "bp1:x:0:1"},
    )
    assert isinstance(batch, Batch)
    assert batch.status == "validating"
    assert batch.metadata == {"batchpump_shard": "bp1:x:0:1"}
    running.emulator.advance(1_000)  # thread-safe (the server runs on its own thread)
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 5
    assert done.output_file_id is not None
    content = await client.files.content(done.output_file_id)
    lines = [msgspec.json.decode(line) for line in content.content.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == [f"c{i}" for i in range(5)]
    assert (await client.files.content(file.id)).content == data
    deleted = await client.files.delete(file.id)
    assert isinstance(deleted, FileDeleted)
    assert deleted.deleted
    assert running.emulator.stats.tags == {"bp1:x:0:1": 1}


async def test_sdk_list_auto_pagination_and_cancel(
    served: tuple[RunningEmulator, ManualClock, AsyncOpenAI],
) -> None:
    running, _, client = served
    file = await client.files.create(file=("in.jsonl", jsonl(2)), purpose="batch")
    created = [
        (
            await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        ).id
        for _ in range(25)
    ]
    listed = [b.id async for b in client.batches.list(limit=10)]
    assert listed == created[::-1]
    cancelled = await client.batches.cancel(created[0])
    assert cancelled.status == "cancelling"
    running.emulator.advance(1_000)  # thread-safe (the server runs on its own thread)
    assert (await client.batches.retrieve(created[0])).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(created[1])  # completed by now
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert info.value.code == "invalid_value"


async def test_sdk_sees_rate_limit_error(
    served: tuple[RunningEmulator, ManualClock, AsyncOpenAI],
) -> None:
    running, _, client = served
    running.emulator.set_faults(storm_429_rate=1.0, retry_after_seconds=300)
    with pytest.raises(openai.RateLimitError) as info:
        await client.batches.list()
    assert info.value.response.headers["retry-after"] == "300"
    assert info.value.code == "rate_limit_exceeded"


async def test_default_fixture_finishes_fast(batchpump_emulator: RunningEmulator) -> None:
    async with AsyncOpenAI(
        base_url=batchpump_emulator.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        file = await client.files.create(file=("in.jsonl", jsonl(1)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        clock = batchpump_emulator.emulator.clock
        deadline = clock.monotonic() + 60  # emulator seconds; the batch needs 14
        while (batch := await client.batches.retrieve(batch.id)).status != "completed":
            assert clock.monotonic() < deadline, batch.status
            await clock.sleep(1)
        assert batch.output_file_id is not None
