"""Shared pieces of the stream tests: an emulator with quick batches and a provider for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from batchpump import Limits, PollPolicy, RetryPolicy, RunOptions, ScaledClock
from batchpump.emulator import EmulatorConfig, open_emulator
from batchpump.emulator._server import RunningEmulator
from batchpump.providers.openai import OpenAI

KEY = "sk-test-emulator-not-a-real-key"
QUICK = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1)
OPTIONS = RunOptions(
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(config=QUICK, clock=ScaledClock(1_000)) as running:
        yield running


def provider(emu: RunningEmulator) -> OpenAI:
    return OpenAI(
        api_key=KEY,
        base_url=emu.openai_base_url,
        retry=RetryPolicy.no_wait(attempts=30),
        limits=Limits(upload_rate=500, create_rate=500, poll_rate=100, download_rate=500),
    )


def request(custom_id: str, *, model: str = "gpt-4o-mini", pad: int = 0) -> dict[str, object]:
    """A chat request without method/url (the stream fills them in)."""
    content = f"say {custom_id}" + " x" * pad
    return {
        "custom_id": custom_id,
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }
