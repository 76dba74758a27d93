"""The TELUS GT Studio adapter against the emulator's GT Studio surface: verbs, codes, Pump runs.

Rules: the emulator runs in-process on 127.0.0.1, port 0, mounted with ``providers=("telus",)``.
Verb tests move the emulator's ``ManualClock`` by hand (no real waits) with the POST bucket off,
and give the adapter a fast ``ScaledClock`` and a zero-wait retry policy. Pump runs put the
emulator on a ``ScaledClock`` (``SCALE`` emulated seconds per real second), keep its 20 POST/s
bucket on, and give the client the matching scaled ``job_rate``; the crash is a
``BaseException`` raised from a wrapper of the adapter's HTTP client after N job POSTs (no
timing involved). Every test is bounded by a hard timeout; servers and clients are closed by
their ``async with``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from batchpump import (
    AuthenticationError,
    BatchInfo,
    Errored,
    Limits,
    ManualClock,
    NotFoundError,
    PollPolicy,
    Pump,
    Result,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    Succeeded,
    UsageError,
)
from batchpump._http import Response
from batchpump._models import ShardRecord
from batchpump.emulator import EmulatorConfig, RunningEmulator, open_emulator
from batchpump.emulator._telus import CreateBatchBody, TelusSettings, TelusState
from batchpump.providers import Provider
from batchpump.providers.telus import TELUS_POLL, Telus
from batchpump.providers.telus._wire import classify, normalize

from ..helpers import assert_exactly_once, read_results

pytestmark = pytest.mark.timeout(60)

KEY = "telus-KEY-0123456789abcdef"
PID = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
FLOW = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, seed=5)
#: Emulated seconds per real second in Pump runs: 20 POST/s emulated = 20 * SCALE real.
SCALE = 200.0
#: The client stays this fraction under the emulated limit (pacing jitter must not cause 429s).
RATE_MARGIN = 0.9


def item(cid: str, *, host: str = "img.example", flow: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"custom_id": cid, "data": {"image_url": f"https://{host}/{cid}.png"}}
    if flow is not None:
        line["work_flow_id"] = flow
    return line


def write_items(path: Path, lines: list[dict[str, Any]]) -> list[str]:
    """Native item lines ``{custom_id, data, work_flow_id?}``."""
    ids = [str(line["custom_id"]) for line in lines]
    with path.open("wb") as f:
        for line in lines:
            f.write(msgspec.json.encode(line) + b"\n")
    return ids


def shard(tmp_path: Path, lines: list[dict[str, Any]], tag: str = "bp1:run:0:1") -> ShardRecord:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    write_items(path, lines)
    return ShardRecord(
        run_id="run", index=0, attempt=1, path=str(path), lines=len(lines), bytes=0, tag=tag
    )


def state(emu: RunningEmulator) -> TelusState:
    return emu.emulator.provider_state("telus", TelusState)


def advance(emu: RunningEmulator, seconds: float) -> None:
    clock = emu.emulator.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(config=CFG, clock=ManualClock(), providers=("telus",)) as running:
        state(running).configure(TelusSettings(post_rate=None))
        yield running


@pytest.fixture
async def telus(emu: RunningEmulator) -> AsyncIterator[Telus]:
    async with Telus(
        api_key=KEY,
        project_id=PID,
        base_url=emu.telus_base_url,
        work_flow_id=FLOW,
        retry=RetryPolicy.no_wait(attempts=4),
        clock=ScaledClock(1_000),
        job_rate=10_000,
    ) as provider:
        yield provider


async def collect(telus: Telus, batch_id: str) -> dict[str, Result]:
    info = await telus.retrieve(batch_id)
    async with aclosing(telus.results(info, attempt=1)) as results:
        return {r.custom_id: r async for r in results}


# -- pure pieces --------------------------------------------------------------------------------


def test_is_a_provider_without_cancel_and_keeps_its_key_out_of_reprs() -> None:
    provider = Telus(api_key=KEY, project_id=PID, base_url="http://127.0.0.1:9")
    assert isinstance(provider, Provider)
    caps = provider.capabilities
    assert (caps.cancel, caps.metadata_tag, caps.list_batches) == (False, False, True)
    assert caps.max_lines == 1_000
    assert provider.base_url == f"http://127.0.0.1:9/v1/projects/{PID}"
    assert KEY not in repr(provider)
    assert (TELUS_POLL.interval_min, TELUS_POLL.interval_max) == (60.0, 900.0)


def test_key_and_project_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELUS_GTSTUDIO_API_KEY", "TELUS_GTSTUDIO_PROJECT_ID", "TELUS_GTSTUDIO_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLAYMENT_API_KEY", KEY)
    monkeypatch.setenv("PLAYMENT_PROJECT_ID", PID)
    assert Telus().base_url == f"https://api.playment.io/v1/projects/{PID}"
    monkeypatch.delenv("PLAYMENT_PROJECT_ID")
    with pytest.raises(UsageError, match="TELUS_GTSTUDIO_PROJECT_ID"):
        Telus()
    monkeypatch.delenv("PLAYMENT_API_KEY")
    with pytest.raises(UsageError, match="TELUS_GTSTUDIO_API_KEY"):
        Telus(project_id=PID)


@pytest.mark.parametrize(
    ("line", "run_flow", "problem"),
    [
        ({"custom_id": "a", "data": {"image_url": "u"}}, FLOW, None),
        ({"custom_id": "a", "data": {"x": 1}, "work_flow_id": FLOW}, None, None),
        ({"custom_id": "a", "data": {"x": 1}, "priority_weight": 9}, FLOW, None),
        ({"custom_id": "a", "body": {"x": 1}}, FLOW, "missing data"),
        ({"data": {"x": 1}}, FLOW, "missing custom_id"),
        ({"custom_id": "a", "data": {}}, FLOW, "data is empty"),
        ({"custom_id": "a", "data": [1]}, FLOW, "data must be a JSON object"),
        ({"custom_id": "a", "data": {"x": 1}}, None, "no work_flow_id"),
        ({"custom_id": "a", "data": {"x": 1}, "work_flow_id": "wf"}, FLOW, "not a UUID"),
        ({"custom_id": "a", "data": {"x": 1}, "priority_weight": 10}, FLOW, "priority_weight"),
        ({"custom_id": "a", "data": {"x": 1}, "batch_id": FLOW}, FLOW, "batch_id"),
        ({"custom_id": "a", "data": {"x": 1}, "reference_id": "b"}, FLOW, "reference_id"),
        ([1, 2], FLOW, "not a JSON object"),
    ],
)
def test_check_line(line: Any, run_flow: str | None, problem: str | None) -> None:
    provider = Telus(api_key=KEY, project_id=PID, work_flow_id=run_flow)
    found = provider.check_line(msgspec.json.encode(line))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found[0]
        assert found[1]


@pytest.mark.parametrize(
    ("raw", "total", "completed", "state"),
    [
        ("Not Started", 5, 0, "pending"),
        ("In Progress", 5, 2, "running"),
        ("Complete", 5, 5, "completed"),
        ("Complete", 5, 4, "completed"),
        ("Paused", 5, 0, "pending"),
        ("Paused", 5, 1, "running"),
        (None, 5, 5, "completed"),
        (None, 0, 0, "completed"),
    ],
)
def test_status_table(raw: str | None, total: int, completed: int, state: str) -> None:
    assert normalize(raw, total, completed) == state


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("FS_0001", "exists"),
        ("FS_0000", "retry"),
        ("FS_0008", "retry"),
        ("api_error", "retry"),
        ("auth-failure", "auth"),
        ("core.webutil.auther", "auth"),
        ("FS_0007", "permanent"),
        ("GE_0001", "permanent"),
        ("SOMETHING_NEW", "permanent"),
        (None, "permanent"),
    ],
)
def test_error_code_classes(code: str | None, verdict: str) -> None:
    assert classify(code) == verdict


# -- verbs against the emulator -----------------------------------------------------------------


async def test_create_makes_one_named_batch_and_one_job_per_item(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    s = shard(tmp_path, [item(f"r{i}") for i in range(5)])
    assert await telus.prepare(s) == s.path
    info = await telus.create(s, endpoint="/unused", tag="bp1:run:0:1")
    assert (info.state, info.total, info.tag) == ("pending", 5, "bp1:run:0:1")
    project = state(emu).projects[PID]
    batch = project.batches[info.id]
    assert batch.name == "batchpump bp1:run:0:1"
    assert sorted(j.reference_id for j in batch.jobs) == [f"r{i}" for i in range(5)]
    assert {j.work_flow_id for j in batch.jobs} == {FLOW}
    stats = emu.emulator.stats
    assert stats.tags == {"batchpump bp1:run:0:1": 1}
    assert not stats.double_billed()
    assert telus.statistics().jobs.created == 5


async def test_existing_references_are_reconciled_not_created_again(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    early = shard(tmp_path, [item("r0"), item("r1")], tag="bp1:other:0:1")
    await telus.create(early, endpoint="", tag="bp1:other:0:1")
    s = shard(tmp_path, [item(f"r{i}") for i in range(4)])
    await telus.create(s, endpoint="", tag="bp1:run:0:1")
    jobs = telus.statistics().jobs
    assert (jobs.created, jobs.reconciled) == (4, 2)
    assert emu.emulator.stats.billing == {f"r{i}": 1 for i in range(4)}


async def test_answers_lost_after_create_come_back_as_fs_0001(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    s = shard(tmp_path, [item(f"r{i}") for i in range(40)])
    info = await telus.create(s, endpoint="", tag="bp1:run:0:1")
    emu.emulator.set_faults(reset_after_create_rate=0.5)
    more = shard(tmp_path, [item(f"r{i}") for i in range(40, 80)], tag="bp1:run:1:1")
    batch = state(emu).create_batch(PID, CreateBatchBody(name="batchpump bp1:run:1:1"))
    found = await telus.reconcile(more, since=0.0)
    assert found is not None
    assert found.id == batch.id
    assert found.id != info.id
    jobs = telus.statistics().jobs
    assert jobs.reconciled > 0, "no lost answer was retried"
    assert emu.emulator.stats.faults["reset_after_create"] >= jobs.reconciled
    billing = emu.emulator.stats.billing
    assert billing == {f"r{i}": 1 for i in range(80)}


async def test_error_codes_per_item(emu: RunningEmulator, telus: Telus, tmp_path: Path) -> None:
    store = state(emu)
    store.script_errors("flaky", "FS_0008", "api_error")
    store.script_errors("down", *["FS_0000"] * 4)
    lines = [item("ok"), item("flaky"), item("down"), item("bad", host="gone.invalid")]
    info = await telus.create(shard(tmp_path, lines), endpoint="", tag="bp1:run:0:1")
    assert (info.total, info.failed) == (2, 2)
    jobs = telus.statistics().jobs
    assert (jobs.created, jobs.rejected, jobs.retried) == (2, 1, 2 + 3)
    advance(emu, 500)
    results = await collect(telus, info.id)
    assert isinstance(results["ok"], Succeeded)
    assert isinstance(results["flaky"], Succeeded)
    down, bad = results["down"], results["bad"]
    assert isinstance(down, Errored)
    assert (down.code, down.retryable) == ("FS_0000", True)
    assert isinstance(bad, Errored)
    assert (bad.code, bad.retryable, bad.status_code) == ("FS_0007", False, 400)
    assert bad.batch_id == info.id


async def test_auth_codes_stop_the_create(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    state(emu).script_errors("r0", "core.webutil.token_auth")
    with pytest.raises(AuthenticationError) as caught:
        await telus.create(shard(tmp_path, [item("r0")]), endpoint="", tag="bp1:run:0:1")
    assert KEY not in str(caught.value)
    state(emu).configure(TelusSettings(post_rate=None, api_keys=("someone-else",)))
    with pytest.raises(AuthenticationError):
        await telus.create(shard(tmp_path, [item("r1")]), endpoint="", tag="bp1:run:1:1")


async def test_a_repeated_create_finds_its_batch_by_name(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    s = shard(tmp_path, [item(f"r{i}") for i in range(150)])
    first = await telus.create(s, endpoint="", tag="bp1:run:0:1")
    again = await telus.create(s, endpoint="", tag="bp1:run:0:1")
    assert again.id == first.id
    assert again.total == 150
    jobs = telus.statistics().jobs
    assert (jobs.created, jobs.skipped, jobs.reconciled) == (150, 150, 0)
    assert emu.emulator.stats.tags == {"batchpump bp1:run:0:1": 1}


async def test_reconcile_without_a_batch(telus: Telus, tmp_path: Path) -> None:
    s = shard(tmp_path, [item("r0")])
    assert await telus.reconcile(s, since=0.0) is None
    s.tag = None
    assert await telus.reconcile(s, since=0.0) is None


async def test_poll_from_project_details(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    older = await telus.create(shard(tmp_path, [item("a")]), endpoint="", tag="bp1:run:0:1")
    advance(emu, 1)
    newer = await telus.create(shard(tmp_path, [item("b")], "t2"), endpoint="", tag="bp1:run:1:1")
    async with aclosing(telus.list_batches()) as batches:
        listed = [b async for b in batches]
    assert [b.id for b in listed] == [newer.id, older.id]
    assert [b.tag for b in listed] == ["bp1:run:1:1", "bp1:run:0:1"]
    assert (await telus.retrieve(older.id)).state == "pending"
    advance(emu, 10)
    assert (await telus.retrieve(older.id)).state == "running"
    advance(emu, 200)
    done = await telus.retrieve(older.id)
    assert (done.state, done.raw_status, done.completed, done.total) == (
        "completed",
        "Complete",
        1,
        1,
    )
    with pytest.raises(NotFoundError):
        await telus.retrieve(str(uuid.uuid4()))


async def test_results_page_jobs_and_fetch_the_attachment_json(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    s = shard(tmp_path, [item(f"r{i:03d}") for i in range(230)])
    info = await telus.create(s, endpoint="", tag="bp1:run:0:1")
    assert await collect(telus, info.id) == {}, "unfinished jobs are not reported"
    advance(emu, 500)
    results = await collect(telus, info.id)
    assert sorted(results) == [f"r{i:03d}" for i in range(230)]
    first = results["r000"]
    assert isinstance(first, Succeeded)
    content = msgspec.json.decode(first.response)
    assert content["reference_id"] == "r000"
    assert content["data"] == {"image_url": "https://img.example/r000.png"}


async def test_rejected_jobs_are_errored(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    emu.emulator.set_faults(line_fatal_rate=1.0)
    info = await telus.create(shard(tmp_path, [item("r0")]), endpoint="", tag="bp1:run:0:1")
    advance(emu, 500)
    result = (await collect(telus, info.id))["r0"]
    assert isinstance(result, Errored)
    assert (result.code, result.retryable) == ("job_rejected", False)
    assert not emu.emulator.stats.billing, "a rejected job is no paid work"


async def test_create_reports_the_servers_created_at(
    emu: RunningEmulator, telus: Telus, tmp_path: Path
) -> None:
    advance(emu, 3_600)  # the emulator's clock and the adapter's differ by an hour at least
    info = await telus.create(shard(tmp_path, [item("r0")]), endpoint="", tag="bp1:run:0:1")
    again = await telus.retrieve(info.id)
    assert (again.id, again.created_at, again.tag) == (info.id, info.created_at, info.tag)
    async with aclosing(telus.list_batches()) as batches:
        assert [b.created_at async for b in batches] == [info.created_at]


async def test_cancel_says_the_api_has_none(telus: Telus) -> None:
    with pytest.raises(UsageError, match="no cancel"):
        await telus.cancel("b")
    assert not telus.failure_is_transient(
        BatchInfo(id="b", state="failed", raw_status="x", created_at=0.0)
    )


# -- through Pump -------------------------------------------------------------------------------


def pump_options(max_lines: int) -> RunOptions:
    return RunOptions(
        max_lines=max_lines,
        poll=PollPolicy(interval_min=0.01, interval_max=0.05),
        retry=RetryPolicy.no_wait(attempts=10),
    )


def scaled_telus(running: RunningEmulator) -> Telus:
    return Telus(
        api_key=KEY,
        project_id=PID,
        base_url=running.telus_base_url,
        work_flow_id=FLOW,
        limits=Limits(item_concurrency=16, download_concurrency=32, poll_concurrency=4),
        retry=RetryPolicy(attempts=10, wait_initial=0.001, wait_max=0.01),
        job_rate=20.0 * SCALE * RATE_MARGIN,
    )


@pytest.fixture
async def scaled() -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(validate_seconds=1, run_seconds=2, seed=9)
    async with open_emulator(
        config=config, clock=ScaledClock(SCALE), providers=("telus",)
    ) as running:
        yield running


async def test_ten_thousand_items_through_pump_each_back_once(
    scaled: RunningEmulator, tmp_path: Path
) -> None:
    source = tmp_path / "items.jsonl"
    ids = write_items(source, [item(f"i{n:05d}") for n in range(10_000)])
    async with Pump(scaled_telus(scaled), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(source, options=pump_options(1_000))
        counts = await run.wait()
    assert counts.succeeded == 10_000
    assert_exactly_once(read_results(run.results_path), ids)
    stats = scaled.emulator.stats
    assert not stats.double_billed()
    assert len(stats.billing) == 10_000
    assert not stats.duplicate_tags()
    assert stats.batches_created == 10
    posts = stats.route_count("telus.jobs.create")
    assert stats.status_count("telus.jobs.create", 429) <= 0.01 * posts


class Crash(BaseException):
    """The process dies (kill -9 stand-in): nothing below it gets to clean up."""


async def test_killed_during_job_creation_resumes_without_creating_a_job_twice(
    scaled: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "items.jsonl"
    ids = write_items(source, [item(f"k{n:04d}") for n in range(600)])
    options = pump_options(200)
    first = scaled_telus(scaled)
    real = first._http.request
    posts = 0

    async def crashing(method: str, path: str, **kwargs: Any) -> Response:
        nonlocal posts
        if method == "POST" and path.endswith("/jobs"):
            posts += 1
            if posts == 251:
                raise Crash
            if posts > 251:  # the process is dead: nothing more leaves it
                await anyio.sleep_forever()
        return await real(method, path, **kwargs)

    monkeypatch.setattr(first._http, "request", crashing)
    run_ids: list[str] = []

    async def doomed() -> None:
        async with Pump(first, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(source, options=options)
            run_ids.append(run.id)
            await run.wait()

    with pytest.raises(Crash):
        await doomed()
    before = dict(scaled.emulator.stats.billing)
    assert 0 < len(before) <= 250

    second = scaled_telus(scaled)
    async with Pump(second, state_dir=tmp_path / "state") as pump:
        resumed = await pump.submit(source, options=options)
        assert [resumed.id] == run_ids
        counts = await resumed.wait()
    assert counts.succeeded == 600
    assert_exactly_once(read_results(resumed.results_path), ids)
    stats = scaled.emulator.stats
    assert stats.billing == dict.fromkeys(ids, 1), "a job was created twice"
    assert not stats.duplicate_tags()
    assert stats.batches_created == 3
    jobs = second.statistics().jobs
    assert (jobs.skipped, jobs.created) == (len(before), 600 - len(before)), "not resumed in place"


async def test_native_item_lines_through_pump(scaled: RunningEmulator, tmp_path: Path) -> None:
    source = tmp_path / "items.jsonl"
    ids = write_items(source, [item(f"n{n}") for n in range(50)])
    async with Pump(scaled_telus(scaled), state_dir=tmp_path / "state") as pump:
        run = await pump.submit(source, options=pump_options(1_000))
        await run.wait()
    assert_exactly_once(read_results(run.results_path), ids)
