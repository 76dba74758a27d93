"""One provider limit held across workers: Pumps sharing the Redis limiter against the emulator.

The emulator serves in this process on the system clock (its time scale speeds batches up; its
rate limits count real seconds, like a provider's, ``tests/emulator/test_rate_clock.py``), with
a limit L on uploads and on creates that every worker is told of (``x-ratelimit-limit-requests``)
and would each pace at alone. Redis is the session's real server (``tests/servers.py``). What is
asserted is counted: the emulator's answers per route and status, and each gate's state; no
time is measured.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from batchpump import Limits, PollPolicy, Pump, RetryPolicy, RunOptions, SystemClock
from batchpump._http.client import HttpClient
from batchpump._ratelimit_redis import RedisLimiter, SharedGate, limit_scope
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, open_emulator
from batchpump.emulator._server import RunningEmulator
from batchpump.providers.openai import OpenAI
from tests.helpers import assert_exactly_once, read_results, write_requests
from tests.servers import RedisServer

pytestmark = pytest.mark.timeout(60)

#: L: requests per real second on uploads and on creates (a burst of 0.2 s worth).
L = 20.0
LIMIT = RateLimit(requests=4, per_seconds=4 / L)
WORKERS = 3
SHARDS = 10  # per worker: 30 uploads and 30 creates in all
LINES_PER_SHARD = 20
LIMITED = ("openai.files.create", "openai.batches.create")
OPTIONS = RunOptions(
    max_lines=LINES_PER_SHARD,
    poll=PollPolicy(interval_min=0.01, interval_max=0.05),
    retry=RetryPolicy.no_wait(attempts=20),
)


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(
        validate_seconds=1,
        run_seconds=2,
        finalize_seconds=1,
        faults=Faults(rate_limits={"upload": LIMIT, "create": LIMIT}),
    )
    async with open_emulator(config=config, clock=SystemClock()) as running:
        running.emulator.set_time_scale(200)  # a batch's 4 emulated seconds in 20 ms
        yield running


@pytest.fixture
def key() -> str:
    """A key of this test's own: its limit scope in Redis is not another test's."""
    return f"sk-test-limit-{uuid.uuid4().hex}"


def provider(emu: RunningEmulator, key: str) -> OpenAI:
    # No configured rates: each worker learns L from the emulator's headers.
    return OpenAI(api_key=key, base_url=emu.openai_base_url, retry=RetryPolicy.no_wait(attempts=20))


class Watched:
    """A ``SharedGate`` that says when a pause was published and when a turn was answered."""

    def __init__(self, inner: SharedGate) -> None:
        self.inner = inner
        self.published = anyio.Event()
        self.answered = anyio.Event()
        self.told: list[tuple[float, float]] = []

    async def turn(self, rate: float | None) -> tuple[float, float]:
        answer = await self.inner.turn(rate)
        self.told.append(answer)
        self.answered.set()
        return answer

    async def publish_pause(self, seconds: float) -> None:
        await self.inner.publish_pause(seconds)
        self.published.set()


def answers(emu: RunningEmulator) -> tuple[int, int]:
    """``(requests, 429s)`` the emulator answered on uploads and creates."""
    stats = emu.emulator.stats
    total = sum(stats.route_count(route) for route in LIMITED)
    return total, sum(stats.status_count(route, 429) for route in LIMITED)


async def test_workers_sharing_redis_keep_within_one_limit(
    emulator: RunningEmulator, redis_server: RedisServer, key: str, tmp_path: Path
) -> None:
    providers = [provider(emulator, key) for _ in range(WORKERS)]
    runs: list[tuple[Path, list[str]]] = []

    async def work(i: int, adapter: OpenAI) -> None:
        src, out = tmp_path / f"in-{i}.jsonl", tmp_path / f"out-{i}.jsonl"
        ids = write_requests(src, SHARDS * LINES_PER_SHARD, prefix=f"w{i}")
        runs.append((out, ids))
        state = tmp_path / f"state-{i}"
        async with Pump(adapter, state_dir=state, limiter=redis_server.url) as pump:
            run = await pump.submit(src, out=out, options=OPTIONS)
            with anyio.fail_after(45):
                await run.wait()
        # Alone, this worker would pace at L: the limit it learned from the headers.
        gates = {g.endpoint: g for g in adapter.statistics().gates}
        assert gates["upload"].ceiling == gates["create"].ceiling == L

    async with anyio.create_task_group() as tg:
        for i, adapter in enumerate(providers):
            tg.start_soon(work, i, adapter)
    for out, ids in runs:
        assert_exactly_once(read_results(out), ids)
    stats = emulator.emulator.stats
    assert len(stats.tags) == WORKERS * SHARDS
    assert set(stats.tags.values()) == {1}
    total, limited = answers(emulator)
    # Three workers each told L send, together, within L: at most 5% of them answered 429.
    assert total >= 2 * WORKERS * SHARDS
    assert limited <= 0.05 * total, (limited, total)


async def test_a_pause_one_worker_is_told_holds_the_other(
    emulator: RunningEmulator, redis_server: RedisServer, key: str
) -> None:
    """Worker a gets a 429 asking for 30 s; worker b, which never got one, waits it out too."""
    emulator.emulator.script(
        [
            {
                "match": {"method": "GET", "path": "/v1/batches"},
                "respond": {
                    "status": 429,
                    "headers": {"retry-after": "30", "retry-after-ms": "30000"},
                    "body": {"error": {"message": "slow down", "type": "requests"}},
                },
            }
        ]
    )
    base = emulator.openai_base_url
    scope = limit_scope("openai", base, [key])
    limiters = [await RedisLimiter.connect(redis_server.url) for _ in range(2)]
    clients = [
        HttpClient(
            provider="openai",
            base_url=base,
            headers={"Authorization": f"Bearer {key}"},
            secrets=[key],
            limits=Limits(),
            retry=RetryPolicy.no_wait(attempts=5),
            clock=SystemClock(),
        )
        for _ in range(2)
    ]
    watched = [Watched(limiter.gate(scope, "poll")) for limiter in limiters]
    for client, shared in zip(clients, watched, strict=True):
        client.gate("poll").share(shared)
        client.gate("poll").on_success()  # each has had an answer: no probe holds a call
    a, b = clients

    async def list_batches(client: HttpClient) -> None:
        await client.request("GET", "/batches", cls="poll")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(list_batches, a)
            with anyio.fail_after(10):  # a's 429 reached Redis as a pause for everyone
                await watched[0].published.wait()
            tg.start_soon(list_batches, b)
            with anyio.fail_after(10):  # b took its turn and was told of the pause
                await watched[1].answered.wait()
            ((wait, paused),) = watched[1].told
            assert 20 < paused <= 30  # a's 30 s, less the moments since
            assert wait == paused
            await anyio.lowlevel.checkpoint()
            assert a.gate("poll").statistics().rate_limited == 1
            held = b.gate("poll").statistics()
            assert held.rate_limited == 0  # b was never answered 429 ...
            assert held.in_flight == 1  # ... and its call is held, not sent:
            assert emulator.emulator.stats.route_count("openai.batches.list") == 1
            assert b.gate("poll").paused_for() > 20
            tg.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
        for limiter in limiters:
            await limiter.aclose()
    assert emulator.emulator.stats.status_count("openai.batches.list", 429) == 1
    assert msgspec.json.encode(emulator.emulator.scripted.pending()) == b"[]"
