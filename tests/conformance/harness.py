"""What the conformance tests share: emulator speeds, the per-test environment, a spying
provider wrapper, and the invariant check.

Time model: the emulator runs on a ``ScaledClock`` (batch lifecycles and its token buckets are
in emulator seconds); the ``Pump`` and the adapter run on the real clock, so poll intervals and
``Retry-After`` waits are real seconds. That is why the rate-limit test uses the unscaled
``REALTIME`` speed: there a bucket's ``Retry-After`` means the same on both sides.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

import anyio
import anyio.to_thread
import msgspec

from batchpump import (
    BatchInfo,
    PollPolicy,
    Provider,
    Pump,
    Result,
    RetryPolicy,
    Run,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump._input import LineChecker, iter_shard_ids, shard_file
from batchpump._models import Capabilities, ShardRecord
from batchpump._pump import provider_settings
from batchpump.emulator import EmulatorConfig, RunningEmulator, Stats, open_emulator
from batchpump.emulator._faults import TokenBucket

from ..helpers import assert_exactly_once, read_results
from .cases import ProviderCase

__all__ = [
    "EXPIRY",
    "NORMAL",
    "REALTIME",
    "Crash",
    "Env",
    "Speed",
    "Spy",
    "drain",
    "open_env",
    "read_results",
    "shard_ids",
]

#: Seconds between the client's sweeps (real time).
POLL: Final = PollPolicy(interval_min=0.005, interval_max=0.02)
#: Engine-level retries (ambiguous creates, downloads): at once.
ENGINE_RETRY: Final = RetryPolicy.no_wait(attempts=20)
#: HTTP-level retries inside the adapter: at once, many, no overall deadline (the test's
#: timeout is the deadline; a 900 s default would only hide a hang).
HTTP_RETRY: Final = msgspec.structs.replace(RetryPolicy.no_wait(attempts=40), timeout=None)


@dataclass(frozen=True, slots=True)
class Speed:
    """An emulator clock scale and the batch timing on it (emulator seconds)."""

    scale: float
    config: EmulatorConfig


#: A batch takes ~7 ms: validate 1 s, run 5 s, finalize 1 s at 1000x.
NORMAL: Final = Speed(
    1_000.0,
    EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1),
)
#: Real time (a bucket's Retry-After is honoured by the client in the same seconds), with
#: batches of ~7 ms.
REALTIME: Final = Speed(
    1.0,
    EmulatorConfig(
        validate_seconds=0.001, run_seconds=0.005, finalize_seconds=0.001, cancel_seconds=0.001
    ),
)
#: The emulator's completion window is a fixed 24 h: at 10^6x it ends after ~86 ms.
EXPIRY: Final = Speed(1_000_000.0, NORMAL.config)


class Crash(BaseException):
    """Stands in for the process dying at a chosen instant."""


def drain(bucket: TokenBucket | None) -> None:
    """Empty an emulator token bucket, as other clients of the same account would."""
    assert bucket is not None, "no RateLimit configured for this endpoint class"
    while bucket.try_acquire():
        pass


def shard_ids(shard: ShardRecord) -> list[str]:
    """The custom_ids of a shard file, in file order."""
    return list(iter_shard_ids(Path(shard.path)))


@final
class Spy:
    """A ``Provider`` that delegates to another one, counting calls and running hooks.

    ``before(verb, n)`` runs before the ``n``-th call of ``verb`` (1-based) reaches the adapter;
    ``after_create(shard, batch)`` runs once the adapter's ``create`` returned (the batch exists
    on the server) and may raise to stand for a crash; ``on_results(batch)`` runs when a batch's
    results are first asked for.
    """

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        #: Creates that returned (``calls["create"]`` counts those begun; with concurrent
        #: submitters the two differ, so hooks key on this one).
        self.created = 0
        self.before: Callable[[str, int], None] | None = None
        self.after_create: Callable[[ShardRecord, BatchInfo], None] | None = None
        self.on_results: Callable[[BatchInfo], None] | None = None
        #: Every result the adapter yielded, in order (what the collector was told).
        self.seen: list[Result] = []

    def _enter(self, verb: str) -> None:
        self.calls[verb] += 1
        if self.before is not None:
            self.before(verb, self.calls[verb])

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def base_url(self) -> str:
        return self.inner.base_url

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def settings(self) -> dict[str, str]:
        """The adapter's settings beyond its base URL (part of a run's identity)."""
        return provider_settings(self.inner)

    async def prepare(self, shard: ShardRecord) -> str:
        self._enter("prepare")
        return await self.inner.prepare(shard)

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        self._enter("create")
        batch = await self.inner.create(shard, endpoint=endpoint, tag=tag)
        self.created += 1
        if self.after_create is not None:
            self.after_create(shard, batch)
        return batch

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        self._enter("reconcile")
        return await self.inner.reconcile(shard, since=since)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        self._enter("retrieve")
        return await self.inner.retrieve(batch_id)

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        self._enter("list_batches")
        async with aclosing(self.inner.list_batches()) as batches:
            async for batch in batches:
                yield batch

    async def cancel(self, batch_id: str) -> BatchInfo:
        self._enter("cancel")
        return await self.inner.cancel(batch_id)

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        self._enter("results")
        if self.on_results is not None:
            self.on_results(batch)
        async with aclosing(self.inner.results(batch, attempt=attempt)) as results:
            async for result in results:
                self.seen.append(result)
                yield result

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        return self.inner.failure_is_transient(batch)

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> LineChecker:
        return self.inner.line_checker(endpoint=endpoint, max_line_bytes=max_line_bytes)

    async def aclose(self) -> None:
        self._enter("aclose")
        await self.inner.aclose()


@dataclass(eq=False)
class Env:
    """One test's world: a case, its running emulator, and a scratch directory."""

    case: ProviderCase
    running: RunningEmulator
    tmp: Path
    _inputs: int = field(default=0)

    @property
    def stats(self) -> Stats:
        """The emulator's counters (terminal batches settled and billed first)."""
        return self.running.emulator.stats

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def provider(self) -> Provider:
        return self.case.make(self.running, retry=HTTP_RETRY)

    @property
    def capabilities(self) -> Capabilities:
        """What the case's adapter declares (read from a fresh adapter that sends nothing)."""
        return self.provider().capabilities

    def spy(self) -> Spy:
        return Spy(self.provider())

    def options(self, **changes: Any) -> RunOptions:
        """Fast run options: small shards, 5 ms sweeps, zero-wait retries."""
        base = RunOptions(
            max_lines=self.case.max_lines, poll=POLL, retry=ENGINE_RETRY, requeue_wait=0.01
        )
        return msgspec.structs.replace(base, **changes) if changes else base

    def write_input(self, count: int) -> tuple[Path, list[str]]:
        """A fresh input file of ``count`` lines; ids unique within the test."""
        self._inputs += 1
        path = self.tmp / f"in{self._inputs}.jsonl"
        ids = self.case.write_requests(path, count, prefix=f"c{self._inputs}")
        assert len(set(ids)) == count, "write_requests must return one unique id per line"
        return path, ids

    async def shards(self, count: int, provider: Provider, *, max_lines: int) -> list[ShardRecord]:
        """Shard an input as the engine would (attempt 1 of each shard), without a Pump."""
        path, _ = self.write_input(count)
        run_id = uuid.uuid4().hex
        outcome = await anyio.to_thread.run_sync(
            lambda: shard_file(
                path,
                out_dir=self.tmp / "shards",
                run_id=run_id,
                endpoint=self.case.endpoint,
                capabilities=provider.capabilities,
                max_lines=max_lines,
                line_checker=provider.line_checker,  # what ``Pump`` passes
            )
        )
        return outcome.shards

    async def run(
        self, src: Path, options: RunOptions, provider: Provider | None = None
    ) -> tuple[Run, list[Result]]:
        """Submit ``src`` in a new Pump on this test's state dir and wait for every line."""
        async with Pump(provider or self.provider(), state_dir=self.state_dir) as pump:
            run = await pump.submit(src, endpoint=self.case.endpoint, options=options)
            counts = await run.wait()
        results = read_results(run.results_path)
        assert counts.total == len(results), (counts, len(results))
        return run, results

    def batches_per_attempt(self) -> Counter[str]:
        return self.case.count_batches(self.stats)

    def check(self, results: list[Result], ids: list[str]) -> None:
        """The invariants after a run: every line exactly one final result (and none for
        anything else), plus ``check_batches`` and ``check_billing``."""
        assert_exactly_once(results, ids)
        self.check_batches()
        self.check_billing(results)

    def check_batches(self) -> Counter[str]:
        """No shard attempt has two batches, and every batch belongs to one attempt."""
        stats = self.stats
        per_attempt = self.case.count_batches(stats)
        twice = {key: n for key, n in per_attempt.items() if n > 1}
        assert not twice, f"shard attempts created more than once: {twice}"
        assert sum(per_attempt.values()) == stats.batches_created, (
            f"{stats.batches_created} batches created but {sum(per_attempt.values())} "
            "attributed to shard attempts"
        )
        return per_attempt

    def check_billing(self, results: list[Result]) -> None:
        """No line billed twice, and a line is billed exactly when its result is ``Succeeded``
        (a billed line whose answer was lost, or an answer nobody paid for, is a bug too)."""
        stats = self.stats
        double = stats.double_billed()
        assert not double, f"lines billed twice: {list(double.items())[:5]}"
        succeeded = {r.custom_id for r in results if isinstance(r, Succeeded)}
        billed = set(stats.billing)
        assert billed == succeeded, (
            f"billed but not Succeeded: {sorted(billed - succeeded)[:5]}; "
            f"Succeeded but never billed: {sorted(succeeded - billed)[:5]}"
        )


@asynccontextmanager
async def open_env(case: ProviderCase, speed: Speed, tmp: Path) -> AsyncIterator[Env]:
    """Serve the case's emulator surfaces on 127.0.0.1, port 0, on ``speed``'s clock."""
    async with open_emulator(
        config=speed.config, clock=ScaledClock(speed.scale), providers=case.providers
    ) as running:
        if case.setup is not None:
            case.setup(running)
        yield Env(case, running, tmp)


async def wait_terminal(provider: Provider, batch_id: str) -> BatchInfo:
    """Read a batch until it is terminal (bounded by the caller's timeout)."""
    while True:
        info = await provider.retrieve(batch_id)
        if info.terminal:
            return info
        await anyio.sleep(0.002)


async def collect(results: AsyncGenerator[Result, None]) -> list[Result]:
    async with aclosing(results) as stream:
        return [result async for result in stream]
