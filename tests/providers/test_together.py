"""The Together adapter against the emulator's Together surface, verb by verb and end to end.

Rules: the emulator runs in-process on 127.0.0.1, port 0, mounted with ``providers=("together",)``.
Verb tests move the emulator's ``ManualClock`` by hand; the adapter keeps the system clock and
the emulator's 429s ask for 10 ms, so a retry-after is honoured for real but costs nothing.
Pump runs use a scaled emulator clock (batches finish in milliseconds) and poll every few
milliseconds. Every test is bounded by a hard timeout; providers and servers are closed by
their ``async with``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchpump import (
    BatchInfo,
    Errored,
    InputError,
    Limits,
    ManualClock,
    NotFoundError,
    PollPolicy,
    ProtocolError,
    Pump,
    Result,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump._models import ShardRecord
from batchpump._provider import shard_tag
from batchpump.emulator import EmulatorConfig, Faults, RunningEmulator, open_emulator
from batchpump.emulator._together import TogetherState
from batchpump.providers import Provider
from batchpump.providers.together import Together
from batchpump.providers.together._adapter import file_name
from batchpump.providers.together._wire import WireBatchJob, to_batch_info, upload_target

from ..helpers import assert_exactly_once, read_results, write_requests

pytestmark = pytest.mark.timeout(30)

KEY = "tg-test-KEY-0123456789abcdef"
ENDPOINT = "/v1/chat/completions"
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10, cancel_seconds=5)
QUICK = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1)
#: Known ceilings: a 429 then halves a high rate instead of one learned from two calls.
FAST = Limits(create_rate=1_000.0, poll_rate=1_000.0, upload_rate=1_000.0, download_rate=1_000.0)
OPTIONS = RunOptions(
    max_lines=200,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(config=CFG, clock=ManualClock(), providers=("together",)) as running:
        yield running


@pytest.fixture
async def together(emu: RunningEmulator) -> AsyncIterator[Together]:
    async with Together(
        api_key=KEY,
        base_url=emu.together_base_url,
        retry=RetryPolicy.no_wait(attempts=10),
        limits=FAST,
    ) as provider:
        yield provider


def state(emu: RunningEmulator) -> TogetherState:
    return emu.emulator.provider_state("together", TogetherState)


def advance(emu: RunningEmulator, seconds: float) -> None:
    clock = emu.emulator.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


def shard(
    tmp_path: Path, count: int = 10, *, model: str | None = "m", index: int = 0
) -> ShardRecord:
    path = tmp_path / f"{index:05d}.a1.jsonl"
    write_requests(path, count, model=model or "m")
    return ShardRecord(
        run_id="run", index=index, attempt=1, path=str(path), lines=count, bytes=0, model=model
    )


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _first_line_twice(src: Path, dest: Path) -> None:
    dest.write_bytes(src.read_bytes().splitlines(keepends=True)[0] * 2)


async def _drain(provider: Together, info: BatchInfo) -> list[Result]:
    async with aclosing(provider.results(info, attempt=1)) as stream:
        return [r async for r in stream]


async def submitted(
    together: Together, tmp_path: Path, count: int = 10, *, index: int = 0
) -> ShardRecord:
    s = shard(tmp_path, count, index=index)
    s.input_ref = await together.prepare(s)
    return s


def test_is_a_provider_without_metadata_tags() -> None:
    provider = Together(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    assert isinstance(provider, Provider)
    caps = provider.capabilities
    assert not caps.metadata_tag
    assert caps.custom_id_max_len == 64
    assert (caps.max_lines, caps.max_bytes) == (50_000, 100_000_000)
    assert KEY not in repr(provider)


@pytest.mark.parametrize(
    ("status", "progress", "state"),
    [
        ("VALIDATING", 0.0, "pending"),
        ("IN_PROGRESS", 40.0, "running"),
        ("IN_PROGRESS", 100.0, "finalizing"),
        ("COMPLETED", 100.0, "completed"),
        ("FAILED", 0.0, "failed"),
        ("EXPIRED", 60.0, "expired"),
        ("CANCELING", 10.0, "cancelling"),
        ("CANCELLED", 10.0, "cancelled"),
    ],
)
def test_status_table(status: str, progress: float, state: str) -> None:
    info = to_batch_info(WireBatchJob(id="b", status=status, progress=progress))
    assert (info.state, info.raw_status, info.completed) == (state, status, round(progress))


def test_unknown_status_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="PAUSED"):
        to_batch_info(WireBatchJob(id="b", status="PAUSED"))


async def test_prepare_uploads_two_field_lines(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    s = shard(tmp_path, 5)
    file_id = await together.prepare(s)
    stored = state(emu).files[file_id]
    assert stored.purpose == "batch-api"
    assert stored.processed
    assert stored.data is not None
    lines = msgspec.json.Decoder(dict[str, object]).decode_lines(stored.data)
    assert [sorted(line) for line in lines] == [["body", "custom_id"]] * 5
    assert _names(tmp_path) == [Path(s.path).name], "the staged upload file was left behind"
    stats = emu.emulator.stats
    assert stats.status_count("together.files.create", 302) == 1, "redirect not followed"
    assert stats.status_count("together.storage.put", 200) == 1
    assert stats.status_count("together.files.preprocess", 200) == 1
    assert stats.route_count("together.files.upload") == 0, "no multipart upload"


async def test_signed_url_upload_never_sends_the_key_to_storage(tmp_path: Path) -> None:
    """A fake Together API whose 302 points at a second loopback server, the "storage host"."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def record(request: web.Request) -> bytes:
        body = await request.read()
        seen.append((request.method, request.path, dict(request.headers), body))
        return body

    async def put(request: web.Request) -> web.Response:
        await record(request)
        puts = [entry for entry in seen if entry[0] == "PUT"]
        return web.Response(status=503 if len(puts) == 1 else 200)  # the first PUT is retried

    storage = TestServer(web.Application(), host="127.0.0.1", port=0)
    storage.app.router.add_put("/bucket/{key}", put)
    await storage.start_server()

    async def create(request: web.Request) -> web.Response:
        await record(request)
        location = storage.make_url("/bucket/obj").with_query({"X-Amz-Signature": "s1g"})
        headers = {"Location": str(location), "X-Together-File-Id": "file-abc"}
        return web.Response(status=302, headers=headers)

    async def preprocess(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"id": "file-abc", "filename": "x", "Processed": True})

    api = TestServer(web.Application(), host="127.0.0.1", port=0)
    api.app.router.add_post("/v1/files", create)
    api.app.router.add_post("/v1/files/{file_id}/preprocess", preprocess)
    await api.start_server()
    try:
        async with Together(
            api_key=KEY, base_url=str(api.make_url("/v1")), retry=RetryPolicy.no_wait(3)
        ) as provider:
            file_id = await provider.prepare(shard(tmp_path, 3))
    finally:
        await api.close()
        await storage.close()
    assert file_id == "file-abc"
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/v1/files"),
        ("PUT", "/bucket/obj"),
        ("PUT", "/bucket/obj"),
        ("POST", "/v1/files/file-abc/preprocess"),
    ]
    create_headers, create_body = seen[0][2], seen[0][3]
    assert create_headers["Authorization"] == f"Bearer {KEY}"
    assert create_body.decode() == (
        f"purpose=batch-api&file_name={file_name(shard_tag('run', 0, 1))}&file_type=jsonl"
    )
    for _, _, headers, body in seen[1:3]:
        assert "Authorization" not in headers
        assert not any(KEY in value for value in headers.values())
        assert headers["Content-Length"] == str(len(body))
        lines = msgspec.json.Decoder(dict[str, object]).decode_lines(body)
        assert [sorted(line) for line in lines] == [["body", "custom_id"]] * 3


@pytest.mark.parametrize(
    ("base", "location", "file_id", "problem"),
    [
        ("https://api.together.ai/v1", "https://r2.example.com/up?sig=1", "file-1", None),
        ("http://127.0.0.1:4010/v1", "http://127.0.0.1:4011/up", "file-1", None),
        ("https://api.together.ai/v1", "http://r2.example.com/up", "file-1", "refusing"),
        ("https://api.together.ai/v1", "https://127.0.0.1/up", "file-1", "refusing"),
        ("https://api.together.ai/v1", "https://10.0.0.7/up", "file-1", "refusing"),
        ("https://api.together.ai/v1", "https://localhost/up", "file-1", "refusing"),
        ("https://api.together.ai/v1", "/relative/up", "file-1", "absolute"),
        ("https://api.together.ai/v1", "https://r2.example.com/up", "file-../x", "file id"),
        ("https://api.together.ai/v1", "https://r2.example.com/up", "", "redirect"),
    ],
)
def test_upload_redirect_safety(
    base: str, location: str, file_id: str, problem: str | None
) -> None:
    headers = {"location": location, "x-together-file-id": file_id}
    if problem is None:
        assert upload_target(302, headers, base_url=base) == (file_id, location)
    else:
        with pytest.raises(ProtocolError, match=problem):
            upload_target(302, headers, base_url=base)


def test_an_answer_that_is_not_a_redirect_is_a_protocol_error() -> None:
    headers = {"location": "https://r2.example.com/up", "x-together-file-id": "file-1"}
    with pytest.raises(ProtocolError, match="without a redirect"):
        upload_target(200, headers, base_url="https://api.together.ai/v1")


async def test_create_logs_the_warning_and_ties_the_job_to_its_file(
    emu: RunningEmulator, together: Together, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = await submitted(together, tmp_path)
    tag = shard_tag("run", 0, 1)
    with_model = await together.create(s, endpoint=ENDPOINT, tag=tag)
    assert not caplog.records
    s.model = None
    with caplog.at_level(logging.WARNING, logger="batchpump.providers.together"):
        without = await together.create(s, endpoint=ENDPOINT, tag=tag)
    assert [r.name for r in caplog.records] == ["batchpump.providers.together"]
    assert "model_id was not given" in caplog.records[0].getMessage()
    assert with_model.state == without.state == "pending"
    assert with_model.tag is None, "Together jobs carry no tag: it is in the file name"
    assert emu.emulator.stats.tags[file_name(tag)] == 2, "both jobs on the attempt's one file"


async def test_lifecycle_sweep_reconcile_and_results(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    emu.emulator.set_faults(line_retryable_rate=0.2, line_fatal_rate=0.2)
    shards: list[ShardRecord] = []
    created: list[str] = []
    for i in range(3):
        s = await submitted(together, tmp_path, 50, index=i)
        s.tag = shard_tag("run", i, 1)
        created.append((await together.create(s, endpoint=ENDPOINT, tag=s.tag)).id)
        shards.append(s)
        advance(emu, 1)
    async with aclosing(together.list_batches()) as listing:
        seen = [b async for b in listing]
    assert [b.id for b in seen] == created[::-1], "newest first"
    found = await together.reconcile(shards[1], since=0.0)
    assert found is not None
    assert found.id == created[1]
    stranger = ShardRecord(
        run_id="run", index=9, attempt=1, path="x", lines=1, bytes=1, input_ref="file-none"
    )
    assert await together.reconcile(stranger, since=emu.emulator.now() - 1) is None

    batch_id = found.id
    advance(emu, 10)
    assert (await together.retrieve(batch_id)).state == "running"
    advance(emu, 100)
    assert (await together.retrieve(batch_id)).state == "finalizing"
    advance(emu, 10)
    done = await together.retrieve(batch_id)
    assert done.state == "completed"
    assert done.output_ref
    assert done.error_ref
    async with aclosing(together.results(done, attempt=2)) as stream:
        results = [r async for r in stream]
    assert sorted(r.custom_id for r in results) == sorted(f"req-{i}" for i in range(50))
    ok = [r for r in results if isinstance(r, Succeeded)]
    failed = [r for r in results if isinstance(r, Errored)]
    assert ok
    assert all(r.usage is not None and r.attempt == 2 for r in ok)
    kinds = {(r.code, r.retryable) for r in failed}
    assert kinds == {("timeout", True), ("invalid_request", False)}


async def test_requeued_attempt_uploads_its_own_file_and_reconciles_exactly(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    first = await submitted(together, tmp_path)
    b1 = await together.create(first, endpoint=ENDPOINT, tag=shard_tag("run", 0, 1))
    # A queue-limit requeue: the next attempt inherits the first attempt's file.
    second = msgspec.structs.replace(first, attempt=2, tag=shard_tag("run", 0, 2))
    never = msgspec.structs.replace(first, attempt=3, tag=shard_tag("run", 0, 3))
    b2 = await together.create(second, endpoint=ENDPOINT, tag=shard_tag("run", 0, 2))
    assert second.input_ref != first.input_ref, "the second attempt uploaded its own file"
    assert len(state(emu).files) == 2
    found = [await together.reconcile(s, since=0.0) for s in (first, second, never)]
    assert [b.id if b else None for b in found] == [b1.id, b2.id, None]
    assert set(emu.emulator.stats.tags.values()) == {1}


async def test_cancel_running_then_terminal(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    s = await submitted(together, tmp_path)
    batch = await together.create(s, endpoint=ENDPOINT, tag="t")
    advance(emu, 11)
    cancelled = await together.cancel(batch.id)
    assert (cancelled.state, cancelled.raw_status) == ("cancelled", "CANCELLED")
    again = await together.cancel(batch.id)  # 400 from the API: returned as it is
    assert again.state == "cancelled"


async def test_queue_limit_failures_are_transient(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    emu.emulator.set_faults(enqueued_token_limit=1)
    s = await submitted(together, tmp_path)
    batch = await together.create(s, endpoint=ENDPOINT, tag="t")
    advance(emu, 10)
    failed = await together.retrieve(batch.id)
    assert failed.state == "failed"
    assert together.failure_is_transient(failed)
    emu.emulator.set_faults(Faults())
    dup = tmp_path / "dup.jsonl"
    _first_line_twice(Path(s.path), dup)
    bad = ShardRecord(run_id="run", index=1, attempt=1, path=str(dup), lines=2, bytes=0)
    bad.input_ref = await together.prepare(bad)
    invalid = await together.create(bad, endpoint=ENDPOINT, tag="t")
    advance(emu, 10)
    rejected = await together.retrieve(invalid.id)
    assert rejected.state == "failed"
    assert not together.failure_is_transient(rejected)
    assert "not unique" in rejected.errors[0].message


async def test_429_with_retry_after_is_waited_out(
    emu: RunningEmulator, together: Together, tmp_path: Path
) -> None:
    s = await submitted(together, tmp_path)
    emu.emulator.set_faults(storm_429_rate=0.6, retry_after_seconds=0.01)
    for _ in range(5):
        await together.create(s, endpoint=ENDPOINT, tag="t")
    stats = emu.emulator.stats
    assert stats.rate_limited > 0
    assert together.statistics().rate_limited == stats.rate_limited
    assert stats.status_count("together.batches.create", 201) == 5


async def test_both_error_shapes_become_provider_errors(together: Together) -> None:
    with pytest.raises(NotFoundError) as batch_error:  # {"error": "<string>"}
        await together.retrieve("no-such-batch")
    assert "Batch job no-such-batch not found" in str(batch_error.value)
    info = to_batch_info(
        WireBatchJob(id="b", status="COMPLETED", progress=100, output_file_id="file-gone")
    )
    with pytest.raises(NotFoundError) as file_error:  # ErrorData {"error": {"message", ...}}
        await _drain(together, info)
    assert file_error.value.code == "not_found"
    assert "File file-gone not found" in str(file_error.value)
    for exc in (batch_error.value, file_error.value):
        assert KEY not in str(exc)
        assert KEY not in repr(exc)
        assert KEY not in exc.body


async def test_pump_run_one_result_per_line_one_batch_per_attempt(tmp_path: Path) -> None:
    async with open_emulator(
        config=QUICK, clock=ScaledClock(1_000), providers=("together",)
    ) as emu:
        emu.emulator.set_faults(
            storm_429_rate=0.2,
            retry_after_seconds=0.02,
            error_5xx_rate=0.05,
            # every create answer is lost after the batch was made: each shard attempt must be
            # found again by its file name (at 0.2, five creates drew no loss 1 time in 3)
            reset_after_create_rate=1.0,
            line_retryable_rate=0.05,
        )
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 1_000)
        provider = Together(
            api_key=KEY, base_url=emu.together_base_url, retry=RetryPolicy.no_wait(attempts=30)
        )
        opts = RunOptions(max_lines=200, max_attempts=10, poll=OPTIONS.poll, retry=OPTIONS.retry)
        async with Pump(provider, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=opts)
            counts = await run.wait()
        assert_exactly_once(read_results(run.results_path), ids)
        assert counts.succeeded == 1_000
        stats = emu.emulator.stats
        assert stats.faults["reset_after_create"] > 0
        assert stats.rate_limited > 0
        assert len(stats.tags) == stats.batches_created >= 5
        assert set(stats.tags.values()) == {1}, "a shard attempt was created twice"
        assert set(stats.billing.values()) == {1}, "a line was paid for twice"


async def test_long_custom_id_fails_before_any_request(tmp_path: Path) -> None:
    async with open_emulator(config=QUICK, providers=("together",)) as emu:
        src = tmp_path / "in.jsonl"
        write_requests(src, 5)
        lines = src.read_bytes().splitlines(keepends=True)
        lines[2] = lines[2].replace(b'"req-2"', b'"' + b"x" * 65 + b'"')
        src.write_bytes(b"".join(lines))
        provider = Together(api_key=KEY, base_url=emu.together_base_url)
        async with Pump(provider, state_dir=tmp_path / "state") as pump:
            with pytest.raises(InputError) as info:
                await pump.submit(src, options=OPTIONS)
        assert info.value.lines == [3]
        assert "64" in str(info.value)
        assert sum(emu.emulator.stats.requests.values()) == 0
