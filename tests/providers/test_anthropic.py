"""The Anthropic adapter against the emulator: every verb, error mapping, and whole runs.

Rules: the emulator runs in-process on 127.0.0.1 port 0; emulator, adapter and Pump share one
``ScaledClock`` (1,000x: a 24-hour window is 86 real seconds, a default batch a few
milliseconds), or a ``ManualClock`` moved by ``advance`` where timing must be exact; no sleeps
in the tests; each test is bounded by the pytest timeout. Invariants are counted on the
emulator's side: one result per line, one batch per shard attempt (``Stats.tags``), no line
billed twice, and zero requests when the input is bad.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from batchpump import (
    AuthenticationError,
    BatchInfo,
    Canceled,
    Clock,
    Errored,
    Expired,
    InputError,
    Limits,
    ManualClock,
    NotFoundError,
    PollPolicy,
    ProviderError,
    Pump,
    RateLimitedError,
    Result,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump._models import ShardRecord
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, RunningEmulator, open_emulator
from batchpump.emulator._anthropic import AnthropicState
from batchpump.providers.anthropic import Anthropic
from batchpump.providers.anthropic import _adapter as anthropic_module
from batchpump.providers.anthropic._adapter import _request_body

from ..helpers import assert_exactly_once, read_results

pytestmark = pytest.mark.timeout(40)

KEY = "test-anthropic-key-not-a-real-one"
QUICK = EmulatorConfig(run_seconds=5, cancel_seconds=1)
#: Retries at once, with no overall bound (the scaled clock would make 900 s last 0.9 s).
NO_WAIT = RetryPolicy(attempts=30, timeout=None, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0)
#: Configured rates keep AIMD's floor (1/8 of them) fast: aiolimiter paces in real time.
FAST_LIMITS = Limits(create_rate=500.0, poll_rate=500.0, download_rate=500.0)


OPTIONS = RunOptions(
    max_lines=200,
    poll=PollPolicy(interval_min=5.0, interval_max=20.0),
    retry=NO_WAIT,
)


def params(cid: str) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": cid}]}


def write_native(path: Path, ids: list[str]) -> None:
    lines = [msgspec.json.encode({"custom_id": c, "params": params(c)}) for c in ids]
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def shard(tmp_path: Path, ids: list[str], name: str = "s.jsonl") -> ShardRecord:
    path = tmp_path / name
    write_native(path, ids)
    size = path.stat().st_size
    return ShardRecord(run_id="run", index=0, attempt=1, path=str(path), lines=len(ids), bytes=size)


def adapter(emu: RunningEmulator, clock: Clock, **kw: Any) -> Anthropic:
    retry = kw.pop("retry", RetryPolicy.no_wait(attempts=5))
    return Anthropic(api_key=KEY, base_url=emu.anthropic_base_url, clock=clock, retry=retry, **kw)


class Served(msgspec.Struct):
    emu: RunningEmulator
    clock: ManualClock
    client: Anthropic

    def state(self) -> AnthropicState:
        return self.emu.emulator.provider_state("anthropic", AnthropicState)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = ManualClock()
    async with (
        open_emulator(config=QUICK, clock=clock, providers=("anthropic",)) as emu,
        adapter(emu, clock) as client,
    ):
        yield Served(emu, clock, client)


async def collect(client: Anthropic, batch: BatchInfo) -> dict[str, Result]:
    return {r.custom_id: r async for r in client.results(batch, attempt=1)}


# -- the streamed create body -------------------------------------------------------------------


async def test_request_body_streams_lines_as_one_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anthropic_module, "BODY_CHUNK", 7)  # lines straddle every chunk
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n{"b":[2,3]}\n  \n{"c":"x"}')
    chunks = [chunk async for chunk in _request_body(str(path))]
    assert len(chunks) > 3
    body = msgspec.json.decode(b"".join(chunks))
    assert body == {"requests": [{"a": 1}, {"b": [2, 3]}, {"c": "x"}]}


async def test_create_retrieve_and_results(served: Served, tmp_path: Path) -> None:
    ids = [f"c{i}" for i in range(30)]
    record = shard(tmp_path, ids)
    assert await served.client.prepare(record) == record.path
    batch = await served.client.create(record, endpoint="/v1/chat/completions", tag="ignored")
    assert (batch.state, batch.total, batch.tag) == ("running", 30, None)
    assert served.state().batches[batch.id].custom_ids == ids
    served.clock.advance(100)
    done = await served.client.retrieve(batch.id)
    assert done.state == "completed"
    assert done.completed == 30
    assert done.output_ref
    results = await collect(served.client, done)
    assert set(results) == set(ids)
    first = results["c0"]
    assert isinstance(first, Succeeded)
    assert first.usage is not None
    assert first.usage.output_tokens == 8
    assert msgspec.json.decode(first.response)["type"] == "message"
    assert served.client.statistics().bytes_sent == record.bytes


async def test_results_map_every_kind(served: Served, tmp_path: Path) -> None:
    emulator = served.emu.emulator
    emulator.set_faults(line_retryable_rate=0.3, line_fatal_rate=0.3)
    failing = await served.client.create(shard(tmp_path, [f"f{i}" for i in range(60)]),
                                         endpoint="", tag="")  # fmt: skip
    emulator.set_faults(Faults(expire=True, expire_done_fraction=0.0))
    expiring = await served.client.create(shard(tmp_path, ["e0", "e1"], "e.jsonl"),
                                          endpoint="", tag="")  # fmt: skip
    emulator.set_faults(Faults())
    cancelled = await served.client.create(shard(tmp_path, ["x0", "x1"], "x.jsonl"),
                                           endpoint="", tag="")  # fmt: skip
    assert (await served.client.cancel(cancelled.id)).state == "cancelling"
    served.clock.advance(86_400)
    got = await collect(served.client, await served.client.retrieve(failing.id))
    errored = [r for r in got.values() if isinstance(r, Errored)]
    by_code = {r.code: (r.retryable, r.status_code) for r in errored}
    assert by_code == {
        "api_error": (True, 500),
        "overloaded_error": (True, 529),
        "invalid_request_error": (False, 400),
    }
    assert any(isinstance(r, Succeeded) for r in got.values())
    expired = await served.client.retrieve(expiring.id)
    assert expired.state == "expired"
    assert all(isinstance(r, Expired) for r in (await collect(served.client, expired)).values())
    ended = await served.client.retrieve(cancelled.id)
    assert ended.state == "cancelled"
    assert all(isinstance(r, Canceled) for r in (await collect(served.client, ended)).values())
    again = await served.client.cancel(cancelled.id)  # already ended: returned as it is
    assert again.state == "cancelled"
    assert not served.client.failure_is_transient(ended)


async def test_list_pages_newest_first(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(anthropic_module, "LIST_PAGE_SIZE", 2)
    record = shard(tmp_path, ["a"])
    made = [(await served.client.create(record, endpoint="", tag="")).id for _ in range(5)]
    listed = [b.id async for b in served.client.list_batches()]
    assert listed == made[::-1]
    pages = served.emu.emulator.stats.route_count("anthropic.batches.list")
    assert pages == 3


async def test_errors_are_mapped_and_keys_never_shown(served: Served) -> None:
    with pytest.raises(NotFoundError) as info:
        await served.client.retrieve("msgbatch_missing")
    assert info.value.code == "not_found_error"
    assert info.value.request_id
    async with Anthropic(
        api_key=" ", base_url=served.emu.anthropic_base_url, clock=served.clock
    ) as anonymous:
        with pytest.raises(AuthenticationError) as denied:
            await anonymous.retrieve("msgbatch_x")
    assert denied.value.code == "authentication_error"
    assert KEY not in repr(served.client)
    assert KEY not in str(info.value)


async def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    limited = EmulatorConfig(
        faults=Faults(rate_limits={"poll": RateLimit(requests=1, per_seconds=60)})
    )
    async with (
        open_emulator(config=limited, clock=clock, providers=("anthropic",)) as emu,
        adapter(emu, clock, retry=NO_WAIT, limits=FAST_LIMITS) as client,
    ):
        for _ in range(3):
            with pytest.raises(NotFoundError):
                await client.retrieve("msgbatch_missing")
        assert client.statistics().rate_limited >= 1
        emu.emulator.set_faults(Faults(storm_429_rate=1.0, retry_after_seconds=7))
        async with adapter(emu, clock, retry=RetryPolicy.no_wait(attempts=1)) as once:
            with pytest.raises(RateLimitedError) as info:
                await once.retrieve("msgbatch_missing")
    assert info.value.retry_after == 7
    assert info.value.code == "rate_limit_error"


async def test_archived_results_raise_a_clear_error(served: Served, tmp_path: Path) -> None:
    batch = await served.client.create(shard(tmp_path, ["a"]), endpoint="", tag="")
    served.clock.advance(100)
    served.state().archive(batch.id)
    info = await served.client.retrieve(batch.id)
    assert info.output_ref is None
    with pytest.raises(ProviderError, match="archived") as raised:
        await collect(served.client, info)
    assert raised.value.status == 410


async def test_reconcile_confirms_by_results(served: Served, tmp_path: Path) -> None:
    since = served.clock.time() - 1
    ours = shard(tmp_path, ["o1", "o2", "o3"], "ours.jsonl")
    other = shard(tmp_path, ["t1", "t2", "t3"], "other.jsonl")
    await served.client.create(other, endpoint="", tag="")  # same size, other lines
    made = await served.client.create(ours, endpoint="", tag="")
    served.clock.advance(100)  # both ended: confirmation reads their results
    async with adapter(served.emu, served.clock) as fresh:  # a restarted process
        found = await fresh.reconcile(ours, since=since)
        assert found is not None
        assert found.id == made.id
        assert await fresh.reconcile(shard(tmp_path, ["n1"], "n.jsonl"), since=since) is None
        # Already adopted: not handed out again for another attempt.
        assert await fresh.reconcile(ours, since=since) is None


async def test_reconcile_waits_for_a_running_candidate(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    async with (
        open_emulator(config=QUICK, clock=clock, providers=("anthropic",)) as emu,
        adapter(emu, clock) as client,
        adapter(emu, clock) as fresh,
    ):
        record = shard(tmp_path, ["w1", "w2"])
        since = clock.time() - 1
        made = await client.create(record, endpoint="", tag="")
        found = await fresh.reconcile(record, since=since)
    assert found is not None
    assert found.id == made.id
    assert found.terminal


# -- whole runs ---------------------------------------------------------------------------------


@pytest.fixture
async def fast() -> AsyncIterator[tuple[RunningEmulator, ScaledClock]]:
    clock = ScaledClock(1_000)
    async with open_emulator(config=QUICK, clock=clock, providers=("anthropic",)) as running:
        yield running, clock


async def run(emu: RunningEmulator, clock: ScaledClock, src: Path, state: Path,
              opts: RunOptions = OPTIONS) -> list[Result]:  # fmt: skip
    async with Pump(adapter(emu, clock, retry=NO_WAIT, limits=FAST_LIMITS),
                    state_dir=state, clock=clock) as pump:  # fmt: skip
        handle = await pump.submit(src, options=opts)
        await handle.wait()
    return read_results(handle.results_path)


async def test_pump_end_to_end_exactly_once(
    fast: tuple[RunningEmulator, ScaledClock], tmp_path: Path
) -> None:
    emu, clock = fast
    src = tmp_path / "in.jsonl"
    ids = [f"req-{i}" for i in range(1_000)]
    half = [
        msgspec.json.encode({"custom_id": c, "params": params(c)})
        if i % 2
        else msgspec.json.encode(
            {
                "custom_id": c,
                "body": {"model": "claude-x", "messages": [{"role": "user", "content": c}]},
            }
        )
        for i, c in enumerate(ids)
    ]
    src.write_bytes(b"\n".join(half) + b"\n")
    results = await run(emu, clock, src, tmp_path / "state")
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    stats = emu.emulator.stats
    assert len(stats.tags) == 5
    assert set(stats.tags.values()) == {1}
    assert set(stats.billing.values()) == {1}
    assert len(stats.billing) == 1_000


async def test_pump_with_faults_loses_nothing_and_creates_once(
    fast: tuple[RunningEmulator, ScaledClock], tmp_path: Path
) -> None:
    emu, clock = fast
    emu.emulator.set_faults(
        storm_429_rate=0.2,
        retry_after_seconds=0.5,
        error_5xx_rate=0.1,
        reset_after_create_rate=0.3,
        line_retryable_rate=0.05,
    )
    src = tmp_path / "in.jsonl"
    ids = [f"r{i}" for i in range(1_000)]
    write_native(src, ids)
    opts = msgspec.structs.replace(OPTIONS, max_attempts=10)
    results = await run(emu, clock, src, tmp_path / "state", opts)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    stats = emu.emulator.stats
    assert stats.rate_limited > 0
    assert stats.resets > 0
    assert set(stats.tags.values()) == {1}, "a shard attempt was created twice"
    assert set(stats.billing.values()) == {1}, "a line was paid for twice"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ({"custom_id": "a", "params": {"model": "m", "messages": []}}, "params has no max_tokens"),
        ({"custom_id": "bad/id", "params": {"model": "m", "max_tokens": 1}}, "custom_id"),
        ({"custom_id": "a", "body": {"model": "m", "messages": [], "n": 3}}, "body.n"),
    ],
)
async def test_bad_input_fails_before_any_request(
    fast: tuple[RunningEmulator, ScaledClock], tmp_path: Path, line: dict[str, Any], needle: str
) -> None:
    emu, clock = fast
    src = tmp_path / "in.jsonl"
    write_native(src, ["ok1", "ok2"])
    src.write_bytes(src.read_bytes() + msgspec.json.encode(line) + b"\n")
    with pytest.raises(InputError) as info:
        await run(emu, clock, src, tmp_path / "state")
    assert info.value.lines == [3]
    assert needle in str(info.value)
    assert sum(emu.emulator.stats.requests.values()) == 0


async def test_missing_results_url_falls_back_to_the_results_route(
    served: Served, tmp_path: Path
) -> None:
    served.emu.emulator.set_faults(completed_without_output=True)
    batch = await served.client.create(shard(tmp_path, ["a", "b"]), endpoint="", tag="")
    served.clock.advance(100)
    ended = await served.client.retrieve(batch.id)
    assert ended.state == "completed"
    assert ended.output_ref is None
    assert set(await collect(served.client, ended)) == {"a", "b"}
