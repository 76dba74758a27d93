"""Issue 13 items 5-9 end to end: the OpenAI adapter against the in-process emulator.

Rules: the emulator runs in-process on 127.0.0.1 port 0 and shares one ``ScaledClock`` with the
client and the pump; every case is bounded by ``fail_after`` and the pytest timeout.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from batchpump import (
    ConfigurationError,
    Errored,
    Limits,
    PollPolicy,
    Pump,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump.emulator import Faults, open_emulator
from batchpump.providers.openai import OpenAI

from .helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-test-promise-not-a-real-key"
LIMITS = Limits(upload_rate=500.0, create_rate=500.0, poll_rate=500.0, download_rate=500.0)
OPTIONS = RunOptions(max_lines=50, poll=PollPolicy(interval_min=0.5, interval_max=5.0))


async def test_malformed_output_lines_settle_and_the_run_goes_on(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 200)
    async with open_emulator(clock=clock) as emu:
        emu.emulator.set_faults(Faults(malformed_output_rate=0.05))
        retry = RetryPolicy.no_wait(attempts=10)
        provider = OpenAI(
            api_key=KEY, base_url=emu.openai_base_url, retry=retry, limits=LIMITS, clock=clock
        )
        with anyio.fail_after(60):
            async with Pump(provider, state_dir=tmp_path / "state", clock=clock) as pump:
                run = await pump.submit(src, options=OPTIONS)
                counts = await run.wait()
    results = read_results(run.results_path)
    assert_exactly_once(results, ids)
    malformed = [r for r in results if isinstance(r, Errored) and r.code == "malformed_output"]
    assert malformed  # the cut lines that still named their custom_id
    assert counts.succeeded + counts.errored == 200
    assert all(isinstance(r, Succeeded | Errored) for r in results)


async def test_base_url_with_a_wrong_path_stops_the_run_naming_the_url(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 100)
    async with open_emulator(clock=clock) as emu:
        wrong = OpenAI(api_key=KEY, base_url=f"{emu.url}/v2", limits=LIMITS, clock=clock)
        with anyio.fail_after(60):
            async with Pump(wrong, state_dir=tmp_path / "state", clock=clock) as pump:
                run = await pump.submit(src, options=OPTIONS)
                with pytest.raises(ConfigurationError) as caught:
                    await run.wait()
        message = str(caught.value)
        assert f"GET {emu.url}/v2/batches" in message  # the run's first call: the tag sweep
        assert "--base-url" in message
        assert read_results(run.results_path) == []  # no line settled
        assert emu.emulator.stats.batches_created == 0

        # Fixed, the same submit continues: a run that sent nothing gives its file up.
        right = OpenAI(api_key=KEY, base_url=emu.openai_base_url, limits=LIMITS, clock=clock)
        with anyio.fail_after(60):
            async with Pump(right, state_dir=tmp_path / "state", clock=clock) as pump:
                fixed = await pump.submit(src, options=OPTIONS)
                counts = await fixed.wait()
    assert counts.succeeded == 100
    assert_exactly_once(read_results(fixed.results_path), ids)
