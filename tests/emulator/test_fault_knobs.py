"""The fault knobs clients reconcile against: late creates, lagging lists, a skewed server
clock, 429s that advertise nothing, malformed output lines, counters that lag, and progress
that grows while batches run.

Time is a ``ManualClock`` moved by ``advance``; loopback only; every server and session is
closed by its ``async with``.
"""

from __future__ import annotations

import argparse
import email.utils
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import (
    EmulatorConfig,
    Faults,
    RateLimit,
    RunningEmulator,
    add_arguments,
    open_emulator,
)
from batchpump.emulator._command import config_from_args

pytestmark = pytest.mark.timeout(30)

OPENAI = {"Authorization": "Bearer sk-test-not-a-real-key"}
ANTHROPIC = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
TELUS_PID = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
TELUS_FLOW = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
ANTH_PARAMS = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10, cancel_seconds=5)
ALL = ("openai", "azure", "together", "anthropic", "telus", "llamacloud")


class Env(msgspec.Struct):
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    def faults(self, **changes: Any) -> None:
        self.running.emulator.set_faults(**changes)

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        async with self.http.request(
            method, self.running.url + path, headers=headers or OPENAI, **kw
        ) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if resp.content_type == "application/json" else raw
            return resp.status, body, resp.headers

    async def upload(self, data: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", io.BytesIO(data), filename="in.jsonl")
        status, body, _ = await self.call("POST", "/v1/files", data=form)
        assert status == 200, body
        return str(body["id"])

    async def create(self, n: int = 4, **extra: Any) -> tuple[int, Any, Any]:
        payload = {
            "input_file_id": await self.upload(jsonl(n)),
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **extra,
        }
        return await self.call("POST", "/v1/batches", json=payload)


def jsonl(n: int) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    lines = [
        msgspec.json.encode(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        for i in range(n)
    ]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    async with (
        open_emulator(config=CFG, clock=clock, providers=ALL) as running,
        aiohttp.ClientSession() as http,
    ):
        yield Env(running, clock, http)


async def until(condition: Callable[[], bool]) -> None:
    """Let the server run until ``condition()`` holds (bounded: fails after 5 s).

    The condition is on the emulator's counters, which have no event to wait on.
    """
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - polls a counter, waits on no timing
            await anyio.sleep(0.005)


# -- late create ------------------------------------------------------------------------------


async def test_late_create_answers_after_the_batch_is_made(env: Env) -> None:
    env.faults(late_create_rate=1.0, late_create_seconds=30)
    start = env.clock.time()
    emu = env.running.emulator
    answer: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def create() -> None:
            answer.append(await env.create())

        tg.start_soon(create)
        await until(lambda: emu.raw_stats.faults["late_create"] == 1)
        assert emu.raw_stats.batches_created == 0  # taken, not made yet
        env.clock.advance(30)
    [(status, batch, _)] = answer
    assert status == 200
    assert batch["created_at"] == int(start + 30)
    assert emu.stats.batches_created == 1


async def test_late_create_after_the_client_gave_up_still_makes_the_batch(env: Env) -> None:
    env.faults(late_create_rate=1.0, late_create_seconds=30)
    emu = env.running.emulator
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.create)
            await until(lambda: emu.raw_stats.faults["late_create"] == 1)
            scope.cancel()  # the client times out and closes its connection
    assert scope.cancelled_caught
    env.faults(late_create_rate=0.0)
    status, page, _ = await env.call("GET", "/v1/batches")
    assert (status, page["data"]) == (200, [])
    env.clock.advance(30)
    await until(lambda: emu.raw_stats.batches_created == 1)
    _, page, _ = await env.call("GET", "/v1/batches")
    assert len(page["data"]) == 1  # the batch the client never heard of


# -- lagging list -----------------------------------------------------------------------------


async def test_list_lags_behind_creates_but_retrieve_finds_the_batch(env: Env) -> None:
    env.faults(list_lag_seconds=60)
    _, batch, _ = await env.create(metadata={"batchpump_shard": "t1"})
    _, page, _ = await env.call("GET", "/v1/batches")
    assert page["data"] == []
    status, got, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
    assert (status, got["id"]) == (200, batch["id"])
    # Anthropic and TELUS lists lag the same way.
    anth = {"requests": [{"custom_id": "a", "params": ANTH_PARAMS}]}
    status, created, _ = await env.call(
        "POST", "/v1/messages/batches", json=anth, headers=ANTHROPIC
    )
    assert status == 200, created
    _, listed, _ = await env.call("GET", "/v1/messages/batches", headers=ANTHROPIC)
    assert listed["data"] == []
    telus = f"/telus/v1/projects/{TELUS_PID}"
    th = {"x-api-key": "telus-test-key"}
    _, tb, _ = await env.call("POST", f"{telus}/batch", json={"name": "lag"}, headers=th)
    _, details, _ = await env.call("GET", f"{telus}/details", headers=th)
    assert tb["data"]["batch_id"] not in [b["id"] for b in details["data"]["batches"]]
    env.clock.advance(60)
    _, page, _ = await env.call("GET", "/v1/batches")
    assert [b["id"] for b in page["data"]] == [batch["id"]]
    _, listed, _ = await env.call("GET", "/v1/messages/batches", headers=ANTHROPIC)
    assert [b["id"] for b in listed["data"]] == [created["id"]]
    _, details, _ = await env.call("GET", f"{telus}/details", headers=th)
    assert tb["data"]["batch_id"] in [b["id"] for b in details["data"]["batches"]]


# -- server clock offset ----------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-3600.0, 7200.0])
async def test_server_clock_offset_shifts_timestamps_and_date(env: Env, offset: float) -> None:
    env.faults(clock_offset_seconds=offset)
    status, batch, headers = await env.create()
    assert status == 200
    assert batch["created_at"] == int(env.clock.time() + offset)
    date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert abs(date - (env.clock.time() + offset)) < 1.0
    # Progression is unchanged: validating for 10 s, whatever the server's clock says.
    env.clock.advance(10)
    _, got, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
    assert got["status"] == "in_progress"
    assert got["in_progress_at"] == batch["created_at"] + 10


# -- 429s that advertise nothing --------------------------------------------------------------


async def test_rate_limit_without_x_ratelimit_headers(env: Env) -> None:
    env.faults(rate_limits={"poll": RateLimit(requests=1)}, advertise_rate_limits=False)
    status, _, ok = await env.call("GET", "/v1/batches")
    assert status == 200
    assert not [h for h in ok if h.lower().startswith("x-ratelimit")]
    status, body, limited = await env.call("GET", "/v1/batches")
    assert status == 429, body
    assert not [h for h in limited if h.lower().startswith("x-ratelimit")]
    assert int(limited["retry-after-ms"]) > 0
    assert int(limited["retry-after"]) >= 1


async def test_rate_limit_without_retry_after(env: Env) -> None:
    env.faults(rate_limits={"poll": RateLimit(requests=1)}, send_retry_after=False)
    await env.call("GET", "/v1/batches")
    status, _, limited = await env.call("GET", "/v1/batches")
    assert status == 429
    assert "retry-after" not in limited
    assert "retry-after-ms" not in limited
    assert limited["x-ratelimit-remaining-requests"] == "0"


async def test_storm_that_says_nothing_at_all(env: Env) -> None:
    env.faults(storm_429_rate=1.0, advertise_rate_limits=False, send_retry_after=False)
    status, body, headers = await env.call("GET", "/v1/batches")
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert not [h for h in headers if h.lower().startswith(("x-ratelimit", "retry-after"))]


# -- malformed output lines -------------------------------------------------------------------


async def test_malformed_output_lines(env: Env) -> None:
    env.faults(malformed_output_rate=0.5)
    _, batch, _ = await env.create(n=40)
    env.clock.advance(200)
    _, done, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
    assert done["status"] == "completed"
    _, raw, _ = await env.call("GET", f"/v1/files/{done['output_file_id']}/content")
    lines = raw.splitlines()
    assert len(lines) == 40
    good, bad = 0, 0
    for line in lines:
        try:
            assert msgspec.json.decode(line)["custom_id"].startswith("r")
            good += 1
        except msgspec.DecodeError:
            bad += 1
    assert good > 0
    assert bad > 0
    _, again, _ = await env.call("GET", f"/v1/files/{done['output_file_id']}/content")
    assert again == raw  # the damage is part of the file


async def test_malformed_anthropic_results_are_stable(env: Env) -> None:
    env.faults(malformed_output_rate=0.5)
    reqs = [{"custom_id": f"a{i}", "params": ANTH_PARAMS} for i in range(30)]
    _, batch, _ = await env.call(
        "POST", "/v1/messages/batches", json={"requests": reqs}, headers=ANTHROPIC
    )
    env.clock.advance(200)
    path = f"/v1/messages/batches/{batch['id']}/results"
    _, first, _ = await env.call("GET", path, headers=ANTHROPIC)
    _, second, _ = await env.call("GET", path, headers=ANTHROPIC)
    assert first == second
    decoded = 0
    for line in first.splitlines():
        try:
            msgspec.json.decode(line)
            decoded += 1
        except msgspec.DecodeError:
            pass
    assert 0 < decoded < 30


# -- progress while running -------------------------------------------------------------------


async def test_openai_and_azure_request_counts_grow_while_running(env: Env) -> None:
    _, batch, _ = await env.create(n=10)
    seen = []
    for _ in range(6):
        env.clock.advance(20)
        _, got, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
        seen.append(got["request_counts"]["completed"])
    assert seen == sorted(seen)
    assert 0 < seen[1] < 10
    assert seen[-1] == 10
    azure = {"api-key": "azure-test-key"}
    params = {"api-version": "2024-10-21"}
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", io.BytesIO(jsonl(10)), filename="in.jsonl")
    status, file, _ = await env.call(
        "POST", "/openai/files", data=form, headers=azure, params=params
    )
    assert status == 200, file
    payload = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    _, ab, _ = await env.call("POST", "/openai/batches", json=payload, headers=azure, params=params)
    env.clock.advance(60)
    _, got, _ = await env.call("GET", f"/openai/batches/{ab['id']}", headers=azure, params=params)
    assert 0 < got["request_counts"]["completed"] < 10


async def test_together_progress_grows_while_running(env: Env) -> None:
    th = {"Authorization": "Bearer together-test"}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    data = b"".join(
        msgspec.json.encode({"custom_id": f"r{i}", "body": body}) + b"\n" for i in range(10)
    )
    form = aiohttp.FormData()
    form.add_field("purpose", "batch-api")
    form.add_field("file_name", "in.jsonl")
    form.add_field("file", io.BytesIO(data), filename="in.jsonl")
    status, file, _ = await env.call("POST", "/together/v1/files/upload", data=form, headers=th)
    assert status == 200, file
    payload = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
    _, created, _ = await env.call("POST", "/together/v1/batches", json=payload, headers=th)
    job_id = created["job"]["id"]
    seen = []
    for _ in range(6):
        env.clock.advance(20)
        _, got, _ = await env.call("GET", f"/together/v1/batches/{job_id}", headers=th)
        seen.append(got["progress"])
    assert seen == sorted(seen)
    assert 0 < seen[1] < 100
    assert seen[-1] == 100


async def test_anthropic_counts_stay_processing_until_the_batch_ends(env: Env) -> None:
    """Anthropic documents ``succeeded``/``errored`` as zero until the whole batch ended."""
    reqs = [{"custom_id": f"a{i}", "params": ANTH_PARAMS} for i in range(5)]
    _, batch, _ = await env.call(
        "POST", "/v1/messages/batches", json={"requests": reqs}, headers=ANTHROPIC
    )
    env.clock.advance(50)
    path = f"/v1/messages/batches/{batch['id']}"
    _, mid, _ = await env.call("GET", path, headers=ANTHROPIC)
    assert mid["request_counts"]["processing"] == 5
    env.clock.advance(500)
    _, end, _ = await env.call("GET", path, headers=ANTHROPIC)
    assert end["request_counts"]["succeeded"] == 5


async def _telus_batch(env: Env, jobs: int) -> tuple[str, Callable[[], Any]]:
    telus = f"/telus/v1/projects/{TELUS_PID}"
    th = {"x-api-key": "telus-test-key"}
    _, tb, _ = await env.call("POST", f"{telus}/batch", json={"name": "progress"}, headers=th)
    batch_id = tb["data"]["batch_id"]
    for i in range(jobs):
        job = {
            "reference_id": f"j{i}",
            "work_flow_id": TELUS_FLOW,
            "batch_id": batch_id,
            "data": {"image_url": f"https://img.example/{i}.png"},
        }
        status, body, _ = await env.call("POST", f"{telus}/jobs", json=job, headers=th)
        assert status == 200, body

    async def mine() -> Any:
        _, details, _ = await env.call("GET", f"{telus}/details", headers=th)
        [batch] = [b for b in details["data"]["batches"] if b["id"] == batch_id]
        return batch

    return batch_id, mine


async def test_telus_completed_jobs_grow_while_running(env: Env) -> None:
    _, mine = await _telus_batch(env, 10)
    seen = []
    for _ in range(8):
        env.clock.advance(20)
        seen.append((await mine())["completed_jobs"])
    assert seen == sorted(seen)
    assert any(0 < n < 10 for n in seen)
    assert seen[-1] == 10


async def test_telus_counter_lag(env: Env) -> None:
    env.faults(counter_lag_seconds=5)
    _, mine = await _telus_batch(env, 3)
    first = await mine()
    assert (first["total_jobs"], first["completed_jobs"]) == (0, 0)
    env.clock.advance(5)
    assert (await mine())["total_jobs"] == 3


async def test_llamacloud_jobs_complete_one_by_one(env: Env) -> None:
    lh = {"Authorization": "Bearer llx-test"}
    dirs = "/api/v1/beta/directories"
    status, directory, _ = await env.call("POST", dirs, json={"name": "d"}, headers=lh)
    assert status == 201, directory
    for i in range(6):
        form = aiohttp.FormData()
        form.add_field("upload_file", b"hello", filename=f"u{i}.txt")
        form.add_field("unique_id", f"u{i}")
        status, body, _ = await env.call(
            "POST", f"{dirs}/{directory['id']}/files/upload", data=form, headers=lh
        )
        assert status == 201, body
    config = {"job": {"type": "parse_v2", "configuration_id": "cfg-PARSE_AGENTIC"}}
    payload = {"source_directory_id": directory["id"], "config": config}
    status, batch, _ = await env.call("POST", "/api/v2/batches", json=payload, headers=lh)
    assert status == 201, batch
    done_counts = []
    for _ in range(30):
        env.clock.advance(5)
        _, got, _ = await env.call(
            "GET", f"/api/v2/batches/{batch['id']}", params={"expand": "results"}, headers=lh
        )
        refs = [r["job_reference"] for r in got["results"] or [] if r["job_reference"]]
        done = 0
        for ref in refs:
            _, job, _ = await env.call("GET", f"/api/v2/parse/{ref['id']}", headers=lh)
            done += job["job"]["status"] == "COMPLETED"
        done_counts.append(done)
    assert done_counts == sorted(done_counts)
    assert any(0 < n < 6 for n in done_counts)
    assert done_counts[-1] == 6


# -- configuration ----------------------------------------------------------------------------


def test_knobs_load_from_the_command_line_and_json() -> None:
    knobs = (
        '{"late_create_rate": 1.0, "late_create_seconds": 90, "list_lag_seconds": 30,'
        ' "clock_offset_seconds": -600, "advertise_rate_limits": false,'
        ' "send_retry_after": false, "malformed_output_rate": 0.1, "counter_lag_seconds": 4}'
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--faults", knobs]))
    assert config.faults == Faults(
        late_create_rate=1.0,
        late_create_seconds=90,
        list_lag_seconds=30,
        clock_offset_seconds=-600,
        advertise_rate_limits=False,
        send_retry_after=False,
        malformed_output_rate=0.1,
        counter_lag_seconds=4,
    )
    assert msgspec.json.decode(msgspec.json.encode(config), type=EmulatorConfig) == config


async def test_journal_names_the_telus_line_of_each_job(env: Env) -> None:
    await _telus_batch(env, 2)
    jobs = [r for r in env.running.emulator.requests.entries() if r.route == "telus.jobs.create"]
    assert [r.tag for r in jobs] == ["j0", "j1"]
    [batch] = [
        r for r in env.running.emulator.requests.entries() if r.route == "telus.batch.create"
    ]
    assert batch.tag is not None
