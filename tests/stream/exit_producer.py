"""A stream producer for ``test_read_back.py`` that dies like a kill -9 at a chosen point.

``python exit_producer.py BASE_URL STATE_DIR`` puts into the stream ``tail`` (flush_lines 40):
``t-0`` .. ``t-44`` (a segment cut at 40, its shard created: the store was committed then,
with the next segment's row at 5 lines), then ``t-45`` .. ``t-59`` past that row, and ``u-0``
.. ``u-9`` of another model (a segment the store has no row for). Then it prints ``ok`` and
leaves with ``os._exit``: no close, no commit of the store, open files as they are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from batchpump import Limits, Pump, RetryPolicy
from batchpump.providers.openai import OpenAI

KEY = "sk-test-emulator-not-a-real-key"


def request(custom_id: str, model: str = "gpt-4o-mini") -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }


async def main(base_url: str, state: Path) -> None:
    provider = OpenAI(
        api_key=KEY,
        base_url=base_url,
        retry=RetryPolicy.no_wait(attempts=30),
        limits=Limits(upload_rate=500, create_rate=500, poll_rate=100, download_rate=500),
    )
    pump = Pump(provider, state_dir=state)
    async with pump, pump.stream("tail", flush_lines=40, flush_after=3600.0) as stream:
        await stream.put_many([request(f"t-{i}") for i in range(45)])
        while stream.statistics().batches_created < 1:  # noqa: ASYNC110 (no event to wait on)
            await anyio.sleep(0.005)
        for i in range(45, 60):
            await stream.put(request(f"t-{i}"))
        await stream.put_many([request(f"u-{i}", "gpt-4o") for i in range(10)])
        sys.stdout.write("ok\n")
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]), backend="asyncio")
