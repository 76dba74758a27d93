"""The shared limiter on a real redis-server (``tests/servers.py``): one rate, one pause.

Each "worker" is its own ``RedisLimiter`` (its own client and connections), as two processes
would be. Rates are chosen so that the reservations GCRA hands out are 1,000 seconds apart:
the few milliseconds the test itself takes cannot blur them, so the assertions are exact
without measuring any time. The gates run on a clock whose ``sleep`` returns at once having
moved the clock, and records what it was asked.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from batchpump._errors import UsageError
from batchpump._ratelimit import EndpointGate
from batchpump._ratelimit_redis import RedisLimiter, limit_scope
from tests import servers
from tests.servers import RedisServer, free_port

SLOW = 1 / 1000  # one call per 1,000 s: reservations land 1,000 s apart


class JumpClock:
    """``sleep`` returns at once, having moved the clock by the time asked (and noted it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    first = await RedisLimiter.connect(redis_server.url)
    second = await RedisLimiter.connect(redis_server.url)
    try:
        await first._client.flushdb()
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def thousands(waits: list[float]) -> list[int]:
    return sorted(round(w / 1000) for w in waits)


async def test_two_workers_share_one_rate(workers: tuple[RedisLimiter, RedisLimiter]) -> None:
    first, second = workers
    scope = limit_scope("openai", "https://api.openai.com/v1", ["sk-shared-key"])
    a, b = first.gate(scope, "create"), second.gate(scope, "create")
    waits: list[float] = []
    for _ in range(3):
        for gate in (a, b):
            wait, paused = await gate.turn(SLOW)
            waits.append(wait)
            assert paused == 0
    # Six calls at one call per 1,000 s between them: 0, 1,000, ... 5,000 s, not 0..2,000 each.
    assert thousands(waits) == [0, 1, 2, 3, 4, 5]
    assert first.turns == second.turns == 3


async def test_a_worker_that_knows_no_rate_takes_the_others_pace(
    workers: tuple[RedisLimiter, RedisLimiter],
) -> None:
    first, second = workers
    scope = limit_scope("openai", "https://api.openai.com/v1", ["sk-shared-key"])
    paced, cold = first.gate(scope, "upload"), second.gate(scope, "upload")
    assert await cold.turn(None) == (0.0, 0.0)  # nobody has a rate yet: nothing to follow
    waits = [(await paced.turn(SLOW))[0] for _ in range(2)]
    # The restarted worker knows no rate; it queues behind the others at their interval.
    waits += [(await cold.turn(None))[0] for _ in range(2)]
    assert thousands(waits) == [0, 1, 2, 3]


async def test_other_keys_and_classes_have_their_own_rate(
    workers: tuple[RedisLimiter, RedisLimiter],
) -> None:
    first, second = workers
    mine = limit_scope("openai", "https://api.openai.com/v1", ["sk-one"])
    theirs = limit_scope("openai", "https://api.openai.com/v1", ["sk-two"])
    assert mine != theirs
    assert "sk-one" not in mine
    waits = {
        name: [(await gate.turn(SLOW))[0] for _ in range(2)]
        for name, gate in {
            "mine": first.gate(mine, "create"),
            "theirs": second.gate(theirs, "create"),
            "mine-poll": second.gate(mine, "poll"),
        }.items()
    }
    assert {name: thousands(w) for name, w in waits.items()} == {
        "mine": [0, 1],
        "theirs": [0, 1],
        "mine-poll": [0, 1],
    }


async def test_a_pause_seen_by_one_worker_holds_the_other(
    workers: tuple[RedisLimiter, RedisLimiter],
) -> None:
    first, second = workers
    scope = limit_scope("openai", "https://api.openai.com/v1", ["sk-shared-key"])
    clock_a, clock_b = JumpClock(), JumpClock()
    gate_a = EndpointGate("create", clock=clock_a, concurrency=4, rate=None)
    gate_b = EndpointGate("create", clock=clock_b, concurrency=4, rate=None)
    gate_a.share(first.gate(scope, "create"))
    gate_b.share(second.gate(scope, "create"))
    gate_b.on_success()  # b has had an answer: no probe holds its first call

    gate_a.on_rate_limited(600.0)  # worker a got a 429 asking for 600 s
    async with gate_a.slot():  # its retry waits the pause out, publishing it first
        pass
    assert clock_a.sleeps[0] == 600.0

    entered: list[int] = []

    async def call(i: int) -> None:
        async with gate_b.slot():
            entered.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(call, i)
    assert sorted(entered) == list(range(5))
    # Worker b never saw a 429, yet its calls waited for a's pause (600 s of Redis time, less
    # the moments this test took). (Its clock jumps while Redis time does not, so each of its
    # callers meets the pause again; on real clocks both move together.)
    assert clock_b.sleeps
    assert all(590 < s <= 600 for s in clock_b.sleeps)
    assert gate_b.statistics().rate_limited == 0


async def test_without_sharing_the_other_worker_does_not_wait(
    workers: tuple[RedisLimiter, RedisLimiter],
) -> None:
    first, _ = workers
    scope = limit_scope("openai", "https://api.openai.com/v1", ["sk-shared-key"])
    clock_a, clock_b = JumpClock(), JumpClock()
    gate_a = EndpointGate("create", clock=clock_a, concurrency=4, rate=None)
    gate_a.share(first.gate(scope, "create"))
    local_b = EndpointGate("create", clock=clock_b, concurrency=4, rate=None)
    local_b.on_success()
    gate_a.on_rate_limited(600.0)
    async with gate_a.slot():
        pass
    async with local_b.slot():
        pass
    assert clock_b.sleeps == []


async def test_unreachable_redis_is_refused_at_start_and_paced_locally_later(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(UsageError, match="does not answer") as caught:
        await RedisLimiter.connect(f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError, match="redis:// URL"):
        await RedisLimiter.connect("http://127.0.0.1/")
    with servers.redis_server(tmp_path) as doomed:
        limiter = await RedisLimiter.connect(doomed.url)
        gate = limiter.gate("scope", "poll")
        assert await gate.turn(SLOW) == (0.0, 0.0)  # the first turn is free
    try:  # the server went away under a running worker: it goes on pacing locally
        with caplog.at_level(logging.WARNING, logger="batchpump.ratelimit"):
            assert await gate.turn(SLOW) == (0.0, 0.0)
            assert await gate.turn(SLOW) == (0.0, 0.0)
        assert limiter.failures == 2
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 1
        assert messages[0].startswith(f"shared limiter at {doomed.url} unreachable (")
    finally:
        await limiter.aclose()


def test_the_password_never_shows() -> None:
    from batchpump._journal import redact_url

    assert redact_url("redis://:hunter2@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert redact_url("redis://user:hunter2@h/0") == "redis://user:***@h/0"
