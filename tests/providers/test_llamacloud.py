"""The LlamaCloud adapter: item checks, its verbs against the emulator, and a 2,000-document run.

Rules: the emulator runs in-process on 127.0.0.1 port 0. Verb tests share one ``ManualClock``
between the emulator and the adapter and move it with ``advance`` (deterministic, no waits);
tests whose client must wait (429 pauses, job polling, the Pump) share a ``ScaledClock``
(1 emulator second = 1 ms). No sleeps, no wall-clock asserts; hard timeout 60 s.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from batchpump import (
    BadRequestError,
    Clock,
    Errored,
    Limits,
    ManualClock,
    PollPolicy,
    Pump,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
)
from batchpump._models import ShardRecord
from batchpump.emulator import EmulatorConfig, RunningEmulator, open_emulator
from batchpump.emulator._llamacloud import LlamaCloudConfig, llamacloud_state
from batchpump.providers.llamacloud import LlamaCloud
from batchpump.providers.llamacloud._directories import directory_name
from batchpump.providers.llamacloud._wire import detail_message

from ..helpers import assert_exactly_once, read_results

pytestmark = pytest.mark.timeout(60)

KEY = "llx-test-not-a-real-key"
CFG = EmulatorConfig(validate_seconds=2, run_seconds=10, cancel_seconds=3)


def items(tmp_path: Path, n: int, prefix: str = "doc") -> Path:
    """``n`` tiny documents and a shard file of item lines naming them."""
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        (docs / f"{prefix}{i}.txt").write_text(f"document {prefix}{i}\n")
        line = {"custom_id": f"{prefix}-{i}", "file": f"docs/{prefix}{i}.txt"}
        lines.append(msgspec.json.encode(line))
    path = tmp_path / f"{prefix}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def shard(path: Path, n: int, attempt: int = 1) -> ShardRecord:
    return ShardRecord(
        run_id="run0123456789", index=0, attempt=attempt, path=str(path), lines=n, bytes=1
    )


def adapter(emu: RunningEmulator, clock: Clock, root: Path, **kw: object) -> LlamaCloud:
    """An adapter on ``clock``; no client-side upload rate (aiolimiter paces in real time, so
    only the 429s, paced on ``clock``, slow it down)."""
    return LlamaCloud(
        api_key=KEY,
        base_url=emu.llamacloud_base_url,
        clock=clock,
        retry=RetryPolicy.no_wait(attempts=30),
        root=root,
        **{"limits": Limits(), **kw},  # type: ignore[arg-type]
    )


def unpaced(**knobs: object) -> LlamaCloudConfig:
    """Knobs without the upload window (a 429 pause would wait for a ManualClock advance)."""
    return LlamaCloudConfig(upload_limit=None, **knobs)  # type: ignore[arg-type]


@pytest.fixture
async def manual() -> AsyncIterator[tuple[RunningEmulator, ManualClock]]:
    clock = ManualClock()
    async with open_emulator(config=CFG, clock=clock, providers=("llamacloud",)) as running:
        llamacloud_state(running.emulator).configure(unpaced())
        yield running, clock


# -- check_line ---------------------------------------------------------------------------------


def test_check_line(tmp_path: Path) -> None:
    (tmp_path / "ok.pdf").write_bytes(b"%PDF")
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    lc = LlamaCloud(api_key=KEY, base_url="http://127.0.0.1:9", root=tmp_path)

    def problem(line: dict[str, object]) -> str | None:
        found = lc.check_line(msgspec.json.encode(line))
        return found[0] if found else None

    assert problem({"custom_id": "a", "file": "ok.pdf"}) is None
    assert problem({"custom_id": "a", "file": str(tmp_path / "ok.pdf")}) is None
    assert lc.check_line(b"[1, 2]") is None  # not an object: the generic validator's job
    assert problem({"custom_id": "a"}) == "missing file"
    assert "not supported" in (problem({"custom_id": "a", "url": "https://x/y.pdf"}) or "")
    assert "file not found" in (problem({"custom_id": "a", "file": "nope.pdf"}) or "")
    assert "is a directory" in (problem({"custom_id": "a", "file": "sub"}) or "")
    assert "is empty" in (problem({"custom_id": "a", "file": "empty.pdf"}) or "")
    bad_cfg = {"custom_id": "a", "file": "ok.pdf", "configuration_id": 3}
    assert "configuration_id" in (problem(bad_cfg) or "")
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.pdf"
        locked.write_bytes(b"x")
        locked.chmod(0)
        assert "permission denied" in (problem({"custom_id": "a", "file": "locked.pdf"}) or "")


def test_check_line_size_limit_follows_the_job_type(tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        fh.truncate(101 * 1000 * 1000)  # sparse: no disk used
    line = msgspec.json.encode({"custom_id": "a", "file": "big.pdf"})
    parse = LlamaCloud(api_key=KEY, base_url="http://127.0.0.1:9", root=tmp_path)
    extract = LlamaCloud(
        api_key=KEY, base_url="http://127.0.0.1:9", root=tmp_path, job_type="extract_v2",
        configuration_id="cfg-x",
    )  # fmt: skip
    assert parse.check_line(line) is None
    assert "above LlamaCloud's limit" in (extract.check_line(line) or ("", ""))[0]
    assert KEY not in repr(parse)


# -- verbs --------------------------------------------------------------------------------------


async def test_verbs_throttled_is_not_terminal(
    manual: tuple[RunningEmulator, ManualClock], tmp_path: Path
) -> None:
    emu, clock = manual
    llamacloud_state(emu.emulator).configure(unpaced(throttled_seconds=5))
    path = items(tmp_path, 12)
    async with adapter(emu, clock, tmp_path) as lc:
        rec = shard(path, 12)
        rec.input_ref = await lc.prepare(rec)
        assert await lc.prepare(rec) == rec.input_ref  # resumed: same directory, no re-upload
        state = llamacloud_state(emu.emulator)
        assert set(state.uploads.values()) == {1}
        assert len(state.uploads) == 12
        assert await lc.reconcile(rec, since=0.0) is None
        created = await lc.create(rec, endpoint="", tag="unused")
        assert (created.state, created.raw_status) == ("pending", "PENDING")
        assert (await lc.reconcile(rec, since=0.0)) == created
        clock.advance(3)
        throttled = await lc.retrieve(created.id)
        assert (throttled.raw_status, throttled.state, throttled.terminal) == (
            "THROTTLED", "pending", False,
        )  # fmt: skip
        clock.advance(20)
        listed = [b async for b in lc.list_batches()]
        assert [b.id for b in listed] == [created.id]
        assert listed[0].state == "completed"
        results = [r async for r in lc.results(listed[0], attempt=1)]
        assert sorted(r.custom_id for r in results) == sorted(f"doc-{i}" for i in range(12))
        first = results[0]
        assert isinstance(first, Succeeded)
        body = msgspec.json.decode(first.response)
        assert body["job"]["status"] == "COMPLETED"
        assert "markdown" in body
        assert rec.input_ref not in state.directories  # cleaned up
        stats = emu.emulator.stats
        assert stats.tags == {f"llamacloud:{directory_name(rec)}": 1}
        assert not stats.double_billed()
        assert sum(stats.billing.values()) == 12


async def test_failed_jobs_in_a_completed_batch_are_errored(
    manual: tuple[RunningEmulator, ManualClock], tmp_path: Path
) -> None:
    emu, clock = manual
    llamacloud_state(emu.emulator).configure(unpaced(job_failure_rate=0.3, mapping_error_rate=0.1))
    emu.emulator.set_faults(line_fatal_rate=0.1)
    path = items(tmp_path, 60)
    async with adapter(emu, clock, tmp_path, job_type="extract_v2", configuration_id="cfg-1") as lc:
        rec = shard(path, 60)
        rec.input_ref = await lc.prepare(rec)
        batch = await lc.create(rec, endpoint="", tag="t")
        clock.advance(100)
        batch = await lc.retrieve(batch.id)
        assert batch.raw_status == "COMPLETED"
        results = [r async for r in lc.results(batch, attempt=1)]
    assert len({r.custom_id for r in results}) == len(results) == 60
    errored = [r for r in results if isinstance(r, Errored)]
    codes = {r.code for r in errored}
    assert codes == {"job_failed", "mapping_error"}
    assert any(r.retryable for r in errored)
    assert any(not r.retryable for r in errored)
    done = next(r for r in results if isinstance(r, Succeeded))
    assert msgspec.json.decode(done.response)["extract_result"]["document"].endswith(".txt")


async def test_reconcile_adopts_only_the_attempts_own_directory(
    manual: tuple[RunningEmulator, ManualClock], tmp_path: Path
) -> None:
    emu, clock = manual
    path = items(tmp_path, 3)
    async with adapter(emu, clock, tmp_path) as lc:
        first = shard(path, 3)
        first.input_ref = await lc.prepare(first)
        created = await lc.create(first, endpoint="", tag="t")
        assert (await lc.reconcile(first, since=0.0)) == created
        # A later attempt carrying the first attempt's directory never adopts its batch.
        later = msgspec.structs.replace(shard(path, 3, attempt=2), input_ref=first.input_ref)
        assert await lc.reconcile(later, since=0.0) is None
        later.input_ref = await lc.prepare(later)
        assert later.input_ref != first.input_ref
        assert await lc.reconcile(later, since=0.0) is None  # its directory, no batch yet


async def test_cancel_and_422(manual: tuple[RunningEmulator, ManualClock], tmp_path: Path) -> None:
    emu, clock = manual
    path = items(tmp_path, 5)
    async with adapter(emu, clock, tmp_path) as lc:
        rec = shard(path, 5)
        rec.input_ref = await lc.prepare(rec)
        batch = await lc.create(rec, endpoint="", tag="t")
        cancelling = await lc.cancel(batch.id)
        assert (cancelling.state, cancelling.raw_status) == ("cancelling", "PENDING")
        clock.advance(10)
        assert (await lc.cancel(batch.id)).state == "cancelled"  # terminal: returned as is
        with pytest.raises(BadRequestError) as caught:
            await lc._call("POST", "/api/v2/batches", "create", json=b'{"config": {"job": {}}}')
    message = str(caught.value)
    assert "invalid request (POST /api/v2/batches): config.job.type: Field required" in message
    assert caught.value.status == 422
    assert KEY not in message
    two = b'{"detail": [{"loc": ["body", "config"], "msg": "Field required", "type": "missing"},'
    two += b' {"loc": ["query", "page_size"], "msg": "bad", "type": "int_parsing"}]}'
    assert detail_message(two) == "config: Field required; page_size: bad"


async def test_uploads_are_paced_by_the_fixed_window(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    async with open_emulator(config=CFG, clock=clock, providers=("llamacloud",)) as emu:
        state = llamacloud_state(emu.emulator)
        state.configure(LlamaCloudConfig(upload_limit=5, upload_window_seconds=60))
        path = items(tmp_path, 40)
        # A configured ceiling: AIMD halves it on 429s (aiolimiter paces in real time).
        async with adapter(emu, clock, tmp_path, limits=Limits(upload_rate=1_000.0)) as lc:
            rec = shard(path, 40)
            rec.input_ref = await lc.prepare(rec)
            assert lc.statistics().rate_limited > 0
        directory = state.directories[rec.input_ref]
        assert len(directory.files) == 40
        assert set(state.uploads.values()) == {1}  # each file uploaded once despite the 429s
        assert emu.emulator.stats.rate_limited > 0


async def test_results_wait_for_jobs_that_outlive_the_batch(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    async with open_emulator(config=CFG, clock=clock, providers=("llamacloud",)) as emu:
        llamacloud_state(emu.emulator).configure(LlamaCloudConfig(job_tail_seconds=30))
        path = items(tmp_path, 8)
        async with adapter(emu, clock, tmp_path) as lc:
            rec = shard(path, 8)
            rec.input_ref = await lc.prepare(rec)
            batch = await lc.create(rec, endpoint="", tag="t")
            while not batch.terminal:
                await clock.sleep(1)
                batch = await lc.retrieve(batch.id)
            results = [r async for r in lc.results(batch, attempt=1)]
        assert len(results) == 8
        assert all(isinstance(r, Succeeded) for r in results)


# -- the pipeline -------------------------------------------------------------------------------


async def test_two_thousand_documents_through_pump(tmp_path: Path) -> None:
    clock = ScaledClock(1_000)
    llama = EmulatorConfig(validate_seconds=1, run_seconds=5, cancel_seconds=1)
    src = items(tmp_path, 2_000)
    ids = [f"doc-{i}" for i in range(2_000)]
    async with open_emulator(config=llama, clock=clock, providers=("llamacloud",)) as emu:
        llamacloud_state(emu.emulator).configure(LlamaCloudConfig(upload_limit=None))
        options = RunOptions(
            max_lines=700,
            poll=PollPolicy(interval_min=0.005, interval_max=0.02),
            retry=RetryPolicy.no_wait(attempts=20),
        )
        lc = adapter(emu, clock, tmp_path)
        async with Pump(lc, state_dir=tmp_path / "state", clock=clock) as pump:
            run = await pump.submit(src, out=tmp_path / "out.jsonl", options=options)
            await run.wait()
        results = read_results(tmp_path / "out.jsonl")
        assert_exactly_once(results, ids)
        stats = emu.emulator.stats
        assert stats.batches_created == 3
        assert not stats.duplicate_tags()
        assert not stats.double_billed()
