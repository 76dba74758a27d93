"""The emulator's rate limits count real seconds, whatever the time scale of batch lifecycles.

A provider counts its limits per real minute, and a client paces on its own clock; so the
emulator's token buckets, the ``x-ratelimit-*`` headers and the ``retry-after`` of their 429s
must agree in the seconds of the clock the emulator was given, while ``time_scale`` only speeds
batches up. Time is a ``ManualClock`` moved by the test (no real waits).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, open_emulator
from tests.emulator.test_openai import AUTH, Env, jsonl

pytestmark = pytest.mark.timeout(30)

#: Two calls per real minute on creates, a burst of two.
LIMIT = RateLimit(requests=2, per_seconds=60)
SCALE = 20.0


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    config = EmulatorConfig(
        validate_seconds=2,
        run_seconds=10,
        finalize_seconds=2,
        faults=Faults(rate_limits={"create": LIMIT}),
    )
    async with (
        open_emulator(config=config, clock=clock) as running,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        running.emulator.set_time_scale(SCALE)
        yield Env(running, clock, http)


CREATE = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}


async def test_bucket_and_headers_agree_in_real_seconds_at_any_time_scale(env: Env) -> None:
    file_id = await env.upload(jsonl(2))
    create = {**CREATE, "input_file_id": file_id}
    for remaining in ("1", "0"):
        status, body, headers = await env.call("POST", "/batches", json=create)
        assert status == 200, body
        # Per real minute: 2, not 2 x 20 (the time scale is for lifecycles only).
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == remaining
    status, _, headers = await env.call("POST", "/batches", json=create)
    assert status == 429
    assert headers["retry-after"] == "30"  # one token per 30 real seconds
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    # 29 real seconds are 580 emulated ones: a batch created at the start has completed, yet
    # the bucket has not refilled its token (it would have, twenty times over, on emulated time).
    env.clock.advance(29)
    status, _, headers = await env.call("POST", "/batches", json=create)
    assert status == 429
    assert headers["retry-after"] == "1"
    env.clock.advance(1)
    status, body = await env.create(file_id)
    assert status == 200, body
    assert env.running.emulator.stats.faults["rate_limited"] == 2


async def test_lifecycles_follow_the_time_scale_while_the_bucket_does_not(env: Env) -> None:
    file_id = await env.upload(jsonl(2))
    status, batch = await env.create(file_id)
    assert status == 200
    env.clock.advance(1)  # 20 emulated seconds: validate 2 + run 10 + finalize 2 are over
    assert (await env.batch(batch["id"]))["status"] == "completed"
    assert (await env.create(file_id))[0] == 200
    assert (await env.create(file_id))[0] == 429  # 1 real second refilled 1/30 of a token


async def test_advance_refills_the_bucket_as_real_time_would(env: Env) -> None:
    file_id = await env.upload(jsonl(2))
    assert [(await env.create(file_id))[0] for _ in range(3)] == [200, 200, 429]
    env.running.emulator.advance(30)  # a jump counts for quotas too
    assert (await env.create(file_id))[0] == 200
    clock = env.running.emulator.emulated_clock
    assert clock.quota_clock.monotonic() == pytest.approx(env.clock.monotonic() + 30)
