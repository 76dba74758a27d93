"""A provider that rate-limits without saying its limit: 429s pace the client, never fail it.

The server here is a token bucket answering 429 with only ``retry-after-ms`` / ``retry-after``
(no ``x-ratelimit-*`` headers) or with no ``Retry-After`` at all. Loopback only; the client
runs on the real clock because its pacer must, but nothing asserts a duration.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchpump._clock import ManualClock, SystemClock
from batchpump._config import Limits, RetryPolicy
from batchpump._errors import RateLimitedError
from batchpump._http import HttpClient

pytestmark = pytest.mark.timeout(60)

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


class Bucket:
    """``rate`` requests per second, a burst of ``burst``; counts what it answered."""

    def __init__(self, rate: float, burst: float, *, retry_after: str) -> None:
        self.rate = rate
        self.burst = burst
        self.level = 0.0  # starts drained: the account's quota is already in use
        self.at = time.monotonic()
        self.retry_after = retry_after
        self.ok = 0
        self.limited = 0

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1.0:
            self.level -= 1.0
            self.ok += 1
            return web.json_response({"id": "batch_1", "n": self.ok})
        self.limited += 1
        wait = (1.0 - self.level) / self.rate
        headers: dict[str, str] = {}
        if self.retry_after == "both":
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        body = {"error": {"message": "Rate limit reached", "type": "requests"}}
        return web.json_response(body, status=429, headers=headers)


def client_for(url: str, *, attempts: int, clock: object | None = None) -> HttpClient:
    return HttpClient(
        provider="testprov",
        base_url=url,
        headers={"Authorization": "Bearer sk-test"},
        secrets=["sk-test"],
        limits=Limits(create_concurrency=16),
        retry=RetryPolicy(attempts=attempts, wait_initial=0.2, wait_max=1.0),
        clock=clock or SystemClock(),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("retry_after", ["both", "none"])
async def test_429s_never_fail_calls_by_count(
    serve: Serve, retry_after: str, caplog: pytest.LogCaptureFixture
) -> None:
    """80 creates from 16 tasks into 40/s, with a try budget of 2: every call succeeds (on the
    old code the 429s spent the budget and the calls failed), the gate learned a rate, and
    the log prints the wait that really happens."""
    bucket = Bucket(40.0, 2.0, retry_after=retry_after)
    app = web.Application()
    app.router.add_post("/v1/batches", bucket.handle)
    url = await serve(app)
    done: list[int] = []
    caplog.set_level(logging.WARNING, logger="batchpump.http")
    async with client_for(url, attempts=2) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                resp = await client.request(
                    "POST", "/batches", cls="create", json=b"{}", idempotent=False
                )
                done.append(resp.status)

        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(worker, 5)
        gate = client.gate("create").statistics()
        stats = client.statistics()
    assert done == [200] * 80
    assert bucket.ok == 80
    assert bucket.limited >= 1
    assert stats.rate_limited == bucket.limited
    assert gate.learned
    assert gate.rate is not None
    assert stats.rate_limit_timeout == 3600.0
    waits = [r.getMessage() for r in caplog.records if "rate limited" in r.getMessage()]
    assert waits
    assert not any("in 0.000s" in m or "waiting 0.000s" in m for m in waits)


async def test_rate_limit_waits_are_bounded_by_time_not_tries(serve: Serve) -> None:
    """A provider that never lets a call through: the call gives up when its rate-limit
    waits would pass ``rate_limit_timeout``, however many tries that took."""
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        body = {"error": {"message": "Rate limit reached", "type": "requests"}}
        return web.json_response(body, status=429, headers={"retry-after": "10"})

    app = web.Application()
    app.router.add_post("/v1/batches", handler)
    url = await serve(app)
    clock = ManualClock()
    policy = RetryPolicy(attempts=2, rate_limit_timeout=45.0)
    async with HttpClient(
        provider="testprov",
        base_url=url,
        headers={},
        secrets=[],
        limits=Limits(create_rate=1000.0),  # known, so pacing never waits on the real clock
        retry=policy,
        clock=clock,
    ) as client:
        raised: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def ticker() -> None:
                # Time moves only while the class is paused: each pause ends exactly.
                while True:
                    await anyio.sleep(0.005)
                    if client.gate("create").statistics().paused_until is not None:
                        clock.advance(10.0)

            async def call() -> None:
                try:
                    await client.request("POST", "/batches", cls="create", json=b"{}")
                except RateLimitedError as exc:
                    raised.append(exc)
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(ticker)
            tg.start_soon(call)
    assert len(raised) == 1
    # 0 s, 10 s, 20 s, 30 s, 40 s: five tries within the 45 s bound, far past attempts=2.
    assert calls == 5


async def test_the_rate_limit_wait_reaches_run_statistics() -> None:
    """What the progress line shows while rate limits hold the run: how long, of how long."""
    from batchpump._provider import RateLimitedProvider
    from batchpump.providers.openai import OpenAI

    clock = ManualClock()
    async with OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1", clock=clock) as provider:
        assert isinstance(provider, RateLimitedProvider)
        assert provider.rate_limit_wait() is None
        gate = provider._http.gate("create")
        gate.on_rate_limited(30.0)
        clock.advance(12.0)
        wait = provider.rate_limit_wait()
        assert wait is not None
        assert wait.seconds == 12.0
        assert wait.timeout == 3600.0
        gate.on_success()
        assert provider.rate_limit_wait() is None
